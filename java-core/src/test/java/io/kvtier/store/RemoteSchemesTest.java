package io.kvtier.store;

import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.config.KvTierConfig;
import java.util.List;
import java.util.ServiceLoader;
import org.junit.jupiter.api.Test;

/** The schemes {@code remote_url} accepts when the configuration loads and the tiers that open. */
class RemoteSchemesTest {
  @Test
  void everySchemeTheConfigurationAccepts_isOpenedByARemoteTier() {
    List<RemoteTierProvider> remotes =
        ServiceLoader.load(TierProvider.class).stream()
            .map(ServiceLoader.Provider::get)
            .filter(RemoteTierProvider.class::isInstance)
            .map(RemoteTierProvider.class::cast)
            .toList();
    String[] schemes = KvTierConfig.REMOTE_URL.allowedValues().split(", ");
    assertTrue(schemes.length >= 8, String.join(" ", schemes));
    for (String scheme : schemes) {
      assertTrue(
          remotes.stream().anyMatch(r -> r.accepts(scheme + "host:1")),
          scheme + " passes the configuration check but no remote tier opens it");
    }
  }
}
