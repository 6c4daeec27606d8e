package io.kvtier.store;

import io.kvtier.config.KvTierConfig;

/**
 * A {@link TierProvider} for a remote tier chosen by the scheme of {@code remote_url}: it opens its
 * tier when the URL starts with its prefix, after the local tiers.
 */
public abstract class RemoteTierProvider implements TierProvider {
  /** Remote tiers come after local ones. */
  private static final int ORDER = 200;

  private final String urlPrefix;

  /**
   * @param urlPrefix what {@code remote_url} starts with for this tier ({@code "kvtier://"})
   */
  protected RemoteTierProvider(String urlPrefix) {
    this.urlPrefix = urlPrefix;
  }

  @Override
  public final int order() {
    return ORDER;
  }

  @Override
  public final KvStore open(KvTierConfig config, TierContext context) {
    String url = config.remoteUrl();
    return url == null || !url.startsWith(urlPrefix) ? null : open(url, config, context);
  }

  /** Opens the tier for {@code url}, which starts with this provider's prefix. */
  protected abstract KvStore open(String url, KvTierConfig config, TierContext context);
}
