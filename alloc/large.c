/* large.c: objects larger than the largest slot. Each has a segment of its
 * own, mapped directly, with one generation. Freed ones wait in a small cache
 * (they are reused for objects of similar size) and are unmapped after the
 * purge delay or when the cache is full. */
#include <errno.h>
#include <string.h>

#include "internal.h"
#include "slots/os.h"
#include "slots/valgrind.h"

static smi_lock_t cache_lock = SMI_LOCK_INIT;
static smi_segment_t *cache; /* linked through large_next */
static size_t cache_bytes;
static uint64_t cache_stamp; /* when the last object entered the cache */

/* In a fork child: if a thread the child does not have was changing the
 * cache, forget it (its segments stay mapped, unused). */
void smi_large_after_fork(bool *mine) {
  if (!smi_lock_orphaned(&cache_lock, mine)) return;
  cache = NULL;
  cache_bytes = 0;
}

void smi_large_list_add(sm_arena_t *a, smi_segment_t *seg) {
  seg->large_prev = NULL;
  seg->large_next = a->large;
  if (a->large) a->large->large_prev = seg;
  a->large = seg;
}

void smi_large_list_remove(sm_arena_t *a, smi_segment_t *seg) {
  if (seg->large_prev) seg->large_prev->large_next = seg->large_next;
  else a->large = seg->large_next;
  if (seg->large_next) seg->large_next->large_prev = seg->large_prev;
  seg->large_next = seg->large_prev = NULL;
}

smi_segment_t *smi_large_of(const void *p) {
  uintptr_t u = (uintptr_t)p;
  unsigned m = smi_map_of(u);
  smi_segment_t *seg;
  if (m == SMI_MAP_LARGE) seg = smi_segment_at(u);
  else if (m == SMI_MAP_LARGE_BACK) seg = (smi_segment_t *)((uintptr_t)smi_segment_at(u) - SMI_SEG_SIZE);
  else return NULL;
  return seg->large_obj == (const uint8_t *)p ? seg : NULL;
}

/* The one way a large object dies: its tag in smi_segtab goes from live to 0,
 * once. Whoever wins that exchange owns the segment's disposal. */
static bool kill_tag(smi_segment_t *seg, uint64_t tag) {
  if (!tag || !atomic_compare_exchange_strong(&smi_segtab[seg->id].large_tag, &tag, 0)) return false;
  __atomic_store_n(&seg->large_gen, 2, __ATOMIC_RELAXED);
  SMI_VG_DIED(seg->large_obj);
  return true;
}

bool smi_large_try_kill(smi_segment_t *seg) { return kill_tag(seg, smi_large_tag(seg)); }

/* Locks the arena the large object belongs to (it may move under a merge or a
 * thread exit meanwhile); NULL if it belongs to none (closed). */
static sm_arena_t *lock_owner(smi_segment_t *seg) {
  for (;;) {
    sm_arena_t *a = __atomic_load_n(&seg->large_arena, __ATOMIC_ACQUIRE);
    if (!a) return NULL;
    smi_lock(&a->lock);
    if (seg->large_arena == a) return a;
    smi_unlock(&a->lock);
  }
}

/* After the kill: out of its arena's list, then cached or unmapped. */
static void dispose(smi_segment_t *seg) {
  sm_arena_t *a = lock_owner(seg);
  if (a) {
    smi_large_list_remove(a, seg);
    seg->large_arena = NULL;
    /* under the lock: a first cap set meanwhile counts the arena without it */
    if (a->limit) atomic_fetch_sub(&a->limited_bytes, seg->large_size);
    smi_unlock(&a->lock);
  }
  smi_large_free_dead(seg);
}

bool smi_large_hfree(uint32_t id, uint64_t tag) {
  smi_segment_t *seg = atomic_load_explicit(&smi_segtab[id].seg, memory_order_acquire);
  /* tag 0 is a dead object's: a forged handle carrying it must not match */
  if (!seg || !tag || !atomic_compare_exchange_strong(&smi_segtab[id].large_tag, &tag, 0)) return false;
  /* Ours now: nobody else disposes of it, so its header stays mapped. */
  seg = atomic_load_explicit(&smi_segtab[id].seg, memory_order_acquire);
  __atomic_store_n(&seg->large_gen, 2, __ATOMIC_RELAXED);
  SMI_VG_DIED(seg->large_obj);
  dispose(seg);
  return true;
}

/* A cached segment that fits size bytes at alignment align without wasting
 * more than half of it. */
static smi_segment_t *cache_take(size_t size, size_t align) {
  if (!__atomic_load_n(&cache, __ATOMIC_RELAXED)) return NULL;
  smi_lock(&cache_lock);
  smi_segment_t **best = NULL;
  for (smi_segment_t **s = &cache; *s; s = &(*s)->large_next) {
    smi_segment_t *c = *s;
    size_t room = smi_large_room(c);
    if ((uintptr_t)c->large_obj & (align - 1)) continue;
    /* the best fit among those big enough, else the biggest (resized after) */
    size_t broom = best ? smi_large_room(*best) : 0;
    if (!best || (room >= size ? (broom < size || room < broom) : (broom < size && room > broom))) best = s;
  }
  smi_segment_t *c = NULL;
  if (best) {
    c = *best;
    __atomic_store_n(best, c->large_next, __ATOMIC_RELAXED);
    cache_bytes -= c->map_size;
  }
  smi_unlock(&cache_lock);
  return c;
}

void *smi_large_malloc(sm_arena_t *a, size_t size, size_t align, bool zero) {
  /* A success leaves errno as it found it: a resize of a cached object (an
   * mremap that cannot grow in place) or a mapping that worked only after the
   * reclaim set it on the way. */
  int saved_errno = errno;
  if (align < 16) align = 16;
  if (size == 0) size = 1; /* the object starts inside its mapping, not at its end */
  smi_segment_t *seg = cache_take(size, align);
  if (seg) {
    /* The object is aligned to align already; a resize that moves it must keep that. */
    if (align > seg->large_align) seg->large_align = align;
    size_t room = smi_large_room(seg);
    SMI_VG_DEFINED(&seg->large_obj, sizeof seg->large_obj); /* hidden again below: the segment may move */
    /* (the hardened build's resize only shrinks, its guard pages split the
     * mapping: one too small is unmapped) */
    /* under a byte cap, which counts the whole mapping, only an exact fit */
    bool fits = a->limit ? room == smi_large_room_for(seg, size) : room >= size && room / 2 <= size + SMI_OS_PAGE;
    if (!fits && !smi_large_resize(&seg, size, a->limit != 0)) {
      smi_large_unmap(seg);
      seg = NULL;
    }
  }
  if (seg && !smi_large_revive(seg)) { /* no new tag for it: a new mapping */
    smi_large_unmap(seg);
    seg = NULL;
  }
  if (seg) {
    seg->large_size = smi_large_room(seg);
    SMI_VG_UNDEFINED(seg->large_obj, seg->large_size); /* dead until born below: writable for the memset */
    if (zero) memset(seg->large_obj, 0, size);
  } else {
    seg = smi_large_new(size, align);
    if (!seg) { /* before ENOMEM: give back everything empty, then try again */
      smi_pool_reclaim(a);
      seg = smi_large_new(size, align);
    }
    if (!seg) return NULL;
    /* calloc of a fresh mapping: its pages read as zero already, and the
     * ones the program never touches stay unmapped (a table used sparsely;
     * tests/test_kernel.c). Mapping them writable at once (MADV_POPULATE_WRITE)
     * saves a program that reads before it writes the second fault a page
     * (build/perf/stress: 374k -> 355k faults), but makes a sparse table
     * resident whole, as under mimalloc and tcmalloc: not done. */
  }
  /* the cap counts the whole mapping; charged under the lock that adds it to
   * the arena, which a first cap's count of the arena takes */
  smi_lock(&a->lock);
  if (a->limit && !smi_arena_charge(a, seg->large_size)) {
    smi_unlock(&a->lock);
    smi_large_kill(seg);
    smi_large_free_dead(seg);
    return NULL;
  }
  seg->large_arena = a;
  smi_large_list_add(a, seg);
  smi_unlock(&a->lock);
  /* the two words that point at it, hidden from memcheck's leak scan (the
   * segment or its id may be new) */
  SMI_VG_HIDE(&seg->large_obj, sizeof seg->large_obj);
  SMI_VG_HIDE(&smi_segtab[seg->id].large_obj, sizeof seg->large_obj);
  SMI_VG_BORN(seg->large_obj, seg->large_size, zero);
  errno = saved_errno;
  return seg->large_obj;
}

void smi_large_free_dead(smi_segment_t *seg) {
  seg->large_arena = NULL;
  if (seg->map_size <= smi_opt.large_cache / 2) {
    smi_lock(&cache_lock);
    if (cache_bytes + seg->map_size <= smi_opt.large_cache) {
      seg->large_next = cache;
      __atomic_store_n(&cache, seg, __ATOMIC_RELAXED);
      cache_bytes += seg->map_size;
      __atomic_store_n(&cache_stamp, smi_now_ms(), __ATOMIC_RELAXED);
      seg = NULL;
    }
    smi_unlock(&cache_lock);
    if (!seg) return;
  }
  smi_large_unmap(seg);
}

static bool free_if_live(smi_segment_t *seg) {
  if (!smi_large_try_kill(seg)) return false;
  dispose(seg);
  return true;
}

void smi_large_free(smi_segment_t *seg, void *p) {
  if (!free_if_live(seg)) smi_report(SMI_ERR_DOUBLE_FREE, p, seg->large_size);
}

void *smi_large_realloc(smi_segment_t *seg, size_t size, bool *dead) {
  *dead = false;
  int saved_errno = errno; /* a resize in place that fails is no error: the caller moves the object */
  sm_arena_t *a = lock_owner(seg);
  if (!a || seg->large_gen != 1) { /* closed or freed meanwhile */
    if (a) smi_unlock(&a->lock);
    *dead = true;
    return NULL;
  }
  /* the valgrind build has the caller move it, telling memcheck as for any
   * move; the hardened build resizes it too, its guard pages made anew
   * (smi_large_resize) */
  if (SMI_VG_ON) {
    smi_unlock(&a->lock);
    return NULL;
  }
  /* Under a byte cap the growth is charged before it is made, and exactly (no
   * room for the next one): a move would count the old and the new object at
   * once. The lock keeps the cap from changing meanwhile. */
  size_t was = seg->large_size, charged = 0;
  if (a->limit && size > was) {
    charged = smi_large_room_for(seg, size) - was;
    if (!smi_arena_charge(a, charged)) { /* (a move fails too, unless it leaves the arena) */
      smi_unlock(&a->lock);
      return NULL;
    }
  }
  uint8_t *before = seg->large_obj;
  smi_segment_t *moved = seg;
  void *q = smi_large_resize(&moved, size, a->limit != 0);
  if (q && moved != seg) {
    /* The pages moved: relink, and the old handle goes stale with the old address. */
    if (moved->large_prev) moved->large_prev->large_next = moved;
    else a->large = moved;
    if (moved->large_next) moved->large_next->large_prev = moved;
    smi_large_revive(moved); /* (false: the old handle keeps naming it, moved) */
  } else if (q && (uint8_t *)q != before) {
    smi_large_revive(moved);
  }
  if (a->limit) { /* settle the charge: what it took, or what a shrink gave back */
    size_t now = q ? moved->large_size : was;
    if (now < was + charged) smi_arena_uncharge(a, was + charged - now);
  }
  smi_unlock(&a->lock);
  errno = saved_errno;
  return q;
}

void smi_large_cache_upkeep(bool force) {
  uint64_t now = smi_now_ms();
  if (!__atomic_load_n(&cache, __ATOMIC_RELAXED) ||
      (!force && now - __atomic_load_n(&cache_stamp, __ATOMIC_RELAXED) < smi_opt.purge_delay_ms))
    return;
  smi_lock(&cache_lock);
  smi_segment_t *all = cache;
  __atomic_store_n(&cache, NULL, __ATOMIC_RELAXED);
  cache_bytes = 0;
  smi_unlock(&cache_lock);
  while (all) {
    smi_segment_t *next = all->large_next;
    smi_large_unmap(all);
    all = next;
  }
}
