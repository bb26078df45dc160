/* arena.c: arenas as views over slot blocks: the allocation slow path, block
 * switching, thread exit, and upkeep. The arena tree, closing and the other
 * user operations are in tree.c. */
#include <string.h>

#include "internal.h"
#include "check.h"
#include "slots/counters.h"
#include "slots/generation.h"
#include "slots/os.h"
#include "slots/valgrind.h"

#define ALL_EMPTY(n) [0 ...(n) - 1] = &smi_block_none
smi_block_t smi_block_none;
sm_arena_t smi_arena_none = {
    .direct = {ALL_EMPTY(SMI_DIRECT_BINS)}, .current = {ALL_EMPTY(SMI_CLASSES)}, .type = SMI_ARENA_NONE};
/* Statically complete, so statistics can be read before anything is allocated. */
sm_arena_t smi_orphans = {.direct = {ALL_EMPTY(SMI_DIRECT_BINS)},
                          .current = {ALL_EMPTY(SMI_CLASSES)},
                          .type = SMI_ARENA_ORPHANS,
                          .refs = 1};

void smi_arena_init(sm_arena_t *a, uint8_t type) {
  for (size_t i = 0; i < SMI_DIRECT_BINS; i++) a->direct[i] = &smi_block_none;
  for (size_t i = 0; i < SMI_CLASSES; i++) a->current[i] = &smi_block_none;
  a->type = type;
  if (SMI_VG_ON) a->limit = SIZE_MAX; /* valgrind build: every malloc and free takes the slow paths */
  atomic_store(&a->refs, 1);
  atomic_store(&a->state, SMI_ARENA_OPEN);
}

bool smi_arena_is_closed(const sm_arena_t *a) {
  return atomic_load_explicit(&a->state, memory_order_acquire) != SMI_ARENA_OPEN;
}

void smi_arena_after_fork(sm_arena_t *a, bool *mine) {
  if (!smi_lock_orphaned(&a->lock, mine)) return;
  size_t most = (size_t)smi_segment_ids_used() * SMI_PAGES_PER_SEG;
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) smi_blist_repair(&a->avail[cls], most);
  smi_blist_repair(&a->full, most);
  smi_segment_t *prev = NULL;
  for (smi_segment_t *g = a->large; g; prev = g, g = g->large_next) {
    if (!most--) {
      if (prev) prev->large_next = NULL;
      else a->large = NULL;
      break;
    }
    g->large_prev = prev;
  }
  /* A block both current and on a list was on its way to the list (its pin
   * already dropped): the list keeps it. The direct slots follow the current
   * blocks again. */
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    smi_block_t *cur = a->current[cls];
    if (cur != &smi_block_none && (smi_blist_holds(&a->full, cur) || smi_blist_holds(&a->avail[cls], cur)))
      cur = &smi_block_none;
    smi_arena_set_current(a, cls, cur);
  }
}

/* Points every direct slot of class cls at b (the class's current block). */
void smi_arena_set_current(sm_arena_t *a, unsigned cls, smi_block_t *b) {
  a->current[cls] = b;
  uint32_t size = smi_class_size[cls];
  if (size > SMI_DIRECT_MAX) return;
  smi_block_t *d = smi_direct_off(a) ? &smi_block_none : b; /* a cap, or profiling */
  for (size_t i = size >> 4; smi_direct_class[i] == cls; i--) {
    a->direct[i] = d;
    if (i == 0) break;
  }
}

static inline void *pop(smi_block_t *b) {
  if (SMI_HD_ON) return smi_hd_pop(b); /* the hardened build checks the link (NULL: it was bad) */
  smi_free_t *p = b->free;
  SMI_VG_LINK_OPEN(p);
  b->free = p->next;
  b->used++;
  smi_gen_make_live(p->gen);
  SMI_VG_BORN(p, b->size, 0);
  return p;
}

static bool has_room(smi_block_t *b) {
  if (b->retired && b->used == 0) return true; /* re-cut when taken */
  if (smi_block_draining(b)) return false;     /* wait until it is empty */
  return b->free || b->bump < b->nslots;
}

void smi_revisit_push(sm_arena_t *a, smi_block_t *b) {
  if (atomic_exchange_explicit(&b->queued, 1, memory_order_acq_rel)) return; /* on a stack already */
  smi_block_t *top = atomic_load_explicit(&a->revisit, memory_order_relaxed);
  do {
    b->revisit_next = top;
  } while (!atomic_compare_exchange_weak_explicit(&a->revisit, &top, b, memory_order_release, memory_order_relaxed));
}

/* Full blocks that other threads freed into come back to the avail lists
 * (under a->lock). */
static void revisit(sm_arena_t *a) {
  smi_block_t *f = atomic_exchange_explicit(&a->revisit, NULL, memory_order_acquire);
  while (f) {
    smi_block_t *next = f->revisit_next;
    atomic_store_explicit(&f->queued, 0, memory_order_release);
    if (f->arena == a && f->owner == smi_owner_full(a) && atomic_load_explicit(&f->remote, memory_order_relaxed)) {
      smi_block_collect(f);
      if (f->used == 0) { /* other threads freed all of it */
        smi_blist_remove(&a->full, f);
        smi_pool_give(f);
      } else if (has_room(f)) {
        smi_blist_remove(&a->full, f);
        __atomic_store_n(&f->owner, smi_owner_of(a), __ATOMIC_RELEASE);
        smi_blist_push_tail(&a->avail[f->cls], f);
      }
    }
    f = next;
  }
}

/* Another block for class cls: one of the arena's own, else from the pool. */
static smi_block_t *next_block(sm_arena_t *a, unsigned cls) {
  smi_block_t *b;
  smi_lock(&a->lock);
  revisit(a);
  while ((b = a->avail[cls].head) != NULL) {
    smi_blist_remove(&a->avail[cls], b);
    if (atomic_load_explicit(&b->remote, memory_order_relaxed)) smi_block_collect(b);
    if (has_room(b)) break;
    __atomic_store_n(&b->owner, smi_owner_full(a), __ATOMIC_SEQ_CST);
    /* A remote free that saw the untagged owner did not queue the block: check. */
    if (atomic_load_explicit(&b->remote, memory_order_seq_cst)) smi_revisit_push(a, b);
    smi_blist_push(&a->full, b);
  }
  smi_unlock(&a->lock);
  if (!b) b = smi_pool_take(a, cls);
  /* Empty, with many slots retired by generation wrap: re-cut it now (if its
   * epochs are used up it stays as it is, retired slots and all). */
  if (b && b->used == 0 && b->retired > b->nslots / 8) smi_block_format(b, cls);
  if (b) {
    __atomic_store_n(&b->arena, a, __ATOMIC_RELEASE);
    __atomic_store_n(&b->owner, smi_owner_of(a), __ATOMIC_RELEASE);
    if (a->type == SMI_ARENA_USER)
      __atomic_store_n(&b->flags, (uint8_t)(__atomic_load_n(&b->flags, __ATOMIC_RELAXED) | SMI_BLOCK_USER),
                       __ATOMIC_RELEASE);
    b->used++; /* the pin of the current block */
  }
  return b;
}

/* Takes the current block of cls out of service: it has no room left. */
static void current_to_full(sm_arena_t *a, unsigned cls, smi_block_t *b) {
  smi_lock(&a->lock);
  b->used--;
  __atomic_store_n(&b->owner, smi_owner_full(a), __ATOMIC_SEQ_CST);
  /* A remote free that saw the untagged owner did not queue the block: check. */
  if (atomic_load_explicit(&b->remote, memory_order_seq_cst)) smi_revisit_push(a, b);
  smi_blist_push(&a->full, b);
  smi_arena_set_current(a, cls, &smi_block_none);
  smi_unlock(&a->lock);
}

static void *alloc_from_class(sm_arena_t *a, unsigned cls) {
  smi_block_t *b = a->current[cls];
  for (;;) {
    if (b != &smi_block_none) {
      if (b->free) return pop(b);
      if (atomic_load_explicit(&b->remote, memory_order_relaxed) && smi_block_collect(b)) continue;
      if (!smi_block_draining(b) && smi_block_extend(b)) continue;
      if (!smi_block_draining(b) && smi_hd_unquarantine(b)) continue; /* hardened build: nothing else left */
      if (b->retired && b->used == 1 && smi_block_format(b, cls)) {
        b->used = 1; /* formatting cleared the pin */
        continue;
      }
      current_to_full(a, cls, b);
    }
    b = next_block(a, cls);
    if (!b) return NULL;
    smi_lock(&a->lock);
    smi_arena_set_current(a, cls, b);
    smi_check_class(a, cls);
    smi_unlock(&a->lock);
  }
}

/* The class for size bytes aligned to align (<= 64 KiB): a class whose size is
 * a multiple of align has slots aligned to it. SMI_CLASSES if none. */
static unsigned class_for(size_t size, size_t align) {
  if (size < align) size = align;
  if (size > SMI_SMALL_MAX) return SMI_CLASSES;
  unsigned cls = smi_class_of(size ? size : 1);
  if (align > 16)
    while (cls < SMI_CLASSES && smi_class_size[cls] % align) cls++;
  return cls;
}

/* Profiling keeps the direct bins empty (smi_direct_off): what the fast path
 * would have popped is popped here (NULL: take the whole slow path). */
static void *pop_profiled(sm_arena_t *a, size_t size, size_t align, bool zero) {
  if (size > SMI_DIRECT_MAX - SMI_HD_TAIL || align > 16 || a->limit || ((a->slow_calls + 1) & 255) == 0) return NULL;
  smi_block_t *b = a->current[smi_direct_class[(size + SMI_HD_TAIL + 15) >> 4]];
  if (!b->free) return NULL;
  a->slow_calls++;
  void *p = pop(b);
  if (zero) memset(p, 0, b->size);
  smi_hd_stamp_slot(p, size);
  return p;
}

void *smi_arena_alloc(sm_arena_t *a, size_t size, size_t align, bool zero) {
  if (smi_unlikely(smi_opt.prof_sample)) {
    void *p = pop_profiled(a, size, align, zero);
    if (p) {
      smi_prof_count(p, size, __builtin_return_address(0));
      return p;
    }
  }
  if (smi_unlikely(size > PTRDIFF_MAX)) {
    errno = ENOMEM;
    return NULL;
  }
  if (smi_unlikely((++a->slow_calls & 255) == 0)) {
    smi_arena_upkeep(a, false);
    smi_background_start();
  }
  if (smi_unlikely(smi_dismantle_waiting())) smi_dismantle(SMI_DISMANTLE_BATCH);
  smi_remote_flush();
  unsigned cls = align <= SMI_PAGE_SIZE ? class_for(size + SMI_HD_TAIL, align) : SMI_CLASSES;
  if (cls == SMI_CLASSES) {
    void *p = smi_large_malloc(a, size, align, zero); /* charges the cap itself */
    if (!p) errno = ENOMEM;
    else if (smi_unlikely(smi_opt.prof_sample)) smi_prof_count(p, size, __builtin_return_address(0));
    return p;
  }
  size_t usable = smi_class_size[cls];
  if (smi_unlikely(a->limit) && !smi_arena_charge(a, usable)) {
    errno = ENOMEM;
    return NULL;
  }
  void *p = alloc_from_class(a, cls);
  if (smi_unlikely(!p)) {
    if (a->limit) smi_arena_uncharge(a, usable);
    errno = ENOMEM;
    return NULL;
  }
  if (zero) memset(p, 0, usable);
  smi_hd_stamp_slot(p, size); /* hardened build: the canary past size bytes */
  if (smi_unlikely(smi_opt.prof_sample)) smi_prof_count(p, size, __builtin_return_address(0));
  return p;
}

bool smi_arena_charge(sm_arena_t *a, size_t bytes) {
  size_t now = atomic_fetch_add(&a->limited_bytes, bytes) + bytes;
  if (now <= a->limit) return true;
  atomic_fetch_sub(&a->limited_bytes, bytes);
  return false;
}

void smi_arena_uncharge(sm_arena_t *a, size_t bytes) { atomic_fetch_sub(&a->limited_bytes, bytes); }

sm_arena_t *smi_arena_current(void) {
  sm_arena_t *a = smi_tls_cur;
  if (smi_likely(a != &smi_arena_none && !smi_arena_is_closed(a))) return a;
  /* the thread's first call (its heap is set up), or the entered arena was closed */
  a = smi_root_arena();
  if (a) smi_tls_cur = a;
  return a;
}

/* Slow calls are counted per thread and added to the process count 64 at a
 * time (and at thread exit, and when the statistics are read): one shared
 * atomic per slow call would make threads contend for its cache line. */
static __thread uint32_t slow_calls_pending;
void smi_slow_calls_flush(void) {
  smi_count(SMI_COUNT_SLOW_CALLS, slow_calls_pending);
  slow_calls_pending = 0;
}

void *smi_malloc_generic(sm_arena_t *a, size_t size, bool zero) {
  if (smi_unlikely(++slow_calls_pending == 64)) smi_slow_calls_flush();
  if (smi_unlikely(a == &smi_arena_none || smi_arena_is_closed(a)) && !(a = smi_arena_current())) {
    errno = ENOMEM;
    return NULL;
  }
  return smi_arena_alloc(a, size, 16, zero);
}

void *smi_malloc_miss(size_t size) { return smi_malloc_generic(smi_tls_cur, size, false); }

/* ---- upkeep and thread exit ------------------------------------------------- */

void smi_block_emptied(smi_block_t *b) {
  sm_arena_t *a = smi_owner_arena(__atomic_load_n(&b->owner, __ATOMIC_RELAXED));
  if (!a) return;
  smi_lock(&a->lock);
  /* Under the lock: a block of a's, not current, not full, is on its avail list. */
  bool give = b->owner == a && b->arena == a && b->used == 0 && a->current[b->cls] != b;
  if (give) smi_blist_remove(&a->avail[b->cls], b);
  smi_unlock(&a->lock);
  if (give) {
    smi_pool_give(b);
    smi_background_start();
  }
}

/* Empty blocks an arena holds beyond its current ones go back to the pool. */
void smi_arena_upkeep(sm_arena_t *a, bool force) {
  uint64_t now = smi_now_ms();
  if (!force && now - a->last_upkeep_ms < smi_opt.purge_delay_ms / 4 + 1) return;
  a->last_upkeep_ms = now;
  smi_lock(&a->lock);
  revisit(a);
  smi_check_arena(a, true);
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    for (smi_block_t *b = a->avail[cls].head, *next; b; b = next) {
      next = b->next;
      if (atomic_load_explicit(&b->remote, memory_order_relaxed)) smi_block_collect(b);
      if (b->used == 0) {
        smi_blist_remove(&a->avail[cls], b);
        smi_pool_give(b);
      }
    }
  }
  smi_unlock(&a->lock);
  smi_dismantle(8);
  smi_pool_upkeep(false);
}

void smi_arena_trim(sm_arena_t *a) {
  if (a == &smi_arena_none || smi_arena_is_closed(a)) return;
  smi_arena_upkeep(a, true);
  smi_lock(&a->lock);
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    smi_block_t *b = a->current[cls];
    if (b == &smi_block_none) continue;
    if (atomic_load_explicit(&b->remote, memory_order_relaxed)) smi_block_collect(b);
    if (b->used != 1) continue; /* objects live in it (beside the pin) */
    smi_arena_set_current(a, cls, &smi_block_none);
    b->used = 0;
    smi_pool_give(b);
  }
  smi_unlock(&a->lock);
}

/* A block leaves an arena whose thread ends: back to the pool if empty, else
 * abandoned with its objects (frees into it then take the atomic path). */
static void leave(smi_block_t *b) {
  __atomic_store_n(&b->owner, NULL, __ATOMIC_SEQ_CST);
  smi_block_collect(b);
  if (b->used == 0) smi_pool_give(b);
  else smi_pool_abandon(b);
}

void smi_arena_abandon_all(sm_arena_t *a) {
  smi_lock(&a->lock);
  revisit(a);
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    smi_block_t *b = a->current[cls];
    if (b != &smi_block_none) {
      b->used--;
      smi_arena_set_current(a, cls, &smi_block_none);
      leave(b);
    }
    while ((b = a->avail[cls].head) != NULL) {
      smi_blist_remove(&a->avail[cls], b);
      leave(b);
    }
  }
  smi_block_t *b;
  while ((b = a->full.head) != NULL) {
    smi_blist_remove(&a->full, b);
    leave(b);
  }
  /* Large objects outlive the thread in the orphans arena; both locks are held
   * so a free under way finds each one in exactly one list. */
  smi_segment_t *large = a->large;
  a->large = NULL;
  smi_lock(&smi_orphans.lock);
  while (large) {
    smi_segment_t *next = large->large_next;
    __atomic_store_n(&large->large_arena, &smi_orphans, __ATOMIC_RELEASE);
    smi_large_list_add(&smi_orphans, large);
    large = next;
  }
  smi_unlock(&smi_orphans.lock);
  smi_unlock(&a->lock);
}
