package io.kvtier.bridge;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.key.KeyExtras;
import io.kvtier.key.KeyNamespace;
import io.kvtier.transfer.PagedLayout;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;

class WorkerBridgeTest {
  /** The fields the Python worker sends for a namespace, values as JPype passes them (Long). */
  private static Map<String, Object> namespaceFields() {
    var m = new LinkedHashMap<String, Object>();
    m.put("model_id", "m");
    m.put("kv_dtype", "bfloat16");
    m.put("num_layers", 32L);
    m.put("kv_heads_per_rank", 8L);
    m.put("head_size", 128L);
    m.put("tp_size", 2L);
    m.put("tp_rank", 1L);
    m.put("chunk_tokens", 256L);
    m.put("mla", false);
    m.put("chunk_order", "head-major");
    m.put("first_layer", 4L);
    m.put("kv_groups", "");
    return m;
  }

  private static Map<String, Object> layoutFields() {
    var m = new LinkedHashMap<String, Object>();
    m.put("num_blocks", 10L);
    m.put("block_size", 16L);
    m.put("kv_count", 2L);
    m.put("num_heads", 4L);
    m.put("head_size", 64L);
    m.put("element_bytes", 2L);
    m.put("kv_stride", 64L);
    m.put("block_stride", 8192L);
    m.put("slot_stride", 128L);
    m.put("head_stride", 2048L);
    return m;
  }

  private static Map<String, Object> with(Map<String, Object> base, String key, Object value) {
    var m = new HashMap<>(base);
    m.put(key, value);
    return m;
  }

  private static String refusal(Runnable call) {
    return assertThrows(IllegalArgumentException.class, call::run).getMessage();
  }

  @Test
  void keyNamespace_goodFields_equalsPositionalConstructor() {
    var positional =
        new KeyNamespace("m", "bfloat16", 32, 8, 128, 2, 1, 256, false, "head-major", 4);
    KeyNamespace named = WorkerBridge.keyNamespace(namespaceFields());
    assertEquals(positional, named);
    assertEquals(positional.id(), named.id());
  }

  @Test
  void keyNamespace_kvGroups_partOfTheKeys() {
    KeyNamespace plain = WorkerBridge.keyNamespace(namespaceFields());
    KeyNamespace grouped =
        WorkerBridge.keyNamespace(with(namespaceFields(), "kv_groups", "sliding200:0,2+full:1,3"));
    assertTrue(grouped.canonical().endsWith(";order=head-major;groups=sliding200:0,2+full:1,3"));
    assertNotEquals(plain.id(), grouped.id());
    assertTrue(
        refusal(() -> WorkerBridge.keyNamespace(with(namespaceFields(), "kv_groups", "a;b")))
            .contains("kvGroups"));
  }

  @Test
  void keyNamespace_integerBoxes_areAllAccepted() {
    var m = with(namespaceFields(), "num_layers", 32);
    m.put("head_size", (short) 128);
    assertEquals(32, WorkerBridge.keyNamespace(m).numLayers());
  }

  @Test
  void keyNamespace_missingField_namesIt() {
    var m = namespaceFields();
    m.remove("tp_rank");
    String message = refusal(() -> WorkerBridge.keyNamespace(m));
    assertTrue(message.contains("KeyNamespace field tp_rank is missing"), message);
  }

  @Test
  void keyNamespace_unknownField_namesItAndTheKnownOnes() {
    var m = with(namespaceFields(), "tp_sise", 2L);
    String message = refusal(() -> WorkerBridge.keyNamespace(m));
    assertTrue(message.contains("KeyNamespace has no field tp_sise"), message);
    assertTrue(message.contains("tp_size"), message);
  }

  @Test
  void keyNamespace_swappedValues_failOnTheFieldsType() {
    var m = with(namespaceFields(), "model_id", 32L);
    m.put("num_layers", "m");
    String message = refusal(() -> WorkerBridge.keyNamespace(m));
    assertTrue(message.contains("field model_id must be a string, got 32 (Long)"), message);
    var n = with(namespaceFields(), "num_layers", "m");
    message = refusal(() -> WorkerBridge.keyNamespace(n));
    assertTrue(message.contains("field num_layers must be an integer, got m (String)"), message);
  }

  @Test
  void keyNamespace_booleanOrFloatForACount_isRefused() {
    String message =
        refusal(() -> WorkerBridge.keyNamespace(with(namespaceFields(), "tp_size", true)));
    assertTrue(message.contains("field tp_size must be an integer"), message);
    message = refusal(() -> WorkerBridge.keyNamespace(with(namespaceFields(), "head_size", 128.0)));
    assertTrue(message.contains("field head_size must be an integer"), message);
    message = refusal(() -> WorkerBridge.keyNamespace(with(namespaceFields(), "mla", 0L)));
    assertTrue(message.contains("field mla must be a boolean, got 0 (Long)"), message);
  }

  @Test
  void keyNamespace_negativeOrOverflowingValue_namesTheField() {
    String message =
        refusal(() -> WorkerBridge.keyNamespace(with(namespaceFields(), "first_layer", -1L)));
    assertTrue(message.contains("KeyNamespace field first_layer must be >= 0, got -1"), message);
    message = refusal(() -> WorkerBridge.keyNamespace(with(namespaceFields(), "num_layers", 0L)));
    assertTrue(message.contains("field num_layers must be >= 1"), message);
    message =
        refusal(() -> WorkerBridge.keyNamespace(with(namespaceFields(), "head_size", 1L << 32)));
    assertTrue(
        message.contains("field head_size must be <= 2147483647 (an int), got 4294967296"),
        message);
  }

  @Test
  void keyNamespace_nullValueOrNullMap_isRefused() {
    String message =
        refusal(() -> WorkerBridge.keyNamespace(with(namespaceFields(), "kv_dtype", null)));
    assertTrue(message.contains("field kv_dtype must be a string, got null"), message);
    message = refusal(() -> WorkerBridge.keyNamespace(null));
    assertTrue(message.contains("KeyNamespace needs its fields"), message);
  }

  @Test
  void keyNamespace_rankNotBelowSize_isRefusedByTheNamespace() {
    String message =
        refusal(() -> WorkerBridge.keyNamespace(with(namespaceFields(), "tp_rank", 2L)));
    assertTrue(message.contains("tpRank 2 must be < tpSize 2"), message);
  }

  @Test
  void pagedLayout_goodFields_equalsPositionalConstructor() {
    assertEquals(
        new PagedLayout(10, 16, 2, 4, 64, 2, 64, 8192, 128, 2048),
        WorkerBridge.pagedLayout(layoutFields()));
  }

  @Test
  void pagedLayout_swappedCounts_failOnTheFieldsRange() {
    // kv_count and num_heads exchanged: 4 is no K/V count.
    var m = with(layoutFields(), "kv_count", 4L);
    m.put("num_heads", 2L);
    String message = refusal(() -> WorkerBridge.pagedLayout(m));
    assertTrue(message.contains("PagedLayout field kv_count must be from 1 to 2, got 4"), message);
  }

  @Test
  void pagedLayout_missingUnknownOrNegativeField_namesIt() {
    var missing = layoutFields();
    missing.remove("slot_stride");
    assertTrue(
        refusal(() -> WorkerBridge.pagedLayout(missing))
            .contains("PagedLayout field slot_stride is missing"));
    assertTrue(
        refusal(() -> WorkerBridge.pagedLayout(with(layoutFields(), "blocks", 10L)))
            .contains("PagedLayout has no field blocks"));
    String message =
        refusal(() -> WorkerBridge.pagedLayout(with(layoutFields(), "kv_stride", -64L)));
    assertTrue(message.contains("PagedLayout field kv_stride must be >= 0, got -64"), message);
    message = refusal(() -> WorkerBridge.pagedLayout(with(layoutFields(), "head_stride", 0L)));
    assertTrue(message.contains("PagedLayout field head_stride must be >= 1, got 0"), message);
  }

  @Test
  void pagedLayout_zeroKvStrideForMla_isAccepted() {
    var m = with(layoutFields(), "kv_count", 1L);
    m.put("kv_stride", 0L);
    m.put("num_heads", 1L);
    assertEquals(0, WorkerBridge.pagedLayout(m).kvStride());
  }

  @Test
  void keyExtras_null_isThePlainPrompt() {
    assertEquals(KeyExtras.NONE, WorkerBridge.keyExtras(null));
  }

  @Test
  void statNames_areTheEnginesAndWorkers() {
    assertArrayEquals(io.kvtier.engine.KvEngine.statNames(), WorkerBridge.engineStatNames());
    assertArrayEquals(io.kvtier.engine.KvWorker.statNames(), WorkerBridge.workerStatNames());
  }
}
