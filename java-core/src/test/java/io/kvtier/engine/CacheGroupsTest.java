package io.kvtier.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class CacheGroupsTest {
  @Test
  void tablesComeBlockPositionByBlockPosition() {
    CacheGroups g = new CacheGroups(new int[] {1, 0, 1, 0}, new int[] {0, 128});
    int[][] tables = g.split(new int[] {5, 0, 6, 0, 7, 9});
    assertArrayEquals(new int[] {5, 6, 7}, tables[0]);
    assertArrayEquals(new int[] {0, 0, 9}, tables[1]);
    assertArrayEquals(new int[] {1, 3}, g.layers(0));
    assertArrayEquals(new int[] {0, 2}, g.layers(1));
    assertEquals(1, g.groupOf(2));
    assertTrue(g.slides());
    assertFalse(g.plain());
  }

  @Test
  void describesEveryGroupForTheKeys_andNothingForOneFullAttentionGroup() {
    assertEquals("", CacheGroups.fullAttention(4).describe());
    assertEquals("sliding200:0,1", CacheGroups.slidingWindow(2, 200).describe());
    assertEquals(
        "sliding64:0,2+full:1,3",
        new CacheGroups(new int[] {0, 1, 0, 1}, new int[] {64, 0}).describe());
  }

  @Test
  void badGroupsAndTablesAreRefused() {
    assertThrows(
        IllegalArgumentException.class, () -> new CacheGroups(new int[] {0, 2}, new int[] {0, 0}));
    assertThrows(
        IllegalArgumentException.class, () -> new CacheGroups(new int[] {0, 0}, new int[] {0, 0}));
    assertThrows(
        IllegalArgumentException.class, () -> new CacheGroups(new int[] {0}, new int[] {-1}));
    assertThrows(IllegalArgumentException.class, () -> CacheGroups.slidingWindow(2, 0));
    CacheGroups two = new CacheGroups(new int[] {0, 1}, new int[] {0, 64});
    assertThrows(IllegalArgumentException.class, () -> two.split(new int[] {1, 2, 3}));
  }
}
