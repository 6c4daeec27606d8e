package io.kvtier.memory;

import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.BeforeEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * Runs {@link LeakCheck} after every test of this module, after its {@code @AfterEach} methods: a
 * test that leaks native memory fails. Registered for every test through {@code
 * META-INF/services/org.junit.jupiter.api.extension.Extension} and {@code
 * junit.jupiter.extensions.autodetection.enabled} in {@code junit-platform.properties}. A test
 * annotated {@link LeaksOnPurpose} may leak buffers to the garbage collector.
 */
public final class LeakCheckExtension implements BeforeEachCallback, AfterEachCallback {
  /** How long slots of a closed pool may take to come back after a test, in milliseconds. */
  static final long HELD_SLOTS_WAIT_MILLIS = 10_000;

  private static final ExtensionContext.Namespace NS =
      ExtensionContext.Namespace.create(LeakCheckExtension.class);

  @Override
  public void beforeEach(ExtensionContext context) {
    context.getStore(NS).put("mark", LeakCheck.mark());
  }

  @Override
  public void afterEach(ExtensionContext context) throws InterruptedException {
    LeakCheck.Mark mark = context.getStore(NS).get("mark", LeakCheck.Mark.class);
    boolean onPurpose =
        context.getTestMethod().map(m -> m.isAnnotationPresent(LeaksOnPurpose.class)).orElse(false);
    LeakCheck.assertNoLeaksSince(mark, HELD_SLOTS_WAIT_MILLIS, onPurpose);
  }
}
