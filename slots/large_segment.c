/* large_segment.c: segments of one large object each (objects past the
 * largest slot): mapped directly, the object after a header page at the
 * alignment asked for; its generation and the epoch of its id are kept in the
 * id table too, so a handle is checked without reading the segment (which may
 * be unmapped at any moment). */
#include "large_segment.h"

#include "counters.h"
#include "harden.h"
#include "os.h"

#define LARGE_HEADER ((size_t)4096)

/* The bytes mapped for large objects, cached ones included (the pool's
 * estimate of what the process holds: alloc/pool.c). */
static _Atomic size_t mapped;
size_t smi_large_mapped(void) { return atomic_load_explicit(&mapped, memory_order_relaxed); }
static void set_map_size(smi_segment_t *seg, size_t was, size_t now) {
  atomic_fetch_add_explicit(&mapped, now - was, memory_order_relaxed);
  seg->map_size = now;
}

static size_t offset_for(size_t align) {
  /* The object follows the header page, at an address that is a multiple of
   * align; 4 MiB and larger alignments put it one 4 MiB span past the header. */
  if (align <= LARGE_HEADER) return LARGE_HEADER + SMI_HD_GUARD; /* hardened: a guard page between */
  if (align < SMI_SEG_SIZE) return align;
  return SMI_SEG_SIZE;
}

static void large_map_set(smi_segment_t *seg, uint8_t head) {
  uintptr_t first = (uintptr_t)seg >> SMI_SEG_SHIFT;
  uintptr_t last = ((uintptr_t)seg + seg->map_size - 1) >> SMI_SEG_SHIFT;
  uintptr_t obj = (uintptr_t)seg->large_obj >> SMI_SEG_SHIFT;
  for (uintptr_t i = last; i > first; i--)
    __atomic_store_n(&smi_segmap[i],
                     head == SMI_MAP_NONE ? SMI_MAP_NONE : (i == obj ? SMI_MAP_LARGE_BACK : SMI_MAP_INTERIOR),
                     __ATOMIC_RELEASE);
  __atomic_store_n(&smi_segmap[first], head, __ATOMIC_RELEASE);
}

/* A dead object (a cached one that malloc resizes before it revives it)
 * publishes tag 0: no handle names it (its tag read generation 2). */
static void large_publish(smi_segment_t *seg) {
  smi_segslot_t *slot = &smi_segtab[seg->id];
  atomic_store_explicit(&slot->large_obj, seg->large_obj, memory_order_relaxed);
  atomic_store_explicit(&slot->large_tag, seg->large_gen == 1 ? smi_large_tag(seg) : 0, memory_order_release);
}

smi_segment_t *smi_large_new(size_t size, size_t align) {
  if (align < 16) align = 16;
  size_t off = offset_for(align);
  if (size > ((size_t)1 << SMI_ADDR_BITS) - off - SMI_SEG_SIZE) return NULL;
  size_t map = ((off + size + SMI_OS_PAGE - 1) & ~(SMI_OS_PAGE - 1)) + SMI_HD_GUARD;
  /* Align the header to 4 MiB and, for alignments past 4 MiB, the object to align. */
  smi_segment_t *seg =
      align > SMI_SEG_SIZE ? smi_os_map_offset_aligned(map, align, off) : smi_os_map_aligned(map, SMI_SEG_SIZE);
  if (!seg) return NULL;
  uint32_t id = smi_segmap_ready(seg, map) ? smi_id_take(true) : 0;
  if (!id) {
    smi_os_unmap(seg, map);
    return NULL;
  }
  seg->id = id;
  smi_segtab[id].is_large = 1;
  seg->kind = SMI_KIND_LARGE;
  set_map_size(seg, 0, map);
  seg->large_obj = (uint8_t *)seg + off;
  seg->large_size = map - off - SMI_HD_GUARD;
  seg->large_align = align;
  if (SMI_HD_ON) { /* the hardened build: a guard page on each side of the object */
    smi_os_guard(seg->large_obj - SMI_HD_GUARD, SMI_HD_GUARD);
    smi_os_guard((uint8_t *)seg + map - SMI_HD_GUARD, SMI_HD_GUARD);
  }
  smi_segtab[id].epoch++;
  seg->large_gen = 1;
  atomic_store_explicit(&smi_segtab[id].seg, seg, memory_order_release);
  large_publish(seg);
  large_map_set(seg, SMI_MAP_LARGE);
  smi_count(SMI_COUNT_LARGE_MAPPED, 1);
  return seg;
}

void smi_large_kill(smi_segment_t *seg) {
  atomic_store_explicit(&smi_segtab[seg->id].large_tag, 0, memory_order_release);
  seg->large_gen = 2;
}

bool smi_large_revive(smi_segment_t *seg) {
  smi_segslot_t *slot = &smi_segtab[seg->id];
  if (slot->epoch + 1 < SMI_EPOCH_LIMIT) slot->epoch++;
  else {
    /* The id's epochs are used up: take a fresh id. (Without one it came
     * back under its last tag, and that life's stale handles named the new
     * object: test_oom_sweep's epochs.) */
    uint32_t id = smi_id_take(true);
    if (!id) return false;
    atomic_store_explicit(&slot->seg, NULL, memory_order_release);
    seg->id = id;
    slot = &smi_segtab[id];
    slot->is_large = 1;
    slot->epoch++;
    atomic_store_explicit(&slot->seg, seg, memory_order_release);
  }
  seg->large_gen = 1;
  large_publish(seg);
  return true;
}

void smi_large_unmap(smi_segment_t *seg) {
  uint32_t id = seg->id;
  smi_large_kill(seg);
  large_map_set(seg, SMI_MAP_NONE);
  atomic_store_explicit(&smi_segtab[id].seg, NULL, memory_order_release);
  atomic_fetch_sub_explicit(&mapped, seg->map_size, memory_order_relaxed);
  smi_os_unmap(seg, seg->map_size);
  smi_id_give_back(id);
}

size_t smi_large_room_for(const smi_segment_t *seg, size_t size) {
  size_t off = smi_large_offset(seg);
  return ((off + size + SMI_OS_PAGE - 1) & ~(SMI_OS_PAGE - 1)) - off;
}

void *smi_large_resize(smi_segment_t **segp, size_t size, bool exact) {
  smi_segment_t *seg = *segp;
  size_t off = smi_large_offset(seg);
  if (size > ((size_t)1 << SMI_ADDR_BITS) - off - SMI_SEG_SIZE) return NULL;
  size_t map = ((off + size + SMI_OS_PAGE - 1) & ~(SMI_OS_PAGE - 1)) + SMI_HD_GUARD;
  if (map <= seg->map_size) {
    if (map < seg->map_size / 2 || (exact && map < seg->map_size)) { /* give back the tail when it is most of it */
      large_map_set(seg, SMI_MAP_NONE);
      smi_os_shrink(seg, seg->map_size, map);
      smi_os_guard((uint8_t *)seg + map - SMI_HD_GUARD, SMI_HD_GUARD); /* hardened: the new trailing guard page */
      set_map_size(seg, seg->map_size, map);
      large_map_set(seg, SMI_MAP_LARGE);
    }
    seg->large_size = smi_large_room(seg);
    return seg->large_obj;
  }
#ifdef SMI_HARDENED
  /* Its guard pages split the mapping, which mremap does not take as one: the
   * body grows past its trailing guard, or the head and the body move
   * (smi_os_grow_guarded). An object aligned past 4 MiB stays as it is. */
  if (seg->large_align > SMI_SEG_SIZE) return NULL;
  size_t grown = exact ? map : (map + map / 4 + SMI_OS_PAGE - 1) & ~(SMI_OS_PAGE - 1); /* room for the next growth */
  large_map_set(seg, SMI_MAP_NONE);
  smi_segment_t *moved =
      smi_os_grow_guarded(seg, seg->map_size, grown, off, SMI_HD_GUARD, SMI_SEG_SIZE, smi_segmap_ready);
  if (!moved) {
    large_map_set(seg, SMI_MAP_LARGE);
    return NULL;
  }
  set_map_size(moved, moved->map_size, grown); /* (its header moved with it) */
  moved->large_obj = (uint8_t *)moved + off;
  moved->large_size = smi_large_room(moved);
  if (moved != seg) {
    atomic_store_explicit(&smi_segtab[moved->id].seg, moved, memory_order_release);
    large_publish(moved);
  }
  large_map_set(moved, SMI_MAP_LARGE);
  *segp = moved;
  return moved->large_obj;
#else
  /* Grow: in place if the pages after it are free, else move the pages (no copy). */
  size_t grown = exact ? map : (map + map / 4 + SMI_OS_PAGE - 1) & ~(SMI_OS_PAGE - 1); /* room for the next growth */
  if ((smi_segmap_ready(seg, grown) && smi_os_grow_in_place(seg, seg->map_size, grown)) ||
      (smi_segmap_ready(seg, map) && smi_os_grow_in_place(seg, seg->map_size, grown = map))) {
    set_map_size(seg, seg->map_size, grown);
    seg->large_size = grown - off;
    large_map_set(seg, SMI_MAP_LARGE);
    return seg->large_obj;
  }
  size_t align = seg->large_align > SMI_SEG_SIZE ? seg->large_align : SMI_SEG_SIZE;
  size_t aoff = seg->large_align > SMI_SEG_SIZE ? off : 0;
  large_map_set(seg, SMI_MAP_NONE);
  smi_segment_t *moved = smi_os_move(seg, seg->map_size, grown, align, aoff, smi_segmap_ready);
  if (!moved) {
    large_map_set(seg, SMI_MAP_LARGE);
    return NULL;
  }
  set_map_size(moved, moved->map_size, grown); /* (its header moved with it) */
  moved->large_obj = (uint8_t *)moved + off;
  moved->large_size = grown - off;
  atomic_store_explicit(&smi_segtab[moved->id].seg, moved, memory_order_release);
  large_publish(moved);
  large_map_set(moved, SMI_MAP_LARGE);
  *segp = moved;
  return moved->large_obj;
#endif
}
