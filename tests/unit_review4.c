/* unit_review4.c: checks from the fourth review of the session's changes.
 *
 * review4::a_moved_large_object_unmaps_only_its_own_pages: a realloc that
 * cannot grow a large object in place moves its pages (mremap) to a new
 * place. The range the pages left is free from that moment, and another
 * thread's mmap may take it before the move's last call. The hardened
 * build's smi_os_grow_guarded (slots/os.c) then unmapped the old mapping
 * whole (its head and its two guard pages, and the body's old range with
 * them), and with it the other thread's new mapping. Here mremap is wrapped
 * (tests/CMakeLists.txt): right after the move, a page is mapped at the
 * body's old address, as the other thread's mmap would, and it must still be
 * mapped, its contents intact, once the realloc returns. A page mapped just
 * past the object's mapping keeps it from growing in place. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "alloc/internal.h"
#include "slots/os.h"

#define PAGE ((size_t)4096)

void *__real_mremap(void *old, size_t old_size, size_t new_size, int flags, ...);
static volatile bool plant_armed;
static void *planted;

/* The library's mremap: as the kernel's; once armed, a move that worked has
 * a page mapped at the address it left, with a mark in it. */
void *__wrap_mremap(void *old, size_t old_size, size_t new_size, int flags, ...) {
  void *dest = NULL;
  if (flags & MREMAP_FIXED) {
    va_list ap;
    va_start(ap, flags);
    dest = va_arg(ap, void *);
    va_end(ap);
  }
  void *q = __real_mremap(old, old_size, new_size, flags, dest);
  if (q != MAP_FAILED && q != old && plant_armed) {
    plant_armed = false;
    void *m = mmap(old, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (m == old) {
      memset(m, 0x5a, PAGE);
      planted = m;
    } else if (m != MAP_FAILED) {
      munmap(m, PAGE);
    }
  }
  return q;
}

/* Whether the page at p is mapped (mincore fails with ENOMEM on an unmapped one). */
static bool mapped(void *p) {
  unsigned char v;
  return mincore(p, PAGE, &v) == 0;
}

Test(review4, a_moved_large_object_unmaps_only_its_own_pages) {
  size_t size = (size_t)1 << 20;
  unsigned char *p = sm_malloc(size);
  cr_assert_not_null(p);
  memset(p, 0x33, size);
  smi_segment_t *seg = smi_large_of(p);
  cr_assert_not_null(seg, "a 1 MiB object is a large object");
  /* a page just past its mapping: it cannot grow in place */
  uint8_t *after = (uint8_t *)seg + seg->map_size;
  void *blocker = mmap(after, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (blocker != after) {
    if (blocker != MAP_FAILED) munmap(blocker, PAGE);
    cr_skip_test("the page past the object is taken");
  }
  planted = NULL;
  plant_armed = true;
  unsigned char *q = sm_realloc(p, 8 * size);
  plant_armed = false;
  cr_assert_not_null(q);
  cr_assert_neq(q, p, "the object did not move");
  for (size_t i = 0; i < size; i += 4093) cr_assert_eq(q[i], 0x33, "byte %zu lost in the move", i);
  cr_assert_not_null(planted, "no mapping could be put where the pages were");
  cr_assert(mapped(planted), "the mapping another thread made where the object's pages were (%p) was unmapped",
            planted);
  for (size_t i = 0; i < PAGE; i += 512) cr_assert_eq(((unsigned char *)planted)[i], 0x5a);
  munmap(planted, PAGE);
  munmap(blocker, PAGE);
  sm_free(q);
}

/* review4::every_cut_keeps_its_table_where_a_release_keeps_pages: the
 * generation table's place depends on the class and on the block's address
 * (its color, ee9114b and 9d8cd95: up to 63 lines below the block's end, and
 * up to 15 past the spare bytes). For every class, every block of its kind
 * and 256 segment addresses: the slots end below the table; the default
 * build's table has an entry for every multiple of the slot size in the block
 * (free's fast path has no bound check) and lies in the block's last two
 * pages, which a segment release keeps for the stale handles that read it;
 * the hardened build's lies in the block's first page (the one it keeps) and
 * its slots end before the guard page; no block has more slots than a handle
 * names (12 bits). */
Test(review4, every_cut_keeps_its_table_where_a_release_keeps_pages) {
  size_t layouts = 0;
  for (unsigned k = 0; k < 256; k++) {
    uintptr_t a = (uintptr_t)0x300000000000ull + (uintptr_t)(k * 7919u % 65536u) * SMI_SEG_SIZE;
    smi_segment_t *seg = mmap((void *)a, SMI_PAGE_SIZE, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (seg == MAP_FAILED) continue;
    if ((uintptr_t)seg != a) {
      munmap(seg, SMI_PAGE_SIZE);
      continue;
    }
    for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
      unsigned kind = smi_kind_of_class(cls);
      unsigned nb = kind == SMI_KIND_SMALL ? 63 : kind == SMI_KIND_MEDIUM ? 7 : 1;
      size_t size = smi_class_size[cls];
      for (unsigned i = 0; i < nb; i++) {
        smi_block_t *b = &seg->blocks[i];
        memset(b, 0, sizeof *b);
        b->index = (uint8_t)i;
        b->kind = (uint8_t)kind;
        smi_layout_t l = smi_block_layout(b, size);
        uint8_t *base = smi_block_base(b), *end = smi_block_end(b);
        cr_assert_leq(l.nslots, 4095u, "class %zu B: %zu slots", size, l.nslots);
        cr_assert_geq(l.nslots, 1u);
        cr_assert_geq(l.table, smi_gens_len(l.nslots));
        cr_assert_eq((uintptr_t)l.gens % 16, 0);
#ifdef SMI_HARDENED
        cr_assert_leq(l.gens + l.table, base + SMI_OS_PAGE, "class %zu B, block %u at %p: table ends %zu bytes in",
                      size, i, (void *)base, (size_t)(l.gens + l.table - base));
        cr_assert_geq(l.start, l.gens + l.table);
        cr_assert_leq(l.start + l.nslots * size, end - SMI_HD_GUARD);
#else
        size_t span = smi_block_span(b);
        cr_assert_geq(l.table, (span + size - 1) / size, "class %zu B: no entry for every multiple of it", size);
        cr_assert_leq(l.gens + l.table, end);
        cr_assert_leq((size_t)(end - l.gens), 2 * SMI_OS_PAGE,
                      "class %zu B, block %u at %p: table %zu bytes from the end", size, i, (void *)base,
                      (size_t)(end - l.gens));
        cr_assert_eq(l.start, base);
        cr_assert_leq(l.start + l.nslots * size, l.gens);
#endif
        layouts++;
      }
    }
    munmap(seg, SMI_PAGE_SIZE);
  }
  cr_assert_gt(layouts, 0u, "no segment address could be mapped");
}

/* review4::a_cached_large_object_being_resized_is_named_by_no_handle: a freed
 * large object waits in the cache, its tag in the id table 0 (no handle names
 * it). malloc takes it back for a larger request and resizes it first; when
 * the pages move (the mapping cannot grow in place), smi_large_resize
 * publishes the moved object's tag, which for a dead object read (epoch,
 * generation 2): until smi_large_revive gave it a new epoch, sm_deref of the
 * handle value with that tag returned the cached object (slotmalloc.h: NULL
 * for any value that names no live object) and sm_hfree freed it under the
 * malloc that was reviving it. smi_large_revive is wrapped: the check runs
 * right before it. */
bool __real_smi_large_revive(smi_segment_t *seg);
static volatile bool revive_armed;
static uint32_t revive_id;
static sm_handle_t revive_forged;
static void *revive_deref;
static int revive_seen;

bool __wrap_smi_large_revive(smi_segment_t *seg) {
  if (revive_armed && seg->id == revive_id) {
    revive_armed = false;
    revive_seen = 1;
    revive_deref = sm_deref(revive_forged);
  }
  return __real_smi_large_revive(seg);
}

/* The handle h with generation gen instead of its own (parity made odd again). */
static sm_handle_t with_gen(sm_handle_t h, unsigned gen) {
  uint64_t v = (h & ~((uint64_t)0xff << 1) & ~(uint64_t)1) | ((uint64_t)gen << 1);
  return v | (uint64_t)!__builtin_parityll(v);
}

Test(review4, a_cached_large_object_being_resized_is_named_by_no_handle) {
  size_t size = (size_t)1 << 20;
  unsigned char *p = sm_malloc(size);
  cr_assert_not_null(p);
  sm_handle_t h = sm_handle_of(p);
  cr_assert_neq(h, 0);
  smi_segment_t *seg = smi_large_of(p);
  cr_assert_not_null(seg);
  revive_id = seg->id;
  uint8_t *after = (uint8_t *)seg + seg->map_size; /* a page past its mapping: it cannot grow in place */
  void *blocker = mmap(after, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (blocker != after) {
    if (blocker != MAP_FAILED) munmap(blocker, PAGE);
    cr_skip_test("the page past the object is taken");
  }
  sm_free(p); /* into the cache */
  cr_assert_null(sm_deref(h));
  revive_forged = with_gen(h, 2);
  cr_assert_null(sm_deref(revive_forged));
  revive_seen = 0;
  revive_deref = NULL;
  revive_armed = true;
  unsigned char *q = sm_malloc(3 * size); /* the cached object, moved to grow */
  revive_armed = false;
  cr_assert_not_null(q);
  if (!revive_seen) {
    munmap(blocker, PAGE);
    sm_free(q);
    cr_skip_test("malloc did not take the cached object back");
  }
  cr_assert_null(revive_deref, "a handle value named the cached object while it was resized (%p, handle %#llx)",
                 revive_deref, (unsigned long long)revive_forged);
  cr_assert_null(sm_deref(h));
  cr_assert_null(sm_deref(revive_forged));
  munmap(blocker, PAGE);
  sm_free(q);
}
