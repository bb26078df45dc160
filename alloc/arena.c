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

/* In a fork child, a revisit of a's (revisit, below) that was under way on a
 * thread the child does not have (a foreign smi_arena_reclaim, or a's own
 * thread): the blocks it had not reached are still queued but on no stack,
 * so no remote free would queue them again and their remote frees would
 * never be collected. They go back on the stack, and so does the block it
 * was at if its flag is clear (set, it is on the stack again, or a remote
 * free owns its push; or, for one instruction of revisit, the flag was not
 * cleared yet: that block waits for the next remote free into it). */
static void revisit_after_fork(sm_arena_t *a, size_t most) {
  smi_block_t *f = a->revisit_rest, *at = a->revisit_at;
  a->revisit_rest = a->revisit_at = NULL;
  for (; f && most; most--) {
    smi_block_t *next = f->revisit_next;
    atomic_store_explicit(&f->queued, 0, memory_order_relaxed);
    if (f->arena == a && f->owner == smi_owner_full(a)) smi_revisit_push(a, f);
    f = next;
  }
  if (at && at->arena == a && at->owner == smi_owner_full(a) &&
      !atomic_load_explicit(&at->queued, memory_order_relaxed))
    smi_revisit_push(a, at);
}

/* The block this thread is linking onto a revisit stack (for a fork child:
 * see smi_revisit_fork_mark). */
static __thread smi_block_t *pushing;

/* ---- a fork between a push's flag and its link ----------------------------------
 * smi_revisit_push flags the block queued, then links it onto the stack. In a
 * fork child that lacks a thread stopped between the two, the block is
 * flagged but on no stack: no remote free queues it again, and its remote
 * frees would never be collected. So the child first marks every flagged
 * block unseen, each arena's repair sees the blocks on its stack (a vanished
 * revisit's rest is pushed back first), and the blocks left unseen are
 * queued again on their owner's stack, or unflagged. Left alone: the block of the forking
 * thread's own push (a fork from a signal handler inside it finishes that
 * push when the handler returns), and every block when the fork interrupted
 * the forking thread inside an allocator lock (a revisit or a drain of its
 * own then holds blocks off their stack, flagged, until it resumes). */
static void mark_unseen(smi_block_t *b) {
  uint8_t q = SMI_QUEUED;
  atomic_compare_exchange_strong_explicit(&b->queued, &q, SMI_QUEUED_UNSEEN, memory_order_relaxed,
                                          memory_order_relaxed);
}

void smi_revisit_fork_mark(void) { smi_blocks_each(mark_unseen); }

/* In a's repair: the blocks on its stack are seen (at most `most` of them). */
static void see_stacked(sm_arena_t *a, size_t most) {
  for (smi_block_t *f = atomic_load_explicit(&a->revisit, memory_order_relaxed); f && most;
       f = f->revisit_next, most--)
    atomic_store_explicit(&f->queued, SMI_QUEUED, memory_order_relaxed);
}

static bool requeue_mine;             /* the fork interrupted the forking thread inside an allocator lock */
static smi_block_t *requeue_own_push; /* the forking thread's push under way (its pushing) */

static void requeue_unseen(smi_block_t *b) {
  if (atomic_load_explicit(&b->queued, memory_order_relaxed) != SMI_QUEUED_UNSEEN) return;
  atomic_store_explicit(&b->queued, SMI_QUEUED, memory_order_relaxed);
  if (requeue_mine || b == requeue_own_push) return;
  atomic_store_explicit(&b->queued, 0, memory_order_relaxed);
  sm_arena_t *owner = b->owner;
  if (smi_owner_is_full(owner) && atomic_load_explicit(&b->remote, memory_order_relaxed))
    smi_revisit_push(smi_owner_arena(owner), b);
}

void smi_revisit_fork_requeue(bool mine) {
  requeue_mine = mine;
  requeue_own_push = pushing;
  smi_blocks_each(requeue_unseen); /* (its pushes set and clear pushing) */
  pushing = requeue_own_push;
}

void smi_arena_after_fork(sm_arena_t *a, bool *mine) {
  size_t most = (size_t)smi_segment_ids_used() * SMI_PAGES_PER_SEG;
  if (!smi_lock_orphaned(&a->lock, mine)) {
    see_stacked(a, most);
    return;
  }
  revisit_after_fork(a, most);
  see_stacked(a, most);
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
  smi_free_t *next = p->next;
  b->free = next;
  smi_prefetch_slot(next); /* as smi_malloc: the class's next pop reads its link and generation pointer */
  b->used++;
  smi_gen_make_live(p->gen);
  SMI_VG_BORN(p, b->size, 0);
  return p;
}

static bool has_room(smi_block_t *b) {
  if (b->retired && b->used == 0) return true; /* re-cut when taken */
  if (smi_block_draining(b)) return false;     /* wait until it is empty */
  /* (the hardened build: or slots in its quarantine) */
  return b->free || b->bump < b->nslots || smi_hd_pending(b);
}

void smi_revisit_push(sm_arena_t *a, smi_block_t *b) {
  __atomic_store_n(&pushing, b, __ATOMIC_RELAXED);
  atomic_signal_fence(memory_order_seq_cst); /* set before the flag, for a fork from a signal handler */
  if (!atomic_exchange_explicit(&b->queued, SMI_QUEUED, memory_order_acq_rel)) { /* else on a stack already */
    smi_block_t *top = atomic_load_explicit(&a->revisit, memory_order_relaxed);
    do {
      b->revisit_next = top;
    } while (
        !atomic_compare_exchange_weak_explicit(&a->revisit, &top, b, memory_order_release, memory_order_relaxed));
  }
  atomic_signal_fence(memory_order_seq_cst);
  __atomic_store_n(&pushing, NULL, __ATOMIC_RELAXED);
}

/* Full blocks that other threads freed into come back to the avail lists
 * (under a->lock), on a's thread or on another (smi_arena_reclaim): the
 * owner's frees into its full blocks take the lock too (free.c). The blocks
 * taken off the stack wait in a->revisit_rest, still queued (so no remote
 * free pushes them again, and their links hold), and a->revisit_at is the
 * one looked at: a fork child that lacks this thread queues them again
 * (revisit_after_fork). */
static void revisit(sm_arena_t *a) {
  if (!atomic_load_explicit(&a->revisit, memory_order_relaxed)) return; /* (no locked instruction then) */
  smi_block_t *f = atomic_exchange_explicit(&a->revisit, NULL, memory_order_acquire);
  __atomic_store_n(&a->revisit_rest, f, __ATOMIC_RELEASE);
  while ((f = a->revisit_rest) != NULL) {
    __atomic_store_n(&a->revisit_at, f, __ATOMIC_RELAXED);
    __atomic_store_n(&a->revisit_rest, f->revisit_next, __ATOMIC_RELEASE); /* before the flag lets it be pushed */
    /* a remote free that finds the flag set does not queue the block: it
     * pushed onto the remote list first, and one of the two sees the other */
    atomic_store_explicit(&f->queued, 0, memory_order_seq_cst);
    if (f->arena == a && f->owner == smi_owner_full(a) && atomic_load_explicit(&f->remote, memory_order_seq_cst)) {
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
  }
  __atomic_store_n(&a->revisit_at, NULL, __ATOMIC_RELAXED);
}

/* A block's bump moves: the pool counts what the heap holds (smi_pool_touch).
 * A block cut to its end has nothing to extend: it says so before the count
 * (the common case once the heap is warm: a full current block). */
static bool extend(smi_block_t *b) {
  if (b->bump >= b->nslots) return false;
  size_t before = smi_pool_touched(b);
  if (!smi_block_extend(b)) return false;
  smi_pool_touch(before, smi_pool_touched(b));
  return true;
}
static bool recut(smi_block_t *b, unsigned cls) {
  size_t before = smi_pool_touched(b);
  bool cut = smi_block_format(b, cls);
  smi_pool_touch(before, smi_pool_touched(b));
  return cut;
}

/* A block with room for at least 1/32 of its slots (and at least one). A
 * heap whose free slots are spread thin over many blocks (random frees into
 * a steady live set) would otherwise switch blocks every few allocations: a
 * block switch looks at a few blocks (SMI_SCANT_LOOK), and when all have less,
 * it takes an empty block instead, which stays on: free slots gather until a
 * typical block has that much room, at most 1/32 of the class's slots more. */
#define SMI_SCANT_LOOK 4
static bool roomy(const smi_block_t *b, uint32_t remote) {
  return b->used - remote + 1 + b->nslots / 32 <= b->nslots; /* (remote: frees of others not yet collected) */
}

/* A block of class cls with room from a's own lists (under a->lock), NULL if
 * none (picky: none roomy among the first few with room): blocks that other
 * threads freed into come back first, and blocks found without room go to
 * the full list. */
static smi_block_t *take_avail(sm_arena_t *a, unsigned cls, bool picky) {
  smi_block_t *b;
  revisit(a);
  unsigned scant = 0;
  while ((b = a->avail[cls].head) != NULL) {
    smi_blist_remove(&a->avail[cls], b);
    /* Other threads' frees into a block with free slots wait until its
     * freelist runs out, when the collect takes them whole, without a walk
     * (smi_block_collect); they count toward its room meanwhile. */
    uintptr_t w = atomic_load_explicit(&b->remote, memory_order_relaxed);
    uint32_t remote = smi_remote_count(w);
    if (w && !(b->free && remote && !(w & SMI_REMOTE_MARKED))) {
      smi_block_collect(b);
      remote = 0;
    }
    if (has_room(b)) {
      if (!picky || roomy(b, remote)) return b;
      smi_blist_push_tail(&a->avail[cls], b); /* it gathers frees meanwhile */
      if (++scant == SMI_SCANT_LOOK) return NULL;
      continue;
    }
    __atomic_store_n(&b->owner, smi_owner_full(a), __ATOMIC_SEQ_CST);
    /* A remote free that saw the untagged owner did not queue the block: check. */
    if (atomic_load_explicit(&b->remote, memory_order_seq_cst)) smi_revisit_push(a, b);
    smi_blist_push(&a->full, b);
  }
  return NULL;
}

/* Takes b (on no list) into service as a's current block of class cls, pinned
 * (under a->lock). */
static void make_current(sm_arena_t *a, unsigned cls, smi_block_t *b) {
  __atomic_store_n(&b->arena, a, __ATOMIC_RELEASE);
  __atomic_store_n(&b->owner, smi_owner_of(a), __ATOMIC_RELEASE);
  if (a->type == SMI_ARENA_USER)
    __atomic_store_n(&b->flags, (uint8_t)(__atomic_load_n(&b->flags, __ATOMIC_RELAXED) | SMI_BLOCK_USER),
                     __ATOMIC_RELEASE);
  b->used++; /* the pin of the current block */
  smi_arena_set_current(a, cls, b);
  smi_check_class(a, cls);
}

/* Empty, with many slots retired by generation wrap: re-cut before use (if its
 * epochs are used up it stays as it is, retired slots and all). */
static bool wants_recut(const smi_block_t *b) { return b->used == 0 && b->retired > b->nslots / 8; }

/* The block a switch leaves (without room), under a->lock. A small block
 * goes to the tail of its avail list, untagged, not to the full list: its
 * owner's frees into it stay on the fast path, and it comes round again after
 * the blocks before it, having gathered them. (On the full list, the owner's
 * first free into it took the slow path and the lock to make it available
 * again: in a live set replaced at random over a few blocks of a class, every
 * switch brought one such free: build/perf/larson -t 2, 278k switches and
 * 319k such frees in 20M replacements.) A switch that finds it still without
 * room moves it to the full list (take_avail). A medium or big block (512 KiB,
 * 4 MiB) goes to the full list, tagged: other threads' frees that empty it
 * queue it where malloc_trim and the background purge take it from an idle
 * thread; on the avail list it would wait for its owner's next slow path
 * (test review2::an_idle_threads_blocks_that_others_emptied_go_back). */
static void leave_current(sm_arena_t *a, unsigned cls, smi_block_t *old) {
  old->used--; /* its pin */
  if (old->kind == SMI_KIND_SMALL) {
    smi_blist_push_tail(&a->avail[cls], old);
    return;
  }
  __atomic_store_n(&old->owner, smi_owner_full(a), __ATOMIC_SEQ_CST);
  /* A remote free that saw the untagged owner did not queue the block: check. */
  if (atomic_load_explicit(&old->remote, memory_order_seq_cst)) smi_revisit_push(a, old);
  smi_blist_push(&a->full, old);
}

/* Replaces the current block of class cls, old (none, or without room), by
 * one with room: one of the arena's own, else one from the pool. The common
 * case takes a->lock once; NULL: out of memory. */
static smi_block_t *switch_block(sm_arena_t *a, unsigned cls, smi_block_t *old) {
  smi_lock(&a->lock);
  /* (the direct slots still name old: this thread, which alone reads them,
   * makes another block current before it reads them again) */
  smi_block_t *b = take_avail(a, cls, true);
  if (old != &smi_block_none) leave_current(a, cls, old);
  if (b && !wants_recut(b)) {
    make_current(a, cls, b);
    smi_unlock(&a->lock);
    return b;
  }
  if (old != &smi_block_none) smi_arena_set_current(a, cls, &smi_block_none);
  smi_unlock(&a->lock);
  /* (the pool's lock comes after a->lock, and smi_pool_take may take a->lock
   * itself to reclaim memory: not under it) */
  int saved_errno = errno;
  if (!b) b = smi_pool_take(a, cls);
  if (!b) { /* out of memory: a block with less room will do (no error then) */
    smi_lock(&a->lock);
    if ((b = take_avail(a, cls, false)) != NULL && !wants_recut(b)) make_current(a, cls, b);
    smi_unlock(&a->lock);
    if (!b) return NULL;
    errno = saved_errno;
    if (!wants_recut(b)) return b;
  }
  if (wants_recut(b)) recut(b, cls);
  smi_lock(&a->lock);
  make_current(a, cls, b);
  smi_unlock(&a->lock);
  return b;
}

static void *alloc_from_class(sm_arena_t *a, unsigned cls) {
  smi_block_t *b = a->current[cls];
  for (;;) {
    if (b != &smi_block_none) {
      if (b->free) return pop(b);
      if (atomic_load_explicit(&b->remote, memory_order_relaxed) && smi_block_collect(b)) continue;
      if (!smi_block_draining(b) && smi_hd_unquarantine_old(b)) continue; /* hardened build: freed slots first */
      if (!smi_block_draining(b) && extend(b)) continue;
      if (!smi_block_draining(b) && smi_hd_unquarantine(b)) continue; /* hardened build: nothing else left */
      if (b->retired && b->used == 1 && recut(b, cls)) {
        b->used = 1; /* formatting cleared the pin */
        continue;
      }
    }
    b = switch_block(a, cls, b);
    if (!b) return NULL;
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
  if (smi_unlikely((++a->slow_calls & 15) == 0)) { /* upkeep looks at the clock */
    smi_arena_upkeep(a, false);
    smi_background_start();
    smi_remote_sweep(); /* the thread's remote batches that nothing was added to lately */
  }
  if (smi_unlikely(smi_dismantle_waiting())) smi_dismantle(SMI_DISMANTLE_BATCH);
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

/* smi_malloc's miss. Sizes past the direct bins (1 KiB < size <= 256 KiB)
 * pop their class's current block here, as smi_malloc pops a direct bin's and
 * under the same conditions (no cap, no profiling: smi_direct_off); the rest
 * (an empty freelist, a small size's miss, large objects, the thread's first
 * call, a closed arena, whose current blocks are none) take the whole slow
 * path. Before, every such malloc took it: in alloctest (1 malloc in 7 past
 * 1 KiB) 164 instructions a call, a third of the allocator's, for what is a
 * pop. They still count in the arena's slow_calls (the upkeep's cadence, not
 * the statistics' count, which smi_malloc_generic keeps), and every 16th takes
 * the whole path, for its upkeep: a program that frees and takes medium objects keeps giving
 * back the pages of the slots that stay free (test
 * giveback::slots_that_stay_free_go_back_after_the_purge_delay). (The
 * hardened build has its own: smi_hd_malloc_top.) */
void *smi_malloc_miss(size_t size) {
  sm_arena_t *a = smi_tls_cur;
  if (!SMI_HD_ON && size - (SMI_DIRECT_MAX + 1) < SMI_SMALL_MAX - SMI_DIRECT_MAX) {
    smi_block_t *b = a->current[smi_class_of(size)];
    uint32_t n = a->slow_calls + 1;
    if (smi_likely(b->free != NULL) && smi_likely((n & 15) != 0 && !smi_direct_off(a))) {
      a->slow_calls = n;
      return pop(b);
    }
  }
  return smi_malloc_generic(a, size, false);
}

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

/* ---- tidying a block's free slots (upkeep) ------------------------------------
 * A block of a medium or big class (slots of 4.5 KiB and more) keeps the pages
 * of every slot it ever handed out, free or not: a class whose population
 * shrinks holds its high-water mark resident, and a heap that moves between
 * classes (buffers grown by realloc pass through a dozen) holds the sum of the
 * classes' high-water marks. Upkeep, on the owner's thread, tidies the
 * arena's own blocks of those kinds:
 *   - the freelist is sorted by address, so allocation fills the lowest free
 *     slots first and the highest ones stay free;
 *   - free slots past the last slot in use that may go (below) leave the
 *     freelist and bump comes down to them; their pages go back to the OS
 *     (extend hands them out again);
 *   - a free slot that may go gives back the pages past its first one (its
 *     links are in its first bytes).
 * Which may go (any free slot, at malloc_trim): a slot free for the purge
 * delay; and, while the arena's free slots not given back pass its reserve
 * (a sixteenth of the most its tidied blocks held live lately), slots that
 * were free at the previous upkeep too, those past the last slot in use
 * first (at an upkeep on growth, even freed since), until the excess is
 * gone. A slot freed since the previous upkeep stays otherwise: one that a
 * program swinging below its peak frees and takes again
 * costs a system call and page faults for nothing if it goes (alloctest -t
 * 2: bump came down over 131 MiB of such slots in a run of 29 MiB peak). A
 * mark in the slot (MARK_AT, past the link words of every build) says "seen
 * free" (with the time, in the word after it) or "purged", tied to the
 * slot's address and generation: a slot reused since carries another
 * generation, so a stale mark at worst counts it young again.
 * The pages go back together at the end of the upkeep (give_batch_t): one
 * system call for all of them where the kernel allows (smi_os_discard), not
 * one per slot.
 * Small blocks are left alone: their slots share pages, and the freelist of a
 * 64 KiB block of 16-byte slots is long to walk. The valgrind build is left
 * alone too. The hardened build's links are decoded, each slot checked before
 * its link is read (smi_hd_remote_ok: a bad list is reported and the block
 * left alone), and encoded again; its quarantine's slots but the newest 4 go
 * onto the freelist first (smi_hd_unquarantine_tidy), and those 4 count as
 * used. */
#define MARK_AT 40
enum { MARK_SEEN = 1, MARK_PURGED = 2 };
static uint64_t mark(const uint8_t *slot, uint8_t gen, unsigned state) {
  return (0x51075EEDull << 32) ^ (uint64_t)(uintptr_t)slot ^ ((uint64_t)gen << 2) ^ state;
}

/* The ranges one upkeep gives back, sent to the OS at its end (or when the
 * batch is full). Nothing writes into them meanwhile: they are free slots of
 * the arena's own blocks, which only this thread allocates from, and upkeep
 * flushes before it lets go of the arena's lock. */
#define GIVE_BATCH 64
typedef struct {
  smi_os_range_t r[GIVE_BATCH];
  size_t n;
} give_batch_t;

static void give_flush(give_batch_t *g) {
  /* in address order, ranges that touch made one (tidy goes down a block's
   * slots, and its range past the last slot in use comes after them) */
  for (size_t i = 1; i < g->n; i++) {
    smi_os_range_t x = g->r[i];
    size_t j = i;
    for (; j > 0 && (uintptr_t)g->r[j - 1].p > (uintptr_t)x.p; j--) g->r[j] = g->r[j - 1];
    g->r[j] = x;
  }
  size_t k = 0;
  for (size_t i = 0; i < g->n; i++) {
    if (k && (uint8_t *)g->r[k - 1].p + g->r[k - 1].size == (uint8_t *)g->r[i].p) g->r[k - 1].size += g->r[i].size;
    else g->r[k++] = g->r[i];
  }
  smi_os_discard(g->r, k);
  g->n = 0;
}

/* The pages of [lo, hi), rounded inwards, go back to the OS (at the flush);
 * the block's span stays counted as committed (it is, until the block is
 * purged). A range that continues the previous one extends it. */
static void give_back(give_batch_t *g, uintptr_t lo, uintptr_t hi) {
  lo = (lo + SMI_OS_PAGE - 1) & ~(SMI_OS_PAGE - 1);
  hi &= ~(SMI_OS_PAGE - 1);
  if (hi <= lo) return;
  smi_os_range_t *last = g->n ? &g->r[g->n - 1] : NULL;
  if (last && (uintptr_t)last->p + last->size == lo) {
    last->size += hi - lo;
    return;
  }
  if (g->n == GIVE_BATCH) give_flush(g);
  g->r[g->n++] = (smi_os_range_t){(void *)lo, hi - lo};
}

/* One upkeep's tidy, in two passes over the arena's blocks: the first gives
 * back the slots free for the purge delay and counts the young ones (free
 * for less, kept); only if those pass the reserve, the second gives back
 * young ones that were free at the previous upkeep too, up to the excess:
 * those past the last slot in use of each block first (one range a block),
 * then the others. A heap growing to a new peak passes it (buffers grown by
 * realloc leave the slots of the classes they passed through): at an upkeep
 * on growth, the free slots past the last in use go even if freed since the
 * previous upkeep (tests/lean_prog.c peaked at 29.4 MiB for 15 MiB live when
 * they waited for the next upkeep, at 25.6 MiB as they go). */
enum { TIDY_FIRST, TIDY_TOPS, TIDY_SLOTS };
typedef struct {
  give_batch_t g;
  uint64_t now;
  bool force;   /* malloc_trim: every free slot goes */
  size_t spare; /* the second pass: young free bytes that may still go */
  size_t young; /* the first pass: young free bytes kept */
  size_t live;  /* the first pass: bytes of the slots in use in the blocks tidied */
  unsigned pass;
  bool growth; /* an upkeep on growth (a new peak) */
} tidy_t;

/* Whether free slot f (at index i) may give its pages back now; marks a slot
 * seen free for the first time, with the time. */
static bool may_go(smi_block_t *b, uint32_t i, smi_free_t *f, tidy_t *t) {
  uint8_t gen = __atomic_load_n(&b->gens[i], __ATOMIC_RELAXED);
  uint64_t *m = (uint64_t *)((uint8_t *)f + MARK_AT);
  if (t->force || *m == mark((uint8_t *)f, gen, MARK_PURGED)) return true;
  /* (a mark from before the block left the pool counts from then: its slots
   * waited there, not free in this arena) */
  if (*m != mark((uint8_t *)f, gen, MARK_SEEN) || m[1] < b->empty_since) {
    *m = mark((uint8_t *)f, gen, MARK_SEEN);
    m[1] = t->now;
  } else if (t->now - m[1] >= smi_opt.purge_delay_ms) {
    return true;
  }
  bool fresh = m[1] == t->now; /* freed since the previous upkeep */
  if ((fresh && !(t->growth && t->pass == TIDY_TOPS)) || t->spare < b->size) return false;
  t->spare -= b->size;
  return true;
}

#define TIDY_SLOTS_MAX 128 /* more than any medium or big block holds (113) */
/* Tidy gives a range back (a free slot's pages past its first, the slots
 * past the last in use) only if its whole pages make at least this much:
 * each range is a system call, and in a threaded program a TLB shoot-down
 * (an interrupt to every other CPU running the process, about 10 us here),
 * for a few pages that a program swinging below its peak faults in again
 * soon. Smaller ones (the slots of classes up to about 20 KiB, a few such
 * slots past the last in use) go back with their block, with a larger range
 * past the last in use, or at malloc_trim. build/perf/realloc: 1,525 -> 600
 * calls, alloctest -t 2: about 1,100 -> 800, peak RSS the same within 2%
 * (README, Memory over time). */
#define TIDY_RANGE_MIN ((size_t)16 << 10)
static size_t whole_pages(uintptr_t lo, uintptr_t hi) {
  lo = (lo + SMI_OS_PAGE - 1) & ~(SMI_OS_PAGE - 1);
  hi &= ~(SMI_OS_PAGE - 1);
  return hi > lo ? hi - lo : 0;
}
static void tidy(smi_block_t *b, tidy_t *t, unsigned pass) {
  bool first = pass == TIDY_FIRST;
  t->pass = pass;
  if (SMI_VG_ON || b == &smi_block_none || b->kind == SMI_KIND_SMALL || b->nslots > TIDY_SLOTS_MAX) return;
  if (first) {
    smi_hd_unquarantine_tidy(b); /* hardened build: its quarantine's older slots onto the freelist */
    t->live += (size_t)b->used * b->size;
  }
  if (!b->free) return;
  uint64_t on_list[TIDY_SLOTS_MAX / 64] = {0};
  for (smi_free_t *p = b->free; p; p = (smi_free_t *)smi_link_dec(b, p, p->next)) {
    if (!smi_hd_remote_ok(b, p)) return; /* hardened build: checked before it is read */
    uint32_t i = smi_slot_index(b, (uintptr_t)p);
    on_list[i >> 6] |= (uint64_t)1 << (i & 63);
  }
#define ON_LIST(i) (on_list[(i) >> 6] >> ((i)&63) & 1)
  /* the free slots past the last in use that may go leave the list: bump
   * comes down over them */
  uint32_t old_bump = b->bump, top = old_bump;
  size_t spare = t->spare;
  while (top > 0 && ON_LIST(top - 1) && may_go(b, top - 1, (smi_free_t *)smi_slot_addr(b, top - 1), t)) top--;
  if (!t->force && top < old_bump &&
      whole_pages((uintptr_t)smi_slot_addr(b, top), (uintptr_t)smi_slot_addr(b, old_bump)) < TIDY_RANGE_MIN) {
    top = old_bump; /* too few pages: they stay on the list */
    t->spare = spare;
  }
  smi_free_t *head = NULL;
  for (uint32_t i = top; i-- > 0;) {
    if (!ON_LIST(i)) continue;
    smi_free_t *f = (smi_free_t *)smi_slot_addr(b, i);
    f->next = smi_link_enc(b, f, (uintptr_t)head);
    head = f;
    /* a slot that may go gives back its pages past the first (its links and
     * mark stay) */
    uint8_t gen = __atomic_load_n(&b->gens[i], __ATOMIC_RELAXED);
    uint64_t *m = (uint64_t *)((uint8_t *)f + MARK_AT);
    if (*m == mark((uint8_t *)f, gen, MARK_PURGED) || pass == TIDY_TOPS) continue;
    if (!t->force && whole_pages((uintptr_t)f + MARK_AT + 16, (uintptr_t)f + b->size) < TIDY_RANGE_MIN) continue;
    if (!may_go(b, i, f, t)) {
      if (first) t->young += b->size;
      continue;
    }
    give_back(&t->g, (uintptr_t)f + MARK_AT + 16, (uintptr_t)f + b->size);
    *m = mark((uint8_t *)f, gen, MARK_PURGED);
  }
#undef ON_LIST
  b->free = head;
  if (top == old_bump) return;
  size_t before = smi_pool_touched(b);
  b->bump = top;
  smi_pool_touch(before, smi_pool_touched(b));
  give_back(&t->g, (uintptr_t)smi_slot_addr(b, top), (uintptr_t)smi_slot_addr(b, old_bump));
}

/* Upkeep runs every quarter purge delay, and sooner when the heap grows an
 * eighth (and 1 MiB) past the most it held after any of the arena's upkeeps:
 * a heap that grows fast to a new peak (buffers grown by realloc move up
 * through the classes and leave free slots behind) gives those back before
 * it grows further, however fast the program runs (a 100 ms program sees
 * only four timed upkeeps). A heap that only swings below a peak it reached
 * before waits for the timed upkeep: a growth trigger counted from the low
 * point of each swing gave back pages that the next swing faulted in again
 * (alloctest-2: three times the memory system calls). The heap is the
 * touched bytes of the blocks in use (smi_pool_in_use). */
#define UPKEEP_GROWTH_MIN ((size_t)1 << 20)
static bool upkeep_due(sm_arena_t *a, uint64_t now) {
  return now - a->last_upkeep_ms >= smi_opt.purge_delay_ms / 4 + 1 ||
         smi_pool_in_use() > a->upkeep_high + a->upkeep_high / 8 + UPKEEP_GROWTH_MIN;
}

/* Empty blocks an arena holds beyond its current ones go back to the pool. */
void smi_arena_upkeep(sm_arena_t *a, bool force) {
  uint64_t now = smi_now_ms();
  if (!force && !upkeep_due(a, now)) return;
  bool timed = now - a->last_upkeep_ms >= smi_opt.purge_delay_ms / 4 + 1;
  a->last_upkeep_ms = now;
  tidy_t t;
  t.g.n = 0;
  t.now = now;
  t.force = force;
  t.growth = !timed;
  t.spare = t.young = t.live = 0;
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
      } else {
        tidy(b, &t, TIDY_FIRST);
      }
    }
    tidy(a->current[cls], &t, TIDY_FIRST);
  }
  /* the reserve follows the most the tidied blocks held live, decaying (an
   * eighth at each timed upkeep) */
  if (timed) a->tidy_peak -= a->tidy_peak / 8;
  if (t.live > a->tidy_peak) a->tidy_peak = t.live;
  size_t reserve = a->tidy_peak / 16;
  if (t.young > reserve) {
    t.spare = t.young - reserve;
    for (unsigned pass = TIDY_TOPS; pass <= TIDY_SLOTS; pass++) {
      for (unsigned cls = 0; cls < SMI_CLASSES && t.spare; cls++) {
        for (smi_block_t *b = a->avail[cls].head; b && t.spare; b = b->next) tidy(b, &t, pass);
        if (t.spare) tidy(a->current[cls], &t, pass);
      }
    }
  }
  give_flush(&t.g);
  smi_unlock(&a->lock);
  size_t held = smi_pool_in_use();
  if (held > a->upkeep_high) a->upkeep_high = held;
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

/* Blocks of a live thread's arena that other threads' frees emptied wait
 * for that thread's next slow path; a thread that then makes none (idle, or
 * only fast-path calls: a server after its background thread freed a
 * database) would hold them for good. malloc_trim and the background purge
 * collect the arena's full blocks that other threads freed into, from any
 * thread, as the owner's revisit does, under the arena's lock: the full tag
 * sends even the owner's own frees into such a block to the slow path, which
 * takes the lock (a draining block's too: free_into_full). Blocks on the
 * avail lists stay: their owner frees into them without the lock, and
 * nothing tells another thread that such a free is not under way. Current
 * blocks stay too: their owner allocates from them without the lock. */
void smi_arena_reclaim(sm_arena_t *a) {
  smi_lock(&a->lock);
  revisit(a);
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

/* Before a's blocks leave, none names a as its owner any more, and the
 * remote frees that read a's full tag finish queueing their block on a's
 * revisit stack (announced in inflight: remote_push_chain), so the revisit
 * after it empties that stack for good. A push landing on the stack of an
 * arena that is gone would write into the freed heap, and leave its block
 * marked queued: no later owner's revisit would ever see the block. */
static void disown(smi_block_t *b) {
  __atomic_store_n(&b->owner, NULL, __ATOMIC_SEQ_CST);
  smi_block_wait_frees(b);
}

void smi_arena_abandon_all(sm_arena_t *a) {
  smi_lock(&a->lock);
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    if (a->current[cls] != &smi_block_none) disown(a->current[cls]);
    for (smi_block_t *b = a->avail[cls].head; b; b = b->next) disown(b);
  }
  for (smi_block_t *b = a->full.head; b; b = b->next) disown(b);
  revisit(a); /* (with every owner clear, it only unmarks the queued blocks) */
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
