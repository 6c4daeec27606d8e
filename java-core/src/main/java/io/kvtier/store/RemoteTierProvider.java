package io.kvtier.store;

import io.kvtier.config.KvTierConfig;

/**
 * A {@link TierProvider} for a remote tier chosen by the scheme of {@code remote_url}: it opens its
 * tier when the URL starts with its prefix, after the local tiers.
 */
public abstract class RemoteTierProvider implements TierProvider {
  /** Remote tiers come after local ones. */
  private static final int ORDER = 200;

  private final String[] urlPrefixes;

  /**
   * @param urlPrefixes what {@code remote_url} starts with for this tier ({@code "kvtier://"})
   */
  protected RemoteTierProvider(String... urlPrefixes) {
    this.urlPrefixes = urlPrefixes.clone();
  }

  @Override
  public final int order() {
    return ORDER;
  }

  @Override
  public final KvStore open(KvTierConfig config, TierContext context) {
    String url = config.remoteUrl();
    return url == null || !accepts(url) ? null : open(url, config, context);
  }

  /** Opens the tier for {@code url}, which starts with one of this provider's prefixes. */
  protected abstract KvStore open(String url, KvTierConfig config, TierContext context);

  /** Whether {@code url} is this provider's. */
  public boolean accepts(String url) {
    for (String prefix : urlPrefixes) {
      if (url.startsWith(prefix)) {
        return true;
      }
    }
    return false;
  }

  /**
   * Connects to the store at {@code url} as the tier would (address, TLS, credentials), then makes
   * {@code rounds} round trips, each at most {@code timeoutMillis}, and disconnects.
   *
   * @return each round trip's time in nanoseconds
   * @throws PingException saying what failed: the address, the credentials, a timeout, a reply that
   *     is not the store's (never with the password)
   */
  public abstract long[] ping(String url, long timeoutMillis, int rounds) throws PingException;

  /** A ping that failed, and why, in words an operator can act on (no secret in them). */
  public static final class PingException extends Exception {
    private static final long serialVersionUID = 1L;

    public PingException(String message) {
      super(message);
    }
  }

  /** The remote tier providers on the class path. */
  public static java.util.List<RemoteTierProvider> all() {
    java.util.List<RemoteTierProvider> out = new java.util.ArrayList<>();
    java.util.ServiceLoader.load(TierProvider.class, TierProvider.class.getClassLoader())
        .forEach(
            p -> {
              if (p instanceof RemoteTierProvider r) {
                out.add(r);
              }
            });
    return out;
  }
}
