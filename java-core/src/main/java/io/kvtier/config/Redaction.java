package io.kvtier.config;

import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Hides secrets in what kvtier shows: log lines, exception messages, {@code toString()} and {@link
 * KvTierConfig#describe()}. Every component that shows a URL, a configuration value or a message
 * that may quote one goes through here, so the rules live in one place:
 *
 * <ul>
 *   <li>The password in a URL's userinfo becomes {@link #MASK}; the user name stays: {@code
 *       redis://user:hunter2@host:6399} shows as {@code redis://user:***@host:6399}. A userinfo
 *       without a colon is a password alone (Redis URLs: {@code redis://hunter2@host}) and is
 *       masked whole. Any scheme: {@code redis}, {@code rediss}, {@code redis-sentinel}, {@code
 *       redis-cluster}, {@code rediss-cluster}, {@code kvtier}, ... The userinfo runs to the last
 *       {@code @} before white space, so a password holding {@code @} or {@code /} is masked whole
 *       too (over-masking is the safe side).
 *   <li>A value whose key names a secret ({@link #isSecretName}: password, passwd, secret, token,
 *       credential, auth, private key, key store or trust store password...) becomes {@link #MASK},
 *       both as a configuration value and in {@code name=value} or {@code name: value} text.
 *   <li>The passwords of URLs given as known secrets are also masked wherever they appear as is (or
 *       percent-decoded) in a message, when at least {@link #MIN_LITERAL_SECRET} characters long (a
 *       shorter one would mask unrelated characters; in URL form it is masked anyway).
 * </ul>
 *
 * <p>Stateless and thread-safe.
 */
public final class Redaction {
  /** What a secret is replaced with. */
  public static final String MASK = "***";

  /** Shortest known secret masked wherever it appears in a message, in characters. */
  static final int MIN_LITERAL_SECRET = 4;

  /** {@code scheme://userinfo@}: the userinfo runs to the last {@code @} of the token. */
  private static final Pattern URL_USERINFO =
      Pattern.compile("([A-Za-z][A-Za-z0-9+.\\-]*://)(\\S*)@");

  /**
   * A name that ends in a word for a secret: {@code password}, {@code keyStorePassword}, {@code
   * auth_token}, {@code client_secret}, {@code tls_private_key}... ({@code tokens} or {@code
   * password_file} do not: counts and paths are not secrets).
   */
  private static final String SECRET_WORD =
      "[A-Za-z0-9_.\\-]*(?:password|passwd|passphrase|pwd|secret|token|credentials?|auth"
          + "|private[_.\\-]?key|api[_.\\-]?key|access[_.\\-]?key|(?:tls|ssl)[_.\\-]?key)";

  private static final Pattern SECRET_NAME = Pattern.compile("(?i)" + SECRET_WORD);

  /**
   * {@code name=value} or {@code name: value} in free text (quoted names too, as in JSON or a
   * Python dict), with a secret name.
   */
  private static final Pattern SECRET_PAIR =
      Pattern.compile(
          "(?i)(?<![A-Za-z0-9_.\\-])("
              + SECRET_WORD
              + ")([\"']?\\s*[:=]\\s*)(\"[^\"]*\"|'[^']*'|[^\\s,;}\\]]+)");

  private Redaction() {}

  /**
   * Returns {@code url} with the password of its userinfo masked; a string without credentials, or
   * null, is returned as is.
   */
  public static String url(String url) {
    return url == null ? null : maskUserinfo(url);
  }

  /**
   * Returns {@code text} with every secret in it masked: URL passwords, values of secret-looking
   * {@code name=value} pairs, and the passwords of {@code knownSecretUrls} wherever they appear.
   * Null stays null.
   */
  public static String text(String text, String... knownSecretUrls) {
    if (text == null) {
      return null;
    }
    String out = text;
    for (String secret : literalSecrets(knownSecretUrls)) {
      out = out.replace(secret, MASK);
    }
    out = maskUserinfo(out);
    Matcher m = SECRET_PAIR.matcher(out);
    StringBuilder sb = new StringBuilder();
    while (m.find()) {
      String replacement = m.group(3).equals(MASK) ? m.group() : m.group(1) + m.group(2) + MASK;
      m.appendReplacement(sb, Matcher.quoteReplacement(replacement));
    }
    m.appendTail(sb);
    return sb.toString();
  }

  /** Whether a key named {@code name} holds a secret (password, token, key material...). */
  public static boolean isSecretName(String name) {
    return name != null && SECRET_NAME.matcher(name).matches();
  }

  /**
   * The value of configuration key {@code key} as it may be shown: {@link #MASK} for a secret name,
   * otherwise the value's text with any secret in it masked (a mapping's entries with secret names
   * are masked one by one).
   */
  public static String value(String key, Object raw) {
    if (raw == null) {
      return "null";
    }
    if (isSecretName(key)) {
      return MASK;
    }
    if (raw instanceof Map<?, ?> map) {
      StringBuilder sb = new StringBuilder("{");
      for (Map.Entry<?, ?> e : map.entrySet()) {
        if (sb.length() > 1) {
          sb.append(", ");
        }
        String name = String.valueOf(e.getKey());
        sb.append(name).append('=').append(value(name, e.getValue()));
      }
      return sb.append('}').toString();
    }
    return text(String.valueOf(raw));
  }

  /**
   * Returns {@code error} ready to log: itself when no message in it, its causes or its suppressed
   * exceptions holds a secret; otherwise a copy whose messages are masked ({@link #text}), with the
   * same class names (in {@code toString()}) and stack traces.
   */
  public static Throwable throwable(Throwable error, String... knownSecretUrls) {
    if (error == null || !holdsSecret(error, knownSecretUrls, new IdentityHashMap<>())) {
      return error;
    }
    return copy(error, knownSecretUrls, new IdentityHashMap<>());
  }

  private static boolean holdsSecret(Throwable t, String[] urls, Map<Throwable, Boolean> seen) {
    if (t == null || seen.put(t, Boolean.TRUE) != null) {
      return false;
    }
    String m = t.getMessage();
    if (m != null && !m.equals(text(m, urls))) {
      return true;
    }
    for (Throwable s : t.getSuppressed()) {
      if (holdsSecret(s, urls, seen)) {
        return true;
      }
    }
    return holdsSecret(t.getCause(), urls, seen);
  }

  private static Throwable copy(Throwable t, String[] urls, Map<Throwable, Throwable> seen) {
    if (t == null) {
      return null;
    }
    Throwable done = seen.get(t);
    if (done != null) {
      return done;
    }
    Redacted r = new Redacted(t.getClass().getName(), text(t.getMessage(), urls));
    seen.put(t, r);
    r.setStackTrace(t.getStackTrace());
    Throwable cause = copy(t.getCause(), urls, seen);
    if (cause != null) {
      r.initCause(cause);
    }
    for (Throwable s : t.getSuppressed()) {
      r.addSuppressed(copy(s, urls, seen));
    }
    return r;
  }

  /** A throwable standing in for one whose message held a secret; prints the original class. */
  private static final class Redacted extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final String className;

    Redacted(String className, String message) {
      super(message);
      this.className = className;
    }

    @Override
    public String toString() {
      String m = getMessage();
      return m == null ? className : className + ": " + m;
    }
  }

  private static String maskUserinfo(String s) {
    if (s.indexOf("://") < 0 || s.indexOf('@') < 0) {
      return s;
    }
    Matcher m = URL_USERINFO.matcher(s);
    StringBuilder sb = new StringBuilder();
    while (m.find()) {
      String userinfo = m.group(2);
      int colon = userinfo.indexOf(':');
      String shown = colon < 0 ? MASK : userinfo.substring(0, colon + 1) + MASK;
      m.appendReplacement(sb, Matcher.quoteReplacement(m.group(1) + shown + "@"));
    }
    m.appendTail(sb);
    return sb.toString();
  }

  /** Passwords of {@code urls} (raw and percent-decoded) long enough to mask as literals. */
  private static List<String> literalSecrets(String[] urls) {
    List<String> out = new ArrayList<>();
    if (urls == null) {
      return out;
    }
    for (String url : urls) {
      if (url == null) {
        continue;
      }
      Matcher m = URL_USERINFO.matcher(url);
      if (!m.find()) {
        continue;
      }
      String userinfo = m.group(2);
      String password = userinfo.substring(userinfo.indexOf(':') + 1);
      addLiteral(out, password);
      try {
        addLiteral(out, URLDecoder.decode(password, StandardCharsets.UTF_8));
      } catch (IllegalArgumentException e) {
        // not valid percent-encoding: the raw form is masked already
      }
    }
    out.sort((a, b) -> b.length() - a.length()); // longest first, so none is masked in part
    return out;
  }

  private static void addLiteral(List<String> out, String secret) {
    if (secret.length() >= MIN_LITERAL_SECRET && !secret.equals(MASK) && !out.contains(secret)) {
      out.add(secret);
    }
  }
}
