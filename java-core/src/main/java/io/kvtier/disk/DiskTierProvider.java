package io.kvtier.disk;

import io.kvtier.config.KvTierConfig;
import io.kvtier.store.KvStore;
import io.kvtier.store.TierContext;
import io.kvtier.store.TierProvider;

/** Opens the disk tier when {@code local_disk} names a directory. */
public final class DiskTierProvider implements TierProvider {
  /** Disk comes right after the CPU tier. */
  private static final int ORDER = 100;

  @Override
  public int order() {
    return ORDER;
  }

  @Override
  public KvStore open(KvTierConfig config, TierContext context) {
    if (config.localDiskPaths().isEmpty()) {
      return null;
    }
    return new DiskStore(
        DiskStore.Settings.from(config, context.rank()), context.buffers(), NioDiskIo.INSTANCE);
  }
}
