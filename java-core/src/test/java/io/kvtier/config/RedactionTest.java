package io.kvtier.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class RedactionTest {
  @ParameterizedTest
  @CsvSource(
      delimiter = '|',
      value = {
        "redis://user:hunter2@127.0.0.1:6399 | redis://user:***@127.0.0.1:6399",
        "redis://:hunter2@127.0.0.1:6399/2 | redis://:***@127.0.0.1:6399/2",
        "redis://hunter2@127.0.0.1:6399 | redis://***@127.0.0.1:6399",
        "rediss://user:hunter2@cache:6380 | rediss://user:***@cache:6380",
        "redis-sentinel://:hunter2@s1:26379,s2:26379/0#mymaster"
            + " | redis-sentinel://:***@s1:26379,s2:26379/0#mymaster",
        "rediss-sentinel://u:hunter2@s1:26379#m | rediss-sentinel://u:***@s1:26379#m",
        "redis-cluster://:hunter2@n1:7000,n2:7001 | redis-cluster://:***@n1:7000,n2:7001",
        "rediss-cluster://u:hunter2@n1:7000 | rediss-cluster://u:***@n1:7000",
        "kvtier://:hunter2@cache-host:7070 | kvtier://:***@cache-host:7070",
        "redis://user:hun@ter/2@host:6379 | redis://user:***@host:6379",
        "redis://127.0.0.1:6379 | redis://127.0.0.1:6379",
      })
  void url_withCredentials_masksThePasswordAndKeepsTheRest(String url, String shown) {
    assertEquals(shown, Redaction.url(url));
  }

  @Test
  void url_null_isNull() {
    assertNull(Redaction.url(null));
  }

  @Test
  void text_masksEveryUrlPairAndKnownSecret() {
    String url = "redis://user:hunter2@127.0.0.1:6399";
    String msg =
        "Expected closing bracket at index 25: redis://user:hunter2@[bad; retry"
            + " kvtier://:s3cret@h:1 and redis://a:b@c, password=hunter2 \"token\": \"abc\""
            + " -Djavax.net.ssl.keyStorePassword=changeit AUTH hunter2";
    String out = Redaction.text(msg, url);
    for (String secret : new String[] {"hunter2", "s3cret", ":b@", "abc", "changeit"}) {
      assertFalse(out.contains(secret), secret + " shown in: " + out);
    }
    assertTrue(out.contains("redis://user:***@[bad"), out);
    assertTrue(out.contains("kvtier://:***@h:1"), out);
    assertTrue(out.contains("password=***"), out);
    assertTrue(out.contains("keyStorePassword=***"), out);
  }

  @Test
  void text_withoutSecrets_isUnchanged() {
    String msg = "tokens: 256, tokenCount=12, password_file=/etc/kv.pw, see http://host/x a@b";
    assertEquals(msg, Redaction.text(msg));
  }

  @Test
  void text_shortKnownSecret_isMaskedOnlyInUrlForm() {
    assertEquals(
        "redis://:***@h:1 abc", Redaction.text("redis://:abc@h:1 abc", "redis://:abc@h:1"));
  }

  @Test
  void isSecretName_matchesNamesEndingInASecretWord() {
    for (String name :
        new String[] {
          "password",
          "redis_password",
          "keyStorePassword",
          "auth_token",
          "client_secret",
          "tls_private_key",
          "ssl_key",
          "api-key",
          "remote_auth"
        }) {
      assertTrue(Redaction.isSecretName(name), name);
    }
    for (String name :
        new String[] {"remote_url", "chunk_size", "tokens", "password_file", "use_odirect"}) {
      assertFalse(Redaction.isSecretName(name), name);
    }
  }

  @Test
  void value_masksSecretNamesAndMappingEntries() {
    Map<String, Object> extra = new LinkedHashMap<>();
    extra.put("use_odirect", true);
    extra.put("remote_auth_token", "t0ken-value");
    extra.put("backup_url", "redis://:hunter2@h:1");
    assertEquals(
        "{use_odirect=true, remote_auth_token=***, backup_url=redis://:***@h:1}",
        Redaction.value("extra_config", extra));
    assertEquals("***", Redaction.value("remote_password", "hunter2"));
    assertEquals("redis://u:***@h:1", Redaction.value("remote_url", "redis://u:hunter2@h:1"));
    assertEquals("256", Redaction.value("chunk_size", 256));
  }

  @Test
  void throwable_withSecretInAMessage_isACopyWithMaskedMessagesSameClassesAndStacks() {
    IllegalStateException cause = new IllegalStateException("cannot parse redis://u:hunter2@[x");
    RuntimeException top = new RuntimeException("connect failed", cause);
    top.addSuppressed(new IllegalArgumentException("password: hunter2"));

    Throwable shown = Redaction.throwable(top);
    StringWriter w = new StringWriter();
    shown.printStackTrace(new PrintWriter(w));
    String printed = w.toString();
    assertFalse(printed.contains("hunter2"), printed);
    assertTrue(printed.startsWith("java.lang.RuntimeException: connect failed"), printed);
    assertTrue(
        printed.contains("Caused by: java.lang.IllegalStateException: cannot parse redis://u:***@"),
        printed);
    assertTrue(printed.contains("Suppressed: java.lang.IllegalArgumentException"), printed);
    assertEquals(top.getStackTrace()[0], shown.getStackTrace()[0]);
  }

  @Test
  void throwable_withoutSecrets_isReturnedAsIs() {
    RuntimeException e = new RuntimeException("Connection refused: /127.0.0.1:6399");
    assertSame(e, Redaction.throwable(e));
    assertNull(Redaction.throwable(null));
  }
}
