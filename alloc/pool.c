/* pool.c: the process-wide pool of blocks. Empty blocks wait here (and are
 * given back to the OS after the purge delay); blocks abandoned by exited
 * threads wait for a thread to adopt them; blocks of closed arenas wait in the
 * dismantle queue, worked in small batches. */
#include <stdio.h>

#include "internal.h"
#include "stats.h"
#include "check.h"
#include "slots/generation.h"
#include "slots/counters.h"
#include "slots/os.h"

static smi_lock_t pool_lock = SMI_LOCK_INIT;
/* Empty blocks, per kind: warm ones (committed, most recent first) at
 * empty[kind], cold ones (their memory given back) at empty[COLD + kind]. */
#define COLD SMI_KINDS_OF_BLOCKS
static smi_blist_t empty[SMI_EMPTY_LISTS];
static size_t warm_bytes;                            /* the memory of the warm empty blocks */
static smi_blist_t abandoned[SMI_CLASSES];           /* may have room: adopt these first */
static smi_blist_t abandoned_full[SMI_CLASSES];      /* had no room when last looked at */
static smi_segment_t *released[SMI_KINDS_OF_BLOCKS]; /* given back to the OS (linked through large_next) */
static smi_blist_t dismantle_blocks;
static smi_segment_t *dismantle_large;
static _Atomic uint64_t last_purge_ms; /* read before the lock is taken */

static _Atomic size_t dismantle_pending; /* blocks and large objects queued */

/* In a fork child: if a thread the child does not have was changing the pool,
 * its lists are forgotten: their blocks stay out of use in the child (blocks
 * with live objects can still be freed into), which is safe whatever state
 * the lists were left in. */
static void set_flags(smi_block_t *b, uint8_t flags);
void smi_pool_after_fork(bool *mine) {
  if (!smi_lock_orphaned(&pool_lock, mine)) return;
  for (unsigned k = 0; k < SMI_EMPTY_LISTS; k++) empty[k] = (smi_blist_t){NULL, NULL};
  for (unsigned k = 0; k < SMI_KINDS_OF_BLOCKS; k++) released[k] = NULL;
  warm_bytes = 0;
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    abandoned[cls] = (smi_blist_t){NULL, NULL};
    abandoned_full[cls] = (smi_blist_t){NULL, NULL};
  }
  dismantle_blocks = (smi_blist_t){NULL, NULL};
  dismantle_large = NULL;
  atomic_store_explicit(&dismantle_pending, 0, memory_order_relaxed);
  /* No block waits in the pool any more: no segment may be released whole,
   * and no block reads as waiting or abandoned (cool_run takes a warm waiting
   * neighbour off the lists, smi_pool_drained an abandoned block: one left
   * marked would be taken off a list it is not on). */
  for (uint32_t id = 1; id < smi_segment_ids_used(); id++) {
    smi_segment_t *seg = atomic_load_explicit(&smi_segtab[id].seg, memory_order_relaxed);
    if (!seg || smi_segtab[id].is_large) continue;
    seg->pooled = 0;
    seg->waiting = 0;
    for (uint32_t i = 0; i < seg->nblocks; i++)
      if (seg->blocks[i].flags & (SMI_BLOCK_WAITING | SMI_BLOCK_ABANDONED | SMI_BLOCK_ABANDONED_FULL))
        set_flags(&seg->blocks[i], (uint8_t)(seg->blocks[i].flags &
                                             ~(SMI_BLOCK_WAITING | SMI_BLOCK_ABANDONED | SMI_BLOCK_ABANDONED_FULL)));
  }
}

/* The empty lists also count, per segment, the blocks waiting there (a
 * segment whose blocks all wait can be given back whole), and the bytes of
 * the warm ones. */
/* Flags change under pool_lock here, but lock-free readers (sm_hfree's
 * smi_block_closing) may read them: an atomic store. */
static void set_flags(smi_block_t *b, uint8_t flags) { __atomic_store_n(&b->flags, flags, __ATOMIC_RELAXED); }
static bool is_cold(const smi_block_t *b) { return b->flags & SMI_BLOCK_DECOMMITTED; }
/* What of a warm block's memory was ever touched, in whole pages: its
 * generations and the slots handed out at least once (below bump). The rest
 * was never written, so it is not resident (a big block of a large class is
 * often mostly that). Constant while the block waits in the pool. */
static size_t touched(const smi_block_t *b) {
  size_t span = smi_block_span(b);
  if (!(b->flags & SMI_BLOCK_FORMATTED)) return span;
  size_t bytes = smi_block_touched(b);
  bytes = (bytes + SMI_OS_PAGE - 1) & ~(SMI_OS_PAGE - 1);
  return bytes < span ? bytes : span;
}
static smi_blist_t *empty_list(const smi_block_t *b) { return &empty[b->kind + (is_cold(b) ? COLD : 0)]; }
static bool waits(const smi_segment_t *seg, uint32_t i) { return seg->waiting >> i & 1; }
static void empty_push(smi_block_t *b) {
  set_flags(b, (uint8_t)(b->flags | SMI_BLOCK_WAITING));
  smi_blist_push(empty_list(b), b);
  smi_segment_t *seg = smi_segment_at((uintptr_t)b);
  seg->pooled++;
  seg->waiting |= (uint64_t)1 << b->index;
  if (!is_cold(b)) warm_bytes += touched(b);
}
static void empty_remove(smi_block_t *b) {
  set_flags(b, (uint8_t)(b->flags & ~SMI_BLOCK_WAITING));
  smi_blist_remove(empty_list(b), b);
  smi_segment_t *seg = smi_segment_at((uintptr_t)b);
  seg->pooled--;
  seg->waiting &= ~((uint64_t)1 << b->index);
  if (!is_cold(b)) warm_bytes -= touched(b);
}
/* Warm empty blocks turn cold: their memory goes back to the OS. The pool
 * cools them in batches, with one system call for all of a batch where the
 * kernel allows (smi_os_decommit_ranges), neighbours in one range: a burst of
 * frees empties blocks all over the heap, and cooling each with a call of
 * its own cost a call per block. A block in a batch is on no list (under
 * pool_lock) until the flush puts it on its cold list. */
#define COOL_BATCH 64
typedef struct {
  smi_block_t *b[COOL_BATCH];
  size_t n;
  uint64_t stamp; /* other than 0: the cooled blocks' empty_since */
} cool_batch_t;

/* Whether the blocks of seg strictly between a and b all wait cold in the
 * pool: a range may then run over them (their pages are given back already;
 * given back again, they cost the kernel a walk of empty page tables, not a
 * call of their own). Under pool_lock, which every taker of a waiting block
 * holds. */
static bool cold_between(const smi_block_t *a, const smi_block_t *b) {
  smi_segment_t *seg = smi_segment_at((uintptr_t)a);
  if (seg != smi_segment_at((uintptr_t)b)) return false;
  for (uint32_t i = a->index + 1u; i < b->index; i++)
    if (!waits(seg, i) || !is_cold(&seg->blocks[i])) return false;
  return true;
}

static void cool_flush(cool_batch_t *c) {
  /* In address order (the batch comes in age order), so that neighbours and
   * blocks with only cold waiting blocks between them make one range: the
   * pool cools runs of a segment's blocks that other blocks cooled earlier
   * split (with tidy's 16 KiB rule, arena.c: stress -t 8 -z 200 -n 10 made
   * about 6,500 calls before, 5,100 after; README, Memory over time). */
  for (size_t i = 1; i < c->n; i++) {
    smi_block_t *b = c->b[i];
    size_t j = i;
    for (; j > 0 && (uintptr_t)c->b[j - 1] > (uintptr_t)b; j--) c->b[j] = c->b[j - 1];
    c->b[j] = b;
  }
  smi_os_range_t r[COOL_BATCH];
  size_t k = 0, warm = 0;
  for (size_t i = 0; i < c->n; i++) {
    uint8_t *base = smi_block_base(c->b[i]);
    size_t span = smi_block_span(c->b[i]);
    warm += span;
    if (k && cold_between(c->b[i - 1], c->b[i])) r[k - 1].size = (size_t)(base + span - (uint8_t *)r[k - 1].p);
    else r[k++] = (smi_os_range_t){base, span};
  }
  /* (the generation tables go too: they read as zero afterwards, which is what
   * a fresh cut wants; the epochs, in the segment header, stay) */
  smi_os_discard(r, k);
  smi_os_account_decommit(warm);
  for (size_t i = 0; i < c->n; i++) {
    smi_block_t *b = c->b[i];
    set_flags(b, (uint8_t)(b->flags | SMI_BLOCK_DECOMMITTED));
    if (c->stamp) b->empty_since = c->stamp;
    empty_push(b);
  }
  smi_count(SMI_COUNT_BLOCKS_PURGED, c->n);
  c->n = 0;
}

/* b, warm and waiting, leaves its list for the batch; returns its bytes. */
static size_t cool(cool_batch_t *c, smi_block_t *b) {
  size_t bytes = touched(b);
  empty_remove(b);
  if (c->n == COOL_BATCH) cool_flush(c);
  c->b[c->n++] = b;
  return bytes;
}

/* b and the warm empty blocks next to it in its segment go into the batch
 * (a burst of frees empties whole runs of blocks: one range). */
static bool warm_waits(const smi_segment_t *seg, uint32_t i) {
  return waits(seg, i) && !is_cold(&seg->blocks[i]); /* a waiting block's flags change under pool_lock */
}
static size_t cool_run(cool_batch_t *c, smi_block_t *b) {
  smi_segment_t *seg = smi_segment_at((uintptr_t)b);
  uint32_t lo = b->index, hi = b->index;
  while (lo > 0 && warm_waits(seg, lo - 1)) lo--;
  while (hi + 1 < seg->nblocks && warm_waits(seg, hi + 1)) hi++;
  size_t bytes = 0;
  for (uint32_t i = lo; i <= hi; i++) bytes += cool(c, &seg->blocks[i]);
  return bytes;
}

/* The touched bytes of the blocks out of the pool (in arenas, abandoned, or
 * waiting to be dismantled): what the heap really holds, unlike the committed
 * count, which counts a block's whole span once it is cut (4 MiB for a big
 * block of which a few slots were used). Moved at every change of a block's
 * bump (smi_pool_touch) and when blocks enter and leave the pool. */
/* On a line of its own (128 bytes: Intel's prefetcher fetches lines in
 * pairs): every thread adds to it as its blocks' bumps move, and beside
 * dismantle_pending, which every slow call reads, it made that read a cache
 * miss (alloctest -t 2: smi_dismantle_waiting 1.3% of the run). */
static struct {
  _Alignas(128) _Atomic ptrdiff_t n;
  char pad[128 - sizeof(ptrdiff_t)];
} in_use_touched_line;
#define in_use_touched in_use_touched_line.n
size_t smi_pool_touched(const smi_block_t *b) { return touched(b); }
void smi_pool_touch(size_t before, size_t after) {
  if (after != before) atomic_fetch_add_explicit(&in_use_touched, (ptrdiff_t)(after - before), memory_order_relaxed);
}
static size_t in_use(void) {
  ptrdiff_t n = atomic_load_explicit(&in_use_touched, memory_order_relaxed);
  return n > 0 ? (size_t)n : 0; /* (a fork child that lost the pool's lists may count a little wrong) */
}
size_t smi_pool_in_use(void) { return in_use(); } /* (upkeep comes sooner when it grows: arena.c) */

/* The pool keeps about this much memory warm in empty blocks (the cap): a
 * target that follows the program, from SMI_RETAIN_MIN up to a quarter of
 * what the heap holds. Past it the oldest blocks cool in batches: once the
 * warm bytes pass the cap by half of it, back down to the cap, with one
 * system call (cooled one block at a time, a burst that freed 200 MB all over
 * the heap made 800 calls; in batches, 230). A block the cap cooled that is taken again within the purge
 * delay was cooled too early (its pages fault in again): the target grows by
 * a block. Every pool upkeep (a quarter of the delay) without such a block
 * brings it a quarter of the way back down. So a burst that frees most of the
 * heap gives it back at once, with no later call needed, and so does a heap
 * that moves between size classes (blocks empty in some while others fill),
 * while a program that frees and allocates again in turn keeps what it
 * reuses warm. Measured (perf harness, README): with a fixed cap of 8 MiB or
 * an eighth of the committed bytes, realloc kept 6-10 MiB warm at its peak and
 * threadlife 1.6 MiB of its 6.8 MiB; with a fixed 1 MiB, alloctest-2 and
 * larson fault two to three times as many pages in. Under pool_lock. */
#define SMI_RETAIN_MIN ((size_t)1 << 20)
#define CAPPED ((uint64_t)1 << 63) /* in a cold block's empty_since: the cap cooled it (then) */
static size_t retain_target = SMI_RETAIN_MIN;
static bool regretted; /* since the last upkeep */
/* The most the heap held lately (in_use), decaying by an eighth at every pool
 * upkeep: the target's bound. Bound by what the heap holds at the moment, the
 * target collapsed just when it mattered: threads that end together empty
 * their blocks at once (in_use falls), and the threads that follow take them
 * again (stress, 8 threads retired and restarted in rounds: 998 blocks taken
 * back within the purge delay in 3 rounds, the bound 14 MiB against 26 MiB of
 * target; see README, Memory over time). */
static size_t in_use_high;
static size_t heap_high(void) {
  size_t now = in_use();
  if (now > in_use_high) in_use_high = now;
  return in_use_high;
}

/* ---- what threads leave at their exit ----------------------------------------
 * A thread's empty blocks enter the pool when it ends, and in a program whose
 * threads come and go (workers retired and started again in rounds: the stress
 * pattern) the threads that follow take as much again at once. Cooled down to
 * the cap, those blocks came back cold, every page faulted in again and
 * zeroed by the kernel (build/perf/stress -t 8 -z 200 -n 10 under strace -f
 * -k: 2.4k of its 5.8k madvise calls, 0.96 GiB given back, at thread exits
 * alone; 330-400k minor faults a run). So for the purge delay after a
 * thread's start or exit (a thread frees what it holds before it ends: the
 * window opened by its exit would come too late for those blocks), the cap
 * stretches over the room under the recent peak: the
 * warm bytes may fill what the heap and the large objects held at most
 * within the last one or two purge delays (the touched bytes of the blocks
 * in use, and the mappings of the large objects, cached ones included) less
 * what they hold now, so that the process, warm blocks and all, holds no
 * more than at that peak. (With the warm bytes counted in the peak, it
 * ratcheted up: blocks kept warm that the next threads did not take, new
 * segments mapped beside them, a higher peak; threadlife peaked at 9.0 MiB
 * instead of 5.6.) What the next threads do not take goes with the timed
 * purge (blocks empty for the purge delay), or down to the cap at the first
 * return to the pool after the delay. Under pool_lock (last_exit_ms: written
 * without it). */
static _Atomic uint64_t last_exit_ms; /* when a thread last started or ended (0: none yet) */
static size_t peak_now, peak_before;  /* the most held in this window, in the one before */
static uint64_t window_start;
void smi_pool_thread_churn(void) { atomic_store_explicit(&last_exit_ms, smi_now_ms(), memory_order_relaxed); }
static size_t held_now(void) { return in_use() + smi_large_mapped(); }
/* Samples what they hold (at every take and return of a block); returns the
 * most in the last one or two purge delays. */
static size_t recent_peak(uint64_t now) {
  uint64_t delay = smi_opt.purge_delay_ms;
  if (now - window_start >= delay) {
    peak_before = now - window_start < 2 * delay ? peak_now : 0;
    peak_now = 0;
    window_start = now;
  }
  size_t held = held_now();
  if (held > peak_now) peak_now = held;
  return peak_now > peak_before ? peak_now : peak_before;
}
/* The room the cap stretches over: 0 unless a thread started or ended within
 * the purge delay, and for a peak below EXIT_PEAK_MIN: the faults of a few MiB cost
 * little, and what a small heap keeps warm shows (threadlife, 2 threads at a
 * time, peaked at 6.6-7.2 MiB with it against 5.9-6.4 without, jemalloc 5.4).
 * The hardened build the same. The counts are touched bytes (a slot handed
 * out counts whole) in both; a program's counted peak is only higher there,
 * where the quarantine makes a class cycle through 5 or more slots of which
 * the default build reuses one (test_threads' closed_arenas_memory_bounded,
 * big objects never written: a counted peak of 13-30 MiB, 4-8 MiB in the
 * default build, about 3-5 MiB of blocks resident in both). Read at once
 * after a round, that test's committed bytes showed the room, and 024fa12
 * turned it off in the hardened build: lean_prog relay's later rounds then
 * faulted in 6,400 pages, against 7,050 in the first; with it 490-670. */
#define EXIT_PEAK_MIN ((size_t)16 << 20)
static size_t exit_room(void) {
  uint64_t now = smi_now_ms(), exit = atomic_load_explicit(&last_exit_ms, memory_order_relaxed);
  size_t peak = recent_peak(now), held = held_now();
  if (!exit || now - exit >= smi_opt.purge_delay_ms || peak < EXIT_PEAK_MIN) return 0;
  return peak > held ? peak - held : 0;
}

static void keep_warm_bytes_bounded(void) {
  size_t most = heap_high() / 4;
  size_t cap = retain_target < most ? retain_target : most;
  if (cap < SMI_RETAIN_MIN) cap = SMI_RETAIN_MIN;
  size_t limit = cap + cap / 2; /* a batch gathers */
  size_t room = exit_room();
  if (room > limit) { /* (an eighth of it for the batch) */
    limit = room;
    cap = room - room / 8;
  } else if (room > cap) {
    cap = room;
  }
  if (warm_bytes <= limit) return;
  cool_batch_t c = {.n = 0, .stamp = smi_now_ms() | CAPPED};
  while (warm_bytes > cap) {
    smi_block_t *oldest = NULL; /* the block empty for longest, of any kind */
    for (unsigned k = 0; k < SMI_KINDS_OF_BLOCKS; k++)
      if (empty[k].tail && (!oldest || empty[k].tail->empty_since < oldest->empty_since)) oldest = empty[k].tail;
    if (!oldest) break;
    cool_run(&c, oldest);
  }
  cool_flush(&c);
}

/* A cold block is taken: was it cooled by the cap within the purge delay? */
static void taken_cold(const smi_block_t *b) {
  if (!(b->empty_since & CAPPED) || smi_now_ms() - (b->empty_since & ~CAPPED) >= smi_opt.purge_delay_ms) return;
  regretted = true;
  size_t step = smi_block_span(b) < 2 * SMI_RETAIN_MIN ? smi_block_span(b) : SMI_RETAIN_MIN;
  if (retain_target < heap_high() / 4) retain_target += step;
}

/* At every pool upkeep: the target comes down while no block is taken back. */
static void retain_decay(void) {
  if (!regretted) retain_target -= (retain_target - SMI_RETAIN_MIN) / 4;
  regretted = false;
  in_use_high -= in_use_high / 8;
}

/* A block can serve class cls as it is (or reopened after its arena closed)
 * without a new epoch; otherwise it must be cut again. */
static bool ready_for(const smi_block_t *b, unsigned cls) {
  if (!(b->flags & SMI_BLOCK_FORMATTED) || b->cls != cls || (b->flags & SMI_BLOCK_DECOMMITTED)) return false;
  return (b->flags & SMI_BLOCK_CLOSED) || (!b->retired && b->used == 0);
}

/* ---- abandoned blocks ---------------------------------------------------------
 * The blocks with live objects of a thread that ended wait on abandoned[cls],
 * or, once seen without room, on abandoned_full[cls] (the block's flags say
 * which: SMI_BLOCK_ABANDONED, SMI_BLOCK_ABANDONED_FULL; under pool_lock),
 * until a thread adopts one. Other threads free their objects onto its remote
 * list, whose count there starts at minus its live objects (smi_remote_bias):
 * the push that frees the last one reads 0, and that thread hands the block
 * to the pool as empty at once (smi_pool_drained). So what an ended thread
 * left goes back to the OS as the program frees it, as a live thread's
 * emptied blocks do, not only at an upkeep, which a program that makes only
 * fast-path calls afterwards never reaches (a thread that allocated 500 MiB
 * of small objects and ended, all freed by the main thread, which then only
 * paired malloc and free: 491 MiB stayed resident; tests/unit_drained.c).
 * Within the purge delay after a thread's start or exit, the room kept warm
 * for the threads that follow (above) holds such blocks as it holds the
 * ones ending threads leave; past it they cool down to the cap at once. */
static smi_blist_t *abandoned_list(const smi_block_t *b) {
  return b->flags & SMI_BLOCK_ABANDONED_FULL ? &abandoned_full[b->cls] : &abandoned[b->cls];
}

/* b off its abandoned list, the frees on its remote list collected. */
static void abandoned_take(smi_block_t *b) {
  smi_blist_remove(abandoned_list(b), b);
  set_flags(b, (uint8_t)(b->flags & ~(SMI_BLOCK_ABANDONED | SMI_BLOCK_ABANDONED_FULL)));
  smi_block_collect_biased(b);
}

/* An abandoned block whose objects were all freed: empty. */
static void abandoned_emptied(smi_block_t *b) {
  b->arena = NULL;
  b->empty_since = smi_now_ms();
  smi_pool_touch(touched(b), 0);
  empty_push(b);
}

/* b, with live objects and its remote list collected, onto an abandoned
 * list, its remote count biased; if its last objects were freed after the
 * collect (the bias makes the count 0), it is empty instead: false. */
static bool abandoned_put(smi_block_t *b, bool full) {
  uintptr_t bias = smi_remote_bias(b->used);
  uintptr_t was = atomic_fetch_add_explicit(&b->remote, bias, memory_order_acq_rel);
  if (smi_remote_count(was + bias) == 0) {
    smi_block_collect_biased(b); /* (used reaches 0: a count of 0 is every live object pushed) */
    abandoned_emptied(b);
    return false;
  }
  set_flags(b, (uint8_t)(b->flags | SMI_BLOCK_ABANDONED | (full ? SMI_BLOCK_ABANDONED_FULL : 0)));
  smi_blist_push(abandoned_list(b), b);
  return true;
}

void smi_pool_drained(smi_block_t *b) {
  /* A signal handler's free inside this thread's own hold of the lock would
   * wait for ever: the block stays on its list, its count at 0, for the next
   * upkeep or adoption (tests/unit_drained_signal.c). */
  if (smi_lock_holder_of(atomic_load_explicit(&pool_lock.holder, memory_order_relaxed)) == smi_lock_me()) return;
  smi_lock(&pool_lock);
  bool ours = b->flags & SMI_BLOCK_ABANDONED; /* (not adopted meanwhile, nor forgotten by a fork child) */
  if (ours) {
    abandoned_take(b);
    if (b->used == 0) abandoned_emptied(b);
    else abandoned_put(b, false); /* (not reached: see abandoned_put) */
    keep_warm_bytes_bounded();
  }
  smi_unlock(&pool_lock);
  if (ours) smi_background_start();
}

static smi_block_t *adopt(unsigned cls) {
  /* Look at a few abandoned blocks of the class; take one with room. */
  for (int tries = 0; tries < 4; tries++) {
    smi_block_t *b = abandoned[cls].head;
    if (!b) return NULL;
    abandoned_take(b);
    if (b->used == 0) { /* everything was freed: an empty block */
      abandoned_emptied(b);
      continue;
    }
    /* (the hardened build: or slots in its quarantine) */
    if (b->free || b->bump < b->nslots || smi_hd_pending(b)) {
      b->empty_since = smi_now_ms(); /* out of the pool: when it left (arena.c's tidy) */
      return b;
    }
    abandoned_put(b, true); /* upkeep looks at it again */
  }
  return NULL;
}

/* Segments whose blocks all wait empty in the pool go back to the OS, their
 * address space included (smi_segment_release); under pool_lock. */
static void release_empty_segments(void) {
  for (unsigned k = 0; k < SMI_EMPTY_LISTS; k++) {
    for (smi_block_t *b = empty[k].head; b;) {
      smi_segment_t *seg = smi_segment_at((uintptr_t)b);
      if (seg->pooled != seg->nblocks) {
        b = b->next;
        continue;
      }
      for (uint32_t i = 0; i < seg->nblocks; i++) empty_remove(&seg->blocks[i]);
      smi_segment_release(seg);
      seg->large_next = released[seg->kind];
      released[seg->kind] = seg;
      b = empty[k].head; /* its blocks left the list: start again */
    }
  }
}

/* A released segment of this kind mapped again (its blocks then wait in the
 * pool, but the first, returned); NULL if none could be. Under pool_lock. */
static smi_block_t *reacquire(unsigned kind) {
  for (smi_segment_t **s = &released[kind]; *s; s = &(*s)->large_next) {
    smi_segment_t *seg = *s;
    if (!smi_segment_reacquire(seg)) continue; /* another mapping took part of its range */
    *s = seg->large_next;
    seg->large_next = NULL;
    for (uint32_t i = seg->nblocks; i-- > 1;) empty_push(&seg->blocks[i]);
    return &seg->blocks[0];
  }
  return NULL;
}

void smi_pool_reclaim(sm_arena_t *a) {
  smi_remote_flush();
  if (a) smi_arena_trim(a);
  if (smi_tls_heap && a != &smi_tls_heap->root) smi_arena_trim(&smi_tls_heap->root);
  smi_heap_reclaim_others();
  smi_dismantle(SIZE_MAX);
  smi_pool_upkeep(true); /* every empty block decommitted, the large cache unmapped */
  smi_lock(&pool_lock);
  release_empty_segments();
  smi_unlock(&pool_lock);
}

/* A warm medium or big block cut for another class where the room is not
 * counted (below): the pages of its old slots past the new cut's first page
 * go back at once, the generation table's pages excepted. Kept, they stayed
 * resident and uncounted (past bump) while the block served the new class,
 * which in a small heap often hands out a slot or two of it: threadlife -t
 * 2, at its peak, held blocks with one live object and 40-260 KiB resident,
 * 3 MiB in orphaned blocks of ended threads (a snapshot of the stopped
 * process at its peak: /proc/PID/pagemap, the descriptors through
 * /proc/PID/mem). Not a small block (64 KiB): its new class fills it again
 * soon (larson and longrun recut hundreds a run, and dropping their old
 * pages faulted 8k and 6k more pages in). As tidy's ranges (arena.c), one
 * of at least RECUT_DROP_MIN. */
#define RECUT_DROP_MIN ((size_t)16 << 10)
static void drop_old_slots(const smi_block_t *b, const uint8_t *top) {
  if (b->kind == SMI_KIND_SMALL) return;
  uintptr_t lo = ((uintptr_t)b->start + SMI_OS_PAGE) & ~(uintptr_t)(SMI_OS_PAGE - 1);
  uintptr_t hi = ((uintptr_t)top + SMI_OS_PAGE - 1) & ~(uintptr_t)(SMI_OS_PAGE - 1);
  uintptr_t table = (uintptr_t)b->gens & ~(uintptr_t)(SMI_OS_PAGE - 1); /* (default build: near the end) */
  if (b->gens > b->start && hi > table) hi = table;
  if (hi <= lo || hi - lo < RECUT_DROP_MIN) return;
  smi_os_range_t r = {(void *)lo, hi - lo};
  smi_os_discard(&r, 1); /* (the block's span stays counted as committed, as tidy's) */
}

smi_block_t *smi_pool_take(sm_arena_t *a, unsigned cls) {
  unsigned kind = smi_kind_of_class(cls);
  /* Only a thread's root arena adopts: its objects share no lifetime with an
   * arena that can be closed. */
  bool may_adopt = a->type == SMI_ARENA_ROOT;
  bool reclaimed = false;
  /* A mapping refused (a new segment, a released one mapped again) before the
   * reclaim is no error if a block comes after it, whichever way it comes:
   * every return of a block puts errno back. */
  int saved_errno = errno;
  for (;;) {
    smi_lock(&pool_lock);
    smi_check_pool(empty, abandoned, abandoned_full, &dismantle_blocks, false);
    smi_block_t *b = may_adopt ? adopt(cls) : NULL;
    if (b) {
      smi_unlock(&pool_lock);
      errno = saved_errno;
      return b;
    }
    /* Prefer an empty block already cut for this class, among the most recent few. */
    int look = 0;
    for (smi_block_t *e = empty[kind].head; e && look < 8; e = e->next, look++) {
      if (ready_for(e, cls)) {
        b = e;
        break;
      }
    }
    /* None: a medium or big one cold rather than a warm one cut for another
     * class, where the room is not counted (drop_old_slots: below). Most of
     * a recut block's warm pages would go back at once, one system call, and
     * a cold block's come back from the cool batches' calls: threadlife -t 2,
     * 21 interleaved runs, recutting warm blocks with their old pages given
     * back: CPU x1.09; taking cold ones first: x1.00 (drops 550 -> 180 a
     * run), the same peak within 3%. */
    bool peak_big = recent_peak(smi_now_ms()) >= EXIT_PEAK_MIN; /* (and the recut below) */
    if (!b && kind != SMI_KIND_SMALL && !peak_big && empty[COLD + kind].head) {
      b = empty[COLD + kind].head;
      taken_cold(b);
    }
    if (!b) b = empty[kind].head;
    if (!b && (b = empty[COLD + kind].head) != NULL) taken_cold(b);
    if (b) empty_remove(b);
    else b = reacquire(kind);
    smi_unlock(&pool_lock);
    if (!b) {
      smi_segment_t *seg = smi_segment_new(kind);
      if (smi_opt.verbose >= 2) {
        char line[128];
        snprintf(line, sizeof line, "slotmalloc: new segment %p (kind %u) for slots of %u bytes%s\n", (void *)seg,
                 kind, smi_class_size[cls], seg ? "" : ": the OS refused");
        smi_message(line);
      }
      if (!seg && !reclaimed) { /* before ENOMEM: everything empty goes back, then again */
        reclaimed = true;
        smi_pool_reclaim(a);
        continue;
      }
      if (!seg) return NULL;
      smi_lock(&pool_lock);
      for (uint32_t i = seg->nblocks; i-- > 1;) {
        seg->blocks[i].empty_since = smi_now_ms();
        empty_push(&seg->blocks[i]);
      }
      smi_unlock(&pool_lock);
      b = &seg->blocks[0];
    }
    b->empty_since = smi_now_ms(); /* out of the pool: when it left (arena.c's tidy) */
    if (ready_for(b, cls)) {
      if (b->flags & SMI_BLOCK_CLOSED) smi_block_reopen(b);
      smi_pool_touch(0, touched(b));
      errno = saved_errno;
      return b;
    }
    /* A warm block cut for another class hands out the slots over the
     * slots it handed out before at once: their pages are resident, and the
     * heap must count them (exit_room's estimate; cut with nothing handed
     * out, such a block counted a few pages of its 4 MiB). Not past them:
     * extended by its bytes counted before (its old generation table
     * included), threadlife faulted in 1.2 MiB more. Only where exit_room
     * can count (a recent peak of EXIT_PEAK_MIN or more): below it the
     * extension wrote links over pages tidy had given back, for nothing
     * (threadlife -t 2, 11 interleaved runs: peak RSS 6384 KiB with it, 6156
     * without; stress -t 8 -z 200 -n 10, 5 runs: 248 MB with it, 261 MB
     * without, the same faults and CPU time); there a medium or big block
     * gives the pages of its old slots back instead (drop_old_slots). The
     * lowest slots first
     * (smi_block_extend_to): extended a page at a time, each page in front
     * of the last, the block handed out its highest old slots first, and
     * tests/lean_prog.c's growing heap peaked at 27.2 MiB (default build;
     * 24.0 lowest first) and at 33.5 MiB in about a third of the hardened
     * build's runs (27.6), where 024fa12 had turned it off (30.4). */
    uint8_t *top = NULL;
    if ((b->flags & (SMI_BLOCK_FORMATTED | SMI_BLOCK_DECOMMITTED)) == SMI_BLOCK_FORMATTED)
      top = b->start + (size_t)b->bump * b->size;
    if (b->flags & SMI_BLOCK_DECOMMITTED) smi_os_account_recommit(smi_block_span(b));
    if (smi_block_format(b, cls)) {
      if (top && peak_big && top > b->start) smi_block_extend_to(b, (uint32_t)((size_t)(top - b->start) / b->size));
      else if (top) drop_old_slots(b, top);
      smi_pool_touch(0, touched(b));
      errno = saved_errno;
      return b;
    }
    /* Its epochs are used up: it stays out of service for good. */
    smi_block_decommit(b);
  }
}

void smi_pool_give(smi_block_t *b) {
  smi_check_block(b, 0);
  __atomic_store_n(&b->owner, NULL, __ATOMIC_RELEASE);
  __atomic_store_n(&b->flags, (uint8_t)(__atomic_load_n(&b->flags, __ATOMIC_RELAXED) & ~SMI_BLOCK_USER),
                   __ATOMIC_RELEASE);
  __atomic_store_n(&b->arena, NULL, __ATOMIC_RELEASE);
  b->empty_since = smi_now_ms();
  smi_pool_touch(touched(b), 0);
  smi_lock(&pool_lock);
  empty_push(b);
  keep_warm_bytes_bounded();
  smi_unlock(&pool_lock);
}

void smi_pool_abandon(smi_block_t *b) {
  b->arena = &smi_orphans;
  atomic_store_explicit((_Atomic(sm_arena_t *) *)&b->owner, NULL, memory_order_release);
  smi_lock(&pool_lock);
  abandoned_put(b, false);
  smi_unlock(&pool_lock);
}

/* Adds the blocks abandoned by exited threads (their objects are live). */
void smi_pool_count_abandoned(sm_stats_t *s) {
  smi_lock(&pool_lock);
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    for (int full = 0; full < 2; full++) {
      for (smi_block_t *b = (full ? abandoned_full : abandoned)[cls].head; b; b = b->next)
        smi_stats_count_block(b, s);
    }
  }
  smi_unlock(&pool_lock);
}

/* Gives the memory of blocks empty for longer than the purge delay back to the
 * OS; also collects abandoned blocks that other threads emptied. Runs at most
 * every quarter delay unless forced. */
void smi_pool_upkeep(bool force) {
  uint64_t now = smi_now_ms();
  uint32_t delay = smi_opt.purge_delay_ms;
  if (!force && now - atomic_load_explicit(&last_purge_ms, memory_order_relaxed) < delay / 4 + 1) return;
  smi_lock(&pool_lock);
  atomic_store_explicit(&last_purge_ms, now, memory_order_relaxed);
  smi_check_pool(empty, abandoned, abandoned_full, &dismantle_blocks, true);
  retain_decay();
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    /* (a biased count: freed into if the list has a head) */
    for (int full = 1; full >= 0; full--) {
      for (smi_block_t *b = (full ? abandoned_full : abandoned)[cls].head, *next; b; b = next) {
        next = b->next;
        if (!smi_remote_head(atomic_load_explicit(&b->remote, memory_order_relaxed))) continue;
        abandoned_take(b); /* freed into: worth another look */
        if (b->used == 0) abandoned_emptied(b);
        else abandoned_put(b, false);
      }
    }
  }
  size_t purged = 0; /* the oldest first, from the tail */
  cool_batch_t c = {.n = 0, .stamp = 0};
  for (unsigned k = 0; k < SMI_KINDS_OF_BLOCKS; k++)
    while (empty[k].tail && (force || now - empty[k].tail->empty_since >= delay)) purged += cool(&c, empty[k].tail);
  cool_flush(&c);
  smi_unlock(&pool_lock);
  if (purged && smi_opt.verbose >= 2) {
    char line[96];
    snprintf(line, sizeof line, "slotmalloc: %zu KiB of empty blocks given back to the OS\n", purged >> 10);
    smi_message(line);
  }
  smi_large_cache_upkeep(force);
}

/* ---- the dismantle queue ------------------------------------------------------ */

bool smi_dismantle_waiting(void) { return atomic_load_explicit(&dismantle_pending, memory_order_relaxed) != 0; }

void smi_dismantle_push(smi_block_t *b) {
  smi_lock(&pool_lock);
  smi_blist_push(&dismantle_blocks, b);
  smi_unlock(&pool_lock);
  atomic_fetch_add_explicit(&dismantle_pending, 1, memory_order_relaxed);
}

void smi_dismantle_push_large(smi_segment_t *seg) {
  smi_lock(&pool_lock);
  seg->large_next = dismantle_large;
  dismantle_large = seg;
  smi_unlock(&pool_lock);
  atomic_fetch_add_explicit(&dismantle_pending, 1, memory_order_relaxed);
}

/* One unit is one block or one large object. */
size_t smi_dismantle(size_t budget) {
  size_t done = 0;
  if (!smi_dismantle_waiting()) return 0; /* (every upkeep calls this: no lock when nothing waits) */
  while (done < budget) {
    smi_lock(&pool_lock);
    smi_block_t *b = dismantle_blocks.head;
    smi_segment_t *seg = NULL;
    if (b) smi_blist_remove(&dismantle_blocks, b);
    else if ((seg = dismantle_large) != NULL) dismantle_large = seg->large_next;
    if (b && atomic_load_explicit(&b->inflight, memory_order_acquire)) {
      /* A free into it is under way on another thread: later, behind the others. */
      bool alone = !dismantle_blocks.head;
      smi_blist_push_tail(&dismantle_blocks, b);
      smi_unlock(&pool_lock);
      if (alone) break; /* it is the only one left */
      done++;
      continue;
    }
    smi_unlock(&pool_lock);
    if (!b && !seg) break;
    if (b) {
      atomic_store_explicit(&b->remote, 0, memory_order_relaxed);
      atomic_store_explicit(&b->queued, 0, memory_order_relaxed);
      b->free = NULL;
      b->used = 0;
      smi_pool_give(b);
    } else {
      smi_large_free_dead(seg);
    }
    atomic_fetch_sub_explicit(&dismantle_pending, 1, memory_order_relaxed);
    done++;
  }
  return done;
}
