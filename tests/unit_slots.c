/* unit_slots.c: unit tests of the slots/ layer (size classes, generation
 * sweeps, segments and block geometry, large segments), linked with the static
 * library so the internal functions are reachable. */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stddef.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "slots/generation.h"
#include "slots/harden.h"
#include "slots/os.h"
#include "slots/large_segment.h"
#include "slots/segment.h"
#include "slots/size_class.h"

/* Every class is a multiple of 16, classes grow, and the class of a size is
 * the smallest class that holds it. */
Test(size_class, classes_are_ordered_multiples_of_16) {
  for (unsigned c = 0; c < SMI_CLASSES; c++) {
    cr_assert_eq(smi_class_size[c] % 16, 0, "class %u size %u", c, smi_class_size[c]);
    if (c) cr_assert_gt(smi_class_size[c], smi_class_size[c - 1]);
  }
  cr_assert_eq(smi_class_size[SMI_CLASSES - 1], SMI_SMALL_MAX);
}

Test(size_class, class_of_is_the_smallest_that_fits) {
  for (size_t n = 1; n <= SMI_SMALL_MAX; n += (n < 4096 ? 1 : 37)) {
    unsigned c = smi_class_of(n);
    cr_assert_lt(c, SMI_CLASSES);
    cr_assert_geq(smi_class_size[c], n, "size %zu got class %u (%u)", n, c, smi_class_size[c]);
    if (c) cr_assert_lt(smi_class_size[c - 1], n, "size %zu: class %u would do", n, c - 1);
  }
  cr_assert_eq(smi_class_of(SMI_SMALL_MAX), SMI_CLASSES - 1);
}

/* Internal waste is at most 12.5% above 128 bytes (16-byte steps below). */
Test(size_class, waste_is_bounded) {
  for (size_t n = 129; n <= SMI_SMALL_MAX; n++) {
    uint32_t s = smi_class_size[smi_class_of(n)];
    cr_assert_leq((double)(s - n) / (double)n, 0.125, "size %zu -> %u", n, s);
  }
  for (size_t n = 1; n <= 128; n++) cr_assert_lt(smi_class_size[smi_class_of(n)] - n, 16u);
}

/* The vectorized sweep equals the scalar rule: live -> freed (the count
 * advanced, 127 wrapping to 0), free unchanged. */
Test(generation, close_sweep_matches_scalar_rule) {
  enum { N = 4096 + 16 };
  static uint8_t g[N] __attribute__((aligned(16))), ref[N];
  srand(7);
  size_t live = 0;
  for (size_t i = 0; i < N; i++) {
    g[i] = (uint8_t)rand();
    ref[i] = smi_gen_is_live(g[i]) ? smi_gen_freed(g[i]) : g[i];
    live += smi_gen_is_live(g[i]);
  }
  cr_assert_eq(smi_gens_count_live(g, N), live);
  cr_assert_eq(smi_gens_close(g, N), live);
  cr_assert_eq(memcmp(g, ref, N), 0);
  cr_assert_eq(smi_gens_count_live(g, N), 0);
}

/* Free's fast path adds 0x81 to the generation in memory and branches on the
 * overflow: for every byte value, it frees exactly the live slots not at the
 * wrap, to their freed generation; any other value (free: a double or invalid
 * free; the wrap) is left as a sum that smi_free_undo recognises as its own
 * (0 or live) and puts back by subtracting 0x81. */
Test(generation, free_add_frees_exactly_the_plainly_live) {
  size_t freed = 0;
  for (unsigned v = 0; v < 256; v++) {
    uint8_t g = (uint8_t)v;
    bool plain = smi_gen_is_live(g) && g != SMI_GEN_LAST;
    cr_assert_eq(smi_gen_frees_plainly(g), plain, "generation %#x", v);
    bool ok = smi_gen_make_free(&g);
    cr_assert_eq(ok, plain, "generation %#x", v);
    cr_assert_eq(g, (uint8_t)(v + SMI_GEN_FREE_ADD), "generation %#x", v);
    if (ok) {
      cr_assert_eq(g, smi_gen_freed((uint8_t)v), "generation %#x", v);
      cr_assert(!smi_gen_is_live(g));
      freed++;
    } else {
      cr_assert(g == 0 || smi_gen_is_live(g), "generation %#x: its sum looks like another thread's", v);
      cr_assert_eq((uint8_t)(g - SMI_GEN_FREE_ADD), v);
    }
    g = (uint8_t)v;
    if (!smi_gen_is_live(g)) {
      smi_gen_make_live(&g);
      cr_assert(smi_gen_is_live(g));
      cr_assert_eq(smi_gen_freed(g), (uint8_t)((v + 1) & 0x7f), "generation %#x", v);
    }
  }
  cr_assert_eq(freed, 127);
  /* counts 0 and 1 are never live: no fresh generation and no restart is
   * below 2, so what the add leaves at the wrap (live, 0) and at a retired
   * slot or padding (live, 1) is no handle's */
  uint8_t least = SMI_GEN_RESTART;
  for (size_t i = 0; i < 4096; i++) least = smi_gen_fresh(i) < least ? smi_gen_fresh(i) : least;
  cr_assert_eq(least, 2);
  static uint8_t table[256] __attribute__((aligned(16)));
  smi_gens_fresh(table, sizeof table); /* the vector fill is the scalar rule */
  for (size_t i = 0; i < sizeof table; i++) cr_assert_eq(table[i], smi_gen_fresh(i), "slot %zu", i);
  cr_assert_eq(smi_gen_freed(SMI_GEN_LAST), SMI_GEN_WRAPPED);
  cr_assert_eq((uint8_t)(SMI_GEN_LAST + SMI_GEN_FREE_ADD), SMI_GEN_LIVE | 0);
  cr_assert_eq((uint8_t)(SMI_GEN_WRAPPED + SMI_GEN_FREE_ADD), SMI_GEN_LIVE | 1);
}

Test(generation, table_length_is_padded) {
  for (size_t n = 0; n < 100; n++) {
    size_t len = smi_gens_len(n);
    cr_assert_eq(len % 16, 0);
    cr_assert_gt(len, n); /* one spare byte past the last slot */
  }
}

/* A new segment is registered in both maps, and every block of every class
 * is cut so that the generation table, the slots and the span do not overlap,
 * slots are aligned to the largest power of two of their size (up to 64 KiB),
 * and the slot index of every slot start is exact. */
Test(segment, blocks_are_cut_consistently) {
  for (unsigned kind = 0; kind < SMI_KINDS_OF_BLOCKS; kind++) {
    smi_segment_t *seg = smi_segment_new(kind);
    cr_assert_not_null(seg);
    cr_assert_eq(smi_map_of((uintptr_t)seg), SMI_MAP_SLOTS);
    cr_assert_eq(atomic_load(&smi_segtab[seg->id].seg), seg);
    cr_assert_eq(smi_block_of((char *)seg + 100), smi_block_of((char *)seg)); /* header page */
    smi_block_t *b = &seg->blocks[0];
    for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
      if (smi_kind_of_class(cls) != kind) continue;
      cr_assert(smi_block_format(b, cls));
      uint8_t *base = smi_block_base(b), *end = base + smi_block_span(b);
      smi_layout_t l = smi_block_layout(b, b->size);
      cr_assert_eq(b->gens, l.gens);
      cr_assert_eq(b->start, l.start);
      cr_assert_eq(b->nslots, l.nslots);
      /* the slots and the table do not overlap, and both lie in the block */
      cr_assert(b->start + (size_t)b->nslots * b->size <= b->gens || b->gens + l.table <= b->start, "class %u", cls);
      cr_assert_geq(b->start, base);
      cr_assert_leq(b->start + (size_t)b->nslots * b->size, end);
      cr_assert_leq(b->gens + l.table, end);
      cr_assert_geq(b->nslots, 7u);
#ifndef SMI_HARDENED
      /* free's fast path has no bound check: every multiple of the slot size
       * in the block has its entry in the table, never live past the last slot */
      cr_assert_eq(b->start, base);
      for (uint8_t *p = base; p < end; p += b->size) {
        uint8_t *g;
        cr_assert(smi_slot_gen(b, (uintptr_t)p, &g), "class %u offset %zu", cls, (size_t)(p - base));
        cr_assert(g >= b->gens && g < b->gens + l.table, "class %u offset %zu", cls, (size_t)(p - base));
        if (p >= b->start + (size_t)b->nslots * b->size) cr_assert(!smi_gen_frees_plainly(*g), "class %u", cls);
      }
#endif
      size_t align = b->size & -b->size;
      if (align > SMI_PAGE_SIZE) align = SMI_PAGE_SIZE;
      cr_assert_eq((uintptr_t)b->start % align, 0, "class %u", cls);
      for (uint32_t i = 0; i < b->nslots; i++) {
        uint8_t *p = smi_slot_addr(b, i);
        cr_assert_eq(smi_slot_index(b, (uintptr_t)p), i);
        cr_assert_eq(smi_block_of(p), b);
      }
    }
  }
}

/* The generation tables of a class's blocks lie at different cache-line
 * offsets (their colors). Default build: they end at different offsets,
 * within the spare bytes past the last slot (up to 63 lines) and, for a
 * table of at most 49 lines (slots of 32 bytes or more), up to 15 lines
 * below the block's end even past them, so they do not all share the same
 * few cache sets; the block keeps every slot below its table, the table is
 * 16-byte aligned and in the block's last two pages (what a release keeps).
 * A class whose tables move 31 lines or more spreads them over at least 24
 * line offsets mod 4 KiB; one that moves them 15 (every class but 16 B:
 * with the spare bytes alone, the classes of 32, 48 and 64 bytes kept every
 * table at one offset), over at least 12; one that moves them a line, over
 * at least 2. */
Test(segment, tables_of_a_class_spread_over_cache_sets) {
#ifdef SMI_HARDENED
  /* Hardened build: the table comes first, at the block's base moved up by
   * 0 to 15 cache lines as far as no slot is lost (n: the slots with the
   * table at the base itself; lines: how far it can move), then the slots,
   * then the guard page. A class that can move its tables 15 lines spreads
   * them over at least 12 of 16 line offsets mod 4 KiB; one that can move
   * them a line, over at least 2 (at the base itself: all at offset 0). */
  smi_segment_t *segs[2] = {smi_segment_new(SMI_KIND_SMALL), smi_segment_new(SMI_KIND_SMALL)};
  cr_assert(segs[0] && segs[1]);
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    if (smi_kind_of_class(cls) != SMI_KIND_SMALL) continue;
    size_t size = smi_class_size[cls], end = SMI_SPAN_SMALL - SMI_HD_GUARD;
    size_t align = size & -size, mask = ~(align - 1), n = (end - 16) / (size + 1);
    while (((smi_gens_len(n) + align - 1) & mask) + n * size > end) n--;
    size_t table = smi_gens_len(n), lines = 0;
    while (lines < 15 && (((lines + 1) * 64 + table + align - 1) & mask) + n * size <= end) lines++;
    uint64_t seen = 0; /* where the tables start: line offsets mod 4 KiB */
    for (int s = 0; s < 2; s++) {
      for (uint32_t i = 0; i < segs[s]->nblocks; i++) {
        smi_block_t *b = &segs[s]->blocks[i];
        cr_assert(smi_block_format(b, cls));
        uint8_t *base = smi_block_base(b);
        cr_assert_eq(b->nslots, n, "class %u block %u: %u slots, %zu without the color", cls, i, b->nslots, n);
        cr_assert_geq(b->gens, base);
        cr_assert_leq(b->gens, base + lines * 64, "class %u block %u", cls, i);
        cr_assert_eq((uintptr_t)b->gens % 64, 0);
        cr_assert_leq(b->gens + table, b->start, "class %u block %u", cls, i);
        cr_assert_eq((uintptr_t)b->start % align, 0, "class %u block %u", cls, i);
        cr_assert_leq(b->start + (size_t)b->nslots * size, base + end, "class %u block %u", cls, i);
        seen |= (uint64_t)1 << ((uintptr_t)b->gens % 4096 / 64);
      }
    }
    int colors = __builtin_popcountll(seen);
    if (lines >= 15) cr_assert_geq(colors, 12, "class %u (%zu lines free): %d line offsets", cls, lines, colors);
    else if (lines >= 1) cr_assert_geq(colors, 2, "class %u (%zu lines free): %d line offsets", cls, lines, colors);
  }
#else
  smi_segment_t *segs[2] = {smi_segment_new(SMI_KIND_SMALL), smi_segment_new(SMI_KIND_SMALL)};
  cr_assert(segs[0] && segs[1]);
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    if (smi_kind_of_class(cls) != SMI_KIND_SMALL) continue;
    size_t size = smi_class_size[cls], span = SMI_SPAN_SMALL;
    size_t table = ((span + size - 1) / size + 15) & ~(size_t)15, n = (span - table) / size; /* an entry a multiple */
    size_t spare = span - table - n * size, lines = spare / 64 < 63 ? spare / 64 : 63;       /* how far it may move */
    if ((table + 63) / 64 <= 49 && lines < 15) lines = 15;
    uint64_t seen = 0; /* where the tables end: line offsets mod 4 KiB */
    for (int s = 0; s < 2; s++) {
      for (uint32_t i = 0; i < segs[s]->nblocks; i++) {
        smi_block_t *b = &segs[s]->blocks[i];
        cr_assert(smi_block_format(b, cls));
        uint8_t *base = smi_block_base(b), *end = smi_block_end(b);
        cr_assert_eq(b->start, base);
        cr_assert_eq(b->nslots, (size_t)(b->gens - base) / size, "class %u block %u: a slot lost", cls, i);
        cr_assert_leq(b->gens + table, end);
        cr_assert_geq(b->gens + table + lines * 64, end, "class %u block %u: moved too far", cls, i);
        cr_assert_geq(b->gens, end - 2 * SMI_OS_PAGE);
        cr_assert_eq((uintptr_t)b->gens % 16, 0);
        seen |= (uint64_t)1 << ((uintptr_t)(b->gens + table) % 4096 / 64);
      }
    }
    int colors = __builtin_popcountll(seen);
    if (lines >= 31) cr_assert_geq(colors, 24, "class %u (%zu lines): %d line offsets", cls, lines, colors);
    else if (lines >= 15) cr_assert_geq(colors, 12, "class %u (%zu lines): %d line offsets", cls, lines, colors);
    else if (lines >= 1) cr_assert_geq(colors, 2, "class %u (%zu lines): %d line offsets", cls, lines, colors);
  }
#endif
}

#ifndef SMI_HARDENED
/* Default build: a small block's generation table, moved down by its color,
 * lies in the block's last page, so a block in use touches one page for it
 * (README "Start-up footprint"). The 16-byte class's table is that page whole
 * (4096 entries, 3840 slots below it); with smi_gens_len's spare byte it was
 * 4112 bytes, and its first 16 entries, slot 0's among them, lay on the page
 * before: two pages touched by a block with one slot handed out. */
Test(segment, a_small_blocks_table_lies_in_its_last_page) {
  smi_segment_t *seg = smi_segment_new(SMI_KIND_SMALL);
  cr_assert(seg);
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    if (smi_kind_of_class(cls) != SMI_KIND_SMALL) continue;
    for (uint32_t i = 0; i < seg->nblocks; i++) {
      smi_block_t *b = &seg->blocks[i];
      cr_assert(smi_block_format(b, cls));
      uint8_t *end = smi_block_end(b);
      cr_assert_geq(b->gens, end - SMI_OS_PAGE, "class %u (%u B) block %u: table %zu bytes from the end", cls,
                    smi_class_size[cls], i, (size_t)(end - b->gens));
      if (smi_class_size[cls] == 16) {
        cr_assert_eq(b->gens, end - SMI_OS_PAGE);
        cr_assert_eq(b->nslots, 3840u);
      }
    }
  }
}
#endif

/* Re-cutting a block for another class advances its epoch and zeroes its table. */
Test(segment, reformat_advances_epoch) {
  smi_segment_t *seg = smi_segment_new(SMI_KIND_SMALL);
  smi_block_t *b = &seg->blocks[3];
  cr_assert(smi_block_format(b, 0));
  uint32_t e = atomic_load(&b->epoch);
  memset(b->gens, 0x55, smi_gens_len(b->nslots));
  cr_assert(smi_block_format(b, 5));
  cr_assert_eq(atomic_load(&b->epoch), e + 1);
  cr_assert_eq(smi_gens_count_live(b->gens, smi_gens_len(b->nslots)), 0);
}

/* The next slot of a freelist (its link decoded: the hardened build stores
 * it XORed with the block's key, slots/harden.h). */
static smi_free_t *next_free(const smi_block_t *b, const smi_free_t *f) {
  return (smi_free_t *)smi_link_dec(b, f, f->next);
}

/* Extending hands out never-used slots a page at a time: in address order;
 * in the hardened build in a shuffled order, each of the page's once. */
/* A lock-free reader (a handle) checks its slot index against nslots, then
 * reads the generation from the table: a re-cut to another class in between
 * moves the table (in the default build its place depends on the class). The
 * index, checked against the table as loaded, must keep the read inside the
 * block, for every pair of classes of a kind and every slot of the first. */
Test(segment, generation_reads_stay_in_the_block_across_a_recut) {
  for (unsigned kind = 0; kind < SMI_KINDS_OF_BLOCKS; kind++) {
    smi_segment_t *seg = smi_segment_new(kind);
    cr_assert_not_null(seg);
    smi_block_t *b = &seg->blocks[seg->nblocks - 1]; /* the last: past it lies the next segment, or nothing */
    for (unsigned from = 0; from < SMI_CLASSES; from++) {
      if (smi_kind_of_class(from) != kind) continue;
      for (unsigned to = 0; to < SMI_CLASSES; to++) {
        if (smi_kind_of_class(to) != kind || to == from) continue;
        cr_assert(smi_block_format(b, from));
        uint32_t old_n = b->nslots;
        cr_assert(smi_block_format(b, to));
        for (uint32_t i = 0; i < old_n; i++) {
          uint8_t *g = (uint8_t *)smi_gen_at(b, i);
          if (g) cr_assert(g >= smi_block_base(b) && g < smi_block_end(b), "classes %u -> %u, slot %u", from, to, i);
        }
        for (uint32_t i = 0; i < b->nslots; i++)
          cr_assert_not_null(smi_gen_at(b, i)); /* the new slots all have one */
      }
    }
  }
}

/* A released segment keeps mapped the pages where any cut of a block keeps
 * its table: a stale handle's reader may still read there. */
Test(segment, release_keeps_the_generation_tables_mapped) {
  for (unsigned kind = 0; kind < SMI_KINDS_OF_BLOCKS; kind++) {
    smi_segment_t *seg = smi_segment_new(kind);
    cr_assert_not_null(seg);
    uint8_t *first[64], *last[64];
    for (uint32_t k = 0; k < seg->nblocks; k++) {
      smi_block_t *b = &seg->blocks[k];
      first[k] = smi_block_end(b), last[k] = smi_block_base(b);
      for (unsigned cls = 0; cls < SMI_CLASSES; cls++) { /* every place a table takes */
        if (smi_kind_of_class(cls) != kind) continue;
        cr_assert(smi_block_format(b, cls));
        smi_layout_t l = smi_block_layout(b, b->size);
        if (l.gens < first[k]) first[k] = l.gens;
        if (l.gens + l.table > last[k]) last[k] = l.gens + l.table;
      }
    }
    smi_segment_release(seg);
    for (uint32_t k = 0; k < seg->nblocks; k++) {
      uintptr_t lo = (uintptr_t)first[k] & ~(SMI_OS_PAGE - 1);
      cr_assert_eq(msync((void *)lo, (size_t)(last[k] - (uint8_t *)lo), MS_ASYNC), 0,
                   "kind %u block %u: a table's pages were unmapped", kind, k);
    }
    cr_assert(smi_segment_reacquire(seg));
  }
}

Test(segment, extend_builds_an_in_place_freelist) {
  smi_segment_t *seg = smi_segment_new(SMI_KIND_SMALL);
  smi_block_t *b = &seg->blocks[1];
  cr_assert(smi_block_format(b, 1)); /* 32-byte slots */
  cr_assert(smi_block_extend(b));
  size_t n = 0;
  bool seen[4096 / 32] = {false};
  for (smi_free_t *f = b->free; f; f = next_free(b, f), n++) {
    cr_assert_lt(n, 4096 / 32, "the freelist is longer than a page worth of slots");
    if (SMI_HD_ON) {
      uint32_t i = smi_slot_index(b, (uintptr_t)f);
      cr_assert((uint8_t *)f == smi_slot_addr(b, i) && i < 4096 / 32 && !seen[i], "slot %p", (void *)f);
      seen[i] = true;
    } else {
      cr_assert_eq((uint8_t *)f, smi_slot_addr(b, (uint32_t)n));
    }
  }
  cr_assert_eq(n, 4096 / 32);
  while (smi_block_extend(b)) {
  }
  cr_assert_eq(b->bump, b->nslots);
}

/* A large segment: header 4 MiB-aligned, object aligned as asked, the map says
 * where the header is, and unmapping forgets it. */
Test(segment, large_segments_map_and_unmap) {
  size_t aligns[] = {16, 4096, 65536, (size_t)4 << 20, (size_t)8 << 20};
  for (size_t k = 0; k < sizeof aligns / sizeof *aligns; k++) {
    smi_segment_t *seg = smi_large_new((size_t)5 << 20, aligns[k]);
    cr_assert_not_null(seg);
    cr_assert_eq((uintptr_t)seg % SMI_SEG_SIZE, 0);
    cr_assert_eq((uintptr_t)seg->large_obj % aligns[k], 0);
    cr_assert_geq(seg->large_size, (size_t)5 << 20);
    unsigned m = smi_map_of((uintptr_t)seg->large_obj);
    cr_assert(m == SMI_MAP_LARGE || m == SMI_MAP_LARGE_BACK);
    cr_assert_eq(smi_map_of((uintptr_t)seg->large_obj + ((size_t)4 << 20) + 4096), SMI_MAP_INTERIOR);
    memset(seg->large_obj, 1, (size_t)5 << 20);
    uintptr_t obj = (uintptr_t)seg->large_obj;
    smi_large_unmap(seg);
    cr_assert_eq(smi_map_of(obj), SMI_MAP_NONE);
  }
}

/* Addresses outside the user address space are never ours. */
Test(segment, map_rejects_foreign_addresses) {
  int local;
  cr_assert_eq(smi_map_of((uintptr_t)&local), SMI_MAP_NONE);
  cr_assert_eq(smi_map_of(~(uintptr_t)0), SMI_MAP_NONE);
  cr_assert_eq(smi_map_of((uintptr_t)1 << 47), SMI_MAP_NONE);
}

/* A block of a closed arena reopens for its class without a new epoch: its
 * generations go on from the close sweep; a slot whose generation wrapped
 * (reads 0) retires, every other slot handed out before is free again. */
/* A block of a closed arena reopened: the epoch stays, the close sweep made
 * every slot free; a slot whose generation wrapped to 0 retires only in a
 * block that a handle named (no handle can name it again otherwise). */
static void reopen_case(bool named) {
  smi_segment_t *seg = smi_segment_new(SMI_KIND_SMALL);
  smi_block_t *b = &seg->blocks[2];
  cr_assert(smi_block_format(b, 1)); /* 32-byte slots */
  cr_assert(smi_block_extend(b));    /* 128 slots handed to the freelist */
  if (named) smi_block_name(b);
  uint32_t epoch = atomic_load(&b->epoch);
  b->gens[5] = 255;  /* live, about to wrap */
  b->gens[7] = 0x8d; /* live, count 13 */
  b->gens[9] = 40;   /* free */
  size_t zero = 0;
  for (uint32_t i = 0; i < b->bump; i++) zero += b->gens[i] == 0;
  cr_assert_eq(smi_gens_close(b->gens, smi_gens_len(b->nslots)), 2);
  b->flags |= SMI_BLOCK_CLOSED;
  smi_block_reopen(b);
  cr_assert_eq(atomic_load(&b->epoch), epoch, "reopening used an epoch");
  cr_assert_eq(b->gens[5], named ? SMI_GEN_WRAPPED : SMI_GEN_RESTART); /* counts 0 and 1 are never live */
  cr_assert_eq(b->gens[7], 14);
  cr_assert_eq(b->retired, named ? zero + 1 : 0);
  size_t n = 0;
  uint8_t *last = NULL;
  for (smi_free_t *f = b->free; f; f = next_free(b, f), n++) {
    uint32_t i = smi_slot_index(b, (uintptr_t)f);
    if (named) cr_assert_neq(b->gens[i], 0, "slot %u with generation 0 is free in a named block", i);
    cr_assert_gt((uint8_t *)f, last, "the freelist is not in address order");
    last = (uint8_t *)f;
  }
  cr_assert_eq(n, b->bump - b->retired);
  cr_assert_eq(b->flags & SMI_BLOCK_CLOSED, 0);
}

Test(segment, reopen_named_block_keeps_epoch_and_retires_wrapped_slots) { reopen_case(true); }
Test(segment, reopen_unnamed_block_keeps_epoch_and_wrapped_slots_serve) { reopen_case(false); }

/* smi_os_decommit_ranges and smi_os_discard zero the pages of every range
 * given, and only those, also past the 64 ranges of one system call; the first
 * counts them as decommitted, the second does not. */
static void decommit_ranges_case(bool batch) {
  smi_os_batch_discards = batch; /* SLOTMALLOC_BATCH_MADVISE */
  enum { PAGES = 300, RANGES = 100 };
  size_t page = SMI_OS_PAGE;
  uint8_t *m = smi_os_map_aligned(PAGES * page, page);
  cr_assert_not_null(m);
  memset(m, 0xab, PAGES * page);
  smi_os_range_t r[RANGES];
  for (size_t i = 0; i < RANGES; i++)
    r[i] = (smi_os_range_t){m + 3 * i * page, (1 + i % 2) * page}; /* 1 or 2 of every 3 */
  size_t bytes = 0;
  for (size_t i = 0; i < RANGES; i++) bytes += r[i].size;
  size_t before = smi_os_committed();
  smi_os_decommit_ranges(r, RANGES);
  cr_assert_eq(before - smi_os_committed(), bytes, "counted %zu bytes decommitted, not %zu",
               before - smi_os_committed(), bytes);
  for (size_t p = 0; p < PAGES; p++) {
    size_t in_range = p % 3 == 0 || (p % 3 == 1 && (p / 3) % 2 == 1);
    uint8_t want = in_range ? 0 : 0xab;
    cr_assert(m[p * page] == want && m[p * page + page - 1] == want, "page %zu reads %#x, not %#x", p, m[p * page],
              want);
  }
  memset(m, 0xcd, PAGES * page);
  before = smi_os_committed();
  smi_os_discard(r, RANGES);
  cr_assert_eq(smi_os_committed(), before, "smi_os_discard counted its pages as decommitted");
  cr_assert_eq(m[0], 0);
  cr_assert_eq(m[2 * page], 0xcd);
  smi_os_account_recommit(bytes);
  smi_os_unmap(m, PAGES * page);
  smi_os_batch_discards = false;
}
/* one madvise per range (the default) */
Test(os, decommit_ranges_zero_exactly_their_pages) { decommit_ranges_case(false); }
/* process_madvise for up to 64 ranges (SLOTMALLOC_BATCH_MADVISE=1; one madvise
 * per range on a kernel that refuses it) */
Test(os, batched_decommit_ranges_zero_exactly_their_pages) { decommit_ranges_case(true); }

#ifdef SYS_process_madvise
/* Under a seccomp filter that kills the process at process_madvise (as
 * filters that do not list it do), batched give-backs go one by one: the
 * process lives and the pages read zero. */
Test(os, batched_decommit_ranges_never_call_process_madvise_under_seccomp) {
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_madvise, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
  cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
  cr_assert_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0);
  decommit_ranges_case(true); /* (killed here if a batch called process_madvise) */
}
#endif
