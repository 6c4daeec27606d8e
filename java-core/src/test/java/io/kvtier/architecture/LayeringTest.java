package io.kvtier.architecture;

import static com.tngtech.archunit.lang.syntax.ArchRuleDefinition.noClasses;
import static com.tngtech.archunit.library.Architectures.layeredArchitecture;
import static com.tngtech.archunit.library.dependencies.SlicesRuleDefinition.slices;

import com.tngtech.archunit.core.domain.JavaClasses;
import com.tngtech.archunit.core.importer.ClassFileImporter;
import com.tngtech.archunit.core.importer.ImportOption;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The core's package layering, stated once so that a back edge, a cycle or a JCuda type outside
 * {@code io.kvtier.cuda} fails the build. From the bottom:
 *
 * <pre>
 *   cli                                 the kvtier command (tools over the layers below)
 *   engine, server                      the facades: vLLM's worker, the cache server
 *   transfer, cuda, disk, remote..      data movers and tiers below the CPU tier
 *   wire                                the network plumbing both remote stores and the server use
 *   store                               the tier contract, the CPU tier, composition, the factory
 *   key, memory, config, (root)         keys, host memory, settings, checks
 * </pre>
 *
 * The tiers below the CPU tier are found by {@link java.util.ServiceLoader}, so {@code store} names
 * none of them. {@code bridge} holds what only the Python side calls.
 */
class LayeringTest {
  private static JavaClasses core;

  @BeforeAll
  static void importCore() {
    core =
        new ClassFileImporter()
            .withImportOption(ImportOption.Predefined.DO_NOT_INCLUDE_TESTS)
            .importPackages("io.kvtier");
  }

  @Test
  void layers_dependOnlyDownward() {
    layeredArchitecture()
        .consideringOnlyDependenciesInLayers()
        .layer("Base")
        .definedBy("io.kvtier", "io.kvtier.config..", "io.kvtier.key..")
        .layer("Memory")
        .definedBy("io.kvtier.memory..")
        .layer("Store")
        .definedBy("io.kvtier.store..")
        .layer("Wire")
        .definedBy("io.kvtier.wire..")
        .layer("Tiers")
        .definedBy("io.kvtier.disk..", "io.kvtier.remote..")
        .layer("Movers")
        .definedBy("io.kvtier.transfer..", "io.kvtier.cuda..")
        .layer("Facades")
        .definedBy("io.kvtier.engine..", "io.kvtier.server..")
        .layer("Bridge")
        .definedBy("io.kvtier.bridge..")
        .layer("Tools")
        .definedBy("io.kvtier.cli..")
        .whereLayer("Bridge")
        .mayNotBeAccessedByAnyLayer()
        .whereLayer("Tools")
        .mayNotBeAccessedByAnyLayer()
        .whereLayer("Facades")
        .mayOnlyBeAccessedByLayers("Bridge", "Tools")
        .whereLayer("Movers")
        .mayOnlyBeAccessedByLayers("Facades", "Bridge", "Tools")
        .whereLayer("Tiers")
        .mayOnlyBeAccessedByLayers("Facades", "Bridge", "Tools")
        .whereLayer("Wire")
        .mayOnlyBeAccessedByLayers("Tiers", "Facades", "Tools")
        .whereLayer("Store")
        .mayOnlyBeAccessedByLayers("Wire", "Tiers", "Movers", "Facades", "Bridge", "Tools")
        .whereLayer("Memory")
        .mayOnlyBeAccessedByLayers("Store", "Wire", "Tiers", "Movers", "Facades", "Bridge", "Tools")
        .check(core);
  }

  @Test
  void packages_haveNoCycles() {
    slices().matching("io.kvtier.(*)..").should().beFreeOfCycles().check(core);
  }

  @Test
  void tiersBelowTheCpuTier_doNotKnowEachOther() {
    noClasses()
        .that()
        .resideInAPackage("io.kvtier.disk..")
        .should()
        .dependOnClassesThat()
        .resideInAPackage("io.kvtier.remote..")
        .check(core);
    noClasses()
        .that()
        .resideInAPackage("io.kvtier.remote..")
        .should()
        .dependOnClassesThat()
        .resideInAnyPackage("io.kvtier.disk..", "io.kvtier.server..")
        .check(core);
    noClasses()
        .that()
        .resideInAPackage("io.kvtier.server..")
        .should()
        .dependOnClassesThat()
        .resideInAPackage("io.kvtier.remote..")
        .check(core);
  }

  @Test
  void jcuda_staysInTheCudaPackage() {
    noClasses()
        .that()
        .resideOutsideOfPackage("io.kvtier.cuda..")
        .should()
        .dependOnClassesThat()
        .resideInAPackage("jcuda..")
        .check(core);
  }
}
