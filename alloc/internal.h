/* internal.h: the arena layer's types and its fast paths.
 *
 * Glossary (each word means this and nothing else):
 *   segment     a 4 MiB-aligned span: a header page of block descriptors, then
 *               blocks of one kind (slots/segment.h); or one large object
 *               (slots/large_segment.h). Found by address through the segment
 *               map, by id through the id table.
 *   block       a span of a segment cut into slots of one size class, with its
 *               generation table (at its end; the hardened build: its start).
 *   slot        the place of one object in a block; a free slot's first word
 *               links to the next free slot (the in-place freelist).
 *   generation  a slot's 8-bit counter: live bit and count (slots/generation.h).
 *   epoch       a block's (or a large object id's) counter, advanced each time
 *               the block is cut anew; handles carry it with the generation.
 *   class       a slot size (slots/size_class.h).
 *   arena       a view over a set of blocks and large objects that live and die
 *               together; arenas form a tree.
 *   root arena  a thread's own arena, where plain malloc allocates; never closed.
 *   heap        a thread's state: its root arena and its place in the heap list.
 *   pool        the process-wide blocks not in any arena: empty ones, abandoned
 *               ones, and those waiting to be dismantled (pool.c).
 *   orphans     the arena that keeps the large objects and child arenas of
 *               exited threads.
 *   owner       the arena whose thread frees into a block without atomics
 *               (block.owner); tagged full (smi_owner_full) on the full list.
 *   remote list a block's atomic list of slots freed by threads that do not own it.
 *   revisit     an arena's atomic stack of full blocks that other threads freed into.
 *   abandon     a thread exits: its blocks with live objects go to the pool,
 *               where another thread adopts them.
 *   close       an arena's objects all die at once: one vectorized generation sweep.
 *   dismantle   after a close, giving the blocks back, a few at a time.
 *   purge       giving an empty block's memory back to the OS after the delay.
 *   release     giving a whole empty segment back to the OS, address space too.
 *   retire      only of a slot: its generation wrapped, it is out of service
 *               until its block is cut anew. A block whose epochs are used up
 *               is worn out.
 *   none        the sentinel block (smi_block_none: nothing to give) and arena
 *               (smi_arena_none: a thread's current arena before its first call).
 *
 * Files of this layer include each other's declarations through this header,
 * which makes one cycle on purpose: the arena layer is one unit whose files
 * split it by job (allocation, free, tree, pool, large objects, threads, fork),
 * and each of them calls the others' entry points declared below.
 *
 * Allocation code overview (fast path inline here, the rest out of line):
 *   smi_malloc(n)                      pop the current block's in-place freelist
 *    -> smi_malloc_generic(a, n)       [arena.c] the first call of a thread, a closed arena
 *        -> smi_arena_alloc(a, n, ...) [arena.c] upkeep, dismantling, the byte cap
 *            -> alloc_from_class       [arena.c] collect remote frees, extend the block,
 *                -> next_block         [arena.c] another block of the arena's own,
 *                    -> smi_pool_take  [pool.c] adopt an abandoned block, reuse an empty one,
 *                        -> smi_segment_new [slots/segment.c] or map a new segment
 *            -> smi_large_malloc       [large.c] objects past the largest class
 *   smi_free(p)                        push onto the block's freelist (owner thread)
 *    -> smi_free_slow(p)               [free.c] full blocks, remote frees, large objects,
 *                                      generation wrap, and every kind of misuse
 */
#ifndef SMI_INTERNAL_H
#define SMI_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blist.h"
#include "include/slotmalloc.h"
#include "slots/lock.h"
#include "slots/generation.h"
#include "slots/large_segment.h"
#include "slots/segment.h"

#define smi_likely(x) __builtin_expect(!!(x), 1)
#define smi_unlikely(x) __builtin_expect(!!(x), 0)
#define SMI_COLD __attribute__((cold, noinline))

enum { SMI_ARENA_OPEN = 0, SMI_ARENA_CLOSED = 1, SMI_ARENA_MERGED = 2 };
enum { SMI_ARENA_USER = 0, SMI_ARENA_ROOT = 1, SMI_ARENA_ORPHANS = 2, SMI_ARENA_NONE = 3 };

typedef struct smi_heap_s smi_heap_t;

struct sm_arena_s {
  /* hot: read by the allocation fast path */
  smi_block_t *direct[SMI_DIRECT_BINS]; /* (size+15)/16 -> the current block of its class */
  /* the rest: slow paths, under lock unless said */
  smi_block_t *current[SMI_CLASSES]; /* where allocation happens; pinned (used + 1) */
  smi_blist_t avail[SMI_CLASSES];    /* blocks that may have free slots */
  smi_blist_t full;                  /* blocks without free slots (owner tagged | 1) */
  smi_segment_t *large;              /* large objects (linked through large_next) */
  smi_lock_t lock;                   /* guards the lists above against other threads */
  uint8_t type;                      /* SMI_ARENA_* type */
  _Atomic int state;                 /* SMI_ARENA_OPEN / CLOSED / MERGED */
  _Atomic int refs;                  /* user references */
  smi_heap_t *heap;                  /* a root arena's thread heap */
  /* the tree, under smi_tree_lock */
  sm_arena_t *parent, *first_child, *next_sibling, *prev_sibling;
  /* the byte cap: while limit != 0 every allocation and free takes the slow path */
  size_t limit;
  _Atomic size_t limited_bytes;
  _Atomic(smi_block_t *) revisit; /* full blocks other threads freed into */
  /* a revisit under way (under lock), for a fork child that lacks its thread: */
  smi_block_t *revisit_rest; /* the blocks it took off the stack and has not reached (still queued) */
  smi_block_t *revisit_at;   /* the block it is at (unqueued, or about to be) */
  uint64_t last_upkeep_ms;
  size_t upkeep_high;    /* the most smi_pool_in_use() read after an upkeep: growth past it brings the next */
  size_t tidy_peak;      /* upkeep's tidy: the most its slots held live lately (arena.c) */
  uint32_t slow_calls;   /* generic-path calls, for periodic upkeep */
  sm_arena_t *next_free; /* meta free list */
};

typedef struct smi_remote_table_s smi_remote_table_t; /* free.c */

struct smi_heap_s {
  sm_arena_t root;            /* the thread's root arena */
  smi_heap_t *next, *prev;    /* all live heaps, under smi_tree_lock */
  smi_remote_table_t *remote; /* its frees waiting to go to other threads' blocks (free.c), or NULL */
  bool done;
};

/* The arena plain malloc allocates in on this thread; &smi_arena_none until
 * the thread's first allocation. */
extern __thread sm_arena_t *smi_tls_cur;
extern __thread smi_heap_t *smi_tls_heap;
extern sm_arena_t smi_arena_none;  /* every direct slot -> smi_block_none */
extern smi_block_t smi_block_none; /* a block with nothing to give */
extern sm_arena_t smi_orphans;     /* blocks and arenas of exited threads */
extern smi_lock_t smi_tree_lock;   /* the arena tree, the heap list */

/* ---- the owner tag ----------------------------------------------------------
 * block.owner is the arena whose thread frees into the block without atomics
 * (NULL: every free takes the atomic path), or that arena tagged with bit 0
 * while the block sits on the arena's full list (its first free makes it
 * available again). */
static inline sm_arena_t *smi_owner_of(const sm_arena_t *a) { /* a cap counts every free */
  return a->limit ? NULL : (sm_arena_t *)a;
}
static inline sm_arena_t *smi_owner_full(const sm_arena_t *a) { return (sm_arena_t *)((uintptr_t)a | 1); }
static inline bool smi_owner_is_full(const sm_arena_t *o) { return (uintptr_t)o & 1; }
static inline sm_arena_t *smi_owner_arena(const sm_arena_t *o) {
  return (sm_arena_t *)((uintptr_t)o & ~(uintptr_t)1);
}

/* ---- fast paths ----------------------------------------------------------- */

void *smi_malloc_generic(sm_arena_t *a, size_t size, bool zero);
/* smi_malloc's miss: smi_malloc_generic on the thread's arena, with the size
 * still in the first argument's register (one move fewer on the fast path). */
void *smi_malloc_miss(size_t size);
void smi_free_slow(void *p);
/* smi_free's miss after its generation add (smi_gen_make_free returned
 * false): puts the generation back, then takes smi_free_slow. */
void smi_free_undo(void *p, uint8_t *g);
/* The owner thread freed the last object of b, which is not a current block:
 * it goes to the pool at once, so that memory goes back even if the program
 * then makes only fast-path calls (arena.c). */
void smi_block_emptied(smi_block_t *b);

/* The hardened build's hooks (nothing in the default build), and its own
 * smi_malloc and smi_free, which replace the two below. */
#include "harden.h"
#ifndef SMI_HARDENED
/* The instruction budget of the malloc+free pair is tests/fastpath_budget.txt,
 * counted by callgrind in the test suite; malloc's share includes finding the
 * slot's index and advancing its generation. */
static inline void *smi_malloc(size_t size) {
  sm_arena_t *a = smi_tls_cur;
  if (smi_likely(size <= SMI_DIRECT_MAX)) {
    smi_block_t *b = a->direct[(size + 15) >> 4];
    smi_free_t *p = b->free;
    if (smi_likely(p != NULL)) {
      smi_free_t *next = p->next;
      b->free = next;
      smi_prefetch_slot(next); /* the next malloc of the class reads its link and generation pointer */
      b->used++;
      smi_gen_make_live(p->gen); /* free -> live */
      return p;
    }
  }
  return smi_malloc_miss(size);
}

/* Its share of the pair's budget (tests/fastpath_budget.txt) goes mostly to the
 * checks: "ours?", "a slot start?", the generation. Everything unusual (another
 * thread's block, a full block, a large object, a wrapped generation, a
 * double or invalid free) falls to smi_free_slow. */
static inline void smi_free(void *p) {
  uintptr_t u = (uintptr_t)p, span = u >> SMI_SEG_SHIFT;
  if (smi_likely(smi_segmap[span] == SMI_MAP_SLOTS)) { /* no range check: see smi_map_of_unchecked */
    smi_block_t *b = smi_block_at_span(span, u);
    /* (acquire: another thread's reclaim wrote the block's free list and count,
     * then handed the block back with a release store of owner; on x86 a plain
     * load still) */
    if (smi_likely(__atomic_load_n(&b->owner, __ATOMIC_ACQUIRE) == smi_tls_cur)) {
      uint8_t *g;
      /* p must start a slot, which must be live, its generation not at the wrap */
      if (smi_likely(smi_slot_gen(b, u, &g))) {
        if (smi_unlikely(!smi_gen_make_free(g))) {
          smi_free_undo(p, g);
          return;
        }
        ((smi_free_t *)p)->gen = g;
        __asm__("" : "+r"(p)); /* two plain stores, not merged into one vector store */
        ((smi_free_t *)p)->next = b->free;
        b->free = (smi_free_t *)p;
        if (smi_unlikely(--b->used == 0)) smi_block_emptied(b); /* never the current block: pinned */
        return;
      }
    }
  }
  smi_free_slow(p);
}
#endif

/* A block of a user arena whose arena is closing or closed. Read after the
 * reader announced itself in b->inflight, it is exact: closing clears the
 * arena first, then waits for the announced readers, then sweeps. */
static inline bool smi_block_closing(const smi_block_t *b) {
  return (__atomic_load_n(&b->flags, __ATOMIC_ACQUIRE) & SMI_BLOCK_USER) &&
         !__atomic_load_n(&b->arena, __ATOMIC_SEQ_CST);
}

/* The live objects of a block: its live generations, counted 16 at a time;
 * exact at any moment, remote frees not yet collected included. */
static inline size_t smi_block_live(const smi_block_t *b) {
  return smi_gens_count_live(b->gens, smi_gens_len(b->nslots));
}

/* A block a quarter of whose slots wrapped their generation takes no new
 * allocations: it drains until empty, then is re-cut under a new epoch. */
static inline bool smi_block_draining(const smi_block_t *b) { return (size_t)b->retired * 4 >= b->nslots; }

/* ---- slow paths, by file ---------------------------------------------------- */

/* init.c: the process start-up, once, at the first allocation of any thread */
void smi_process_init(void);
bool smi_process_ready(void);

/* heap.c */
void smi_heap_key_create(void);       /* the thread-exit hook (at process start-up) */
sm_arena_t *smi_root_arena(void);     /* this thread's root arena, made on first use */
void smi_heap_after_fork(bool *mine); /* fork child: every heap and arena repaired */
/* Calls fn on every live thread's root arena (under smi_tree_lock). */
void smi_heap_each_root(void (*fn)(sm_arena_t *, sm_stats_t *), sm_stats_t *s);
void smi_heap_exit_others(void);    /* fork child: the other threads' heaps end as at thread exit */
void smi_heap_reclaim_others(void); /* smi_arena_reclaim of every other live thread's root arena */

/* fork.c */
void smi_fork_prepare(void); /* the pthread_atfork handlers: prepare, parent, child */
void smi_fork_parent(void);
void smi_fork_child(void);

/* arena.c */
/* block.queued: 0, or on a revisit stack (or taken off it by a revisit that
 * has not reached it); a fork child marks every queued block unseen until
 * it finds it on a stack (smi_revisit_fork_mark). */
enum { SMI_QUEUED = 1, SMI_QUEUED_UNSEEN = 2 };
/* Puts a full block on its arena's revisit stack (once: its queued flag). */
void smi_revisit_push(sm_arena_t *a, smi_block_t *b);
/* Fork child: before any repair, every queued block is marked unseen; each
 * arena's repair (smi_arena_after_fork) sees the blocks on its stack; after
 * them all, a block left unseen, whose push a vanished thread left half done,
 * is queued again (mine: the forking thread was inside an allocator lock,
 * and only the marks are undone). */
void smi_revisit_fork_mark(void);
void smi_revisit_fork_requeue(bool mine);
/* Makes b the current block of cls, and the direct slots follow (empty ones
 * while the arena has a cap). Under a->lock. */
void smi_arena_set_current(sm_arena_t *a, unsigned cls, smi_block_t *b);
void smi_arena_init(sm_arena_t *a, uint8_t type);
void *smi_arena_alloc(sm_arena_t *a, size_t size, size_t align, bool zero);
/* The arena plain malloc allocates in on this thread: the entered one, or the
 * root (set up at the thread's first call, and again the current one when the
 * entered arena was closed); NULL when no heap can be set up. */
sm_arena_t *smi_arena_current(void);
/* The calling thread's count of slow calls, into the process statistics. */
void smi_slow_calls_flush(void);
/* The byte cap (a->limit != 0): counts bytes in; false, counting nothing, past the cap. */
bool smi_arena_charge(sm_arena_t *a, size_t bytes);
void smi_arena_uncharge(sm_arena_t *a, size_t bytes);
void smi_arena_abandon_all(sm_arena_t *a); /* thread exit */
bool smi_arena_is_closed(const sm_arena_t *a);
void smi_arena_upkeep(sm_arena_t *a, bool force); /* empty blocks back to the pool */
/* On a's own thread: every empty block of a, its current ones included, to the pool. */
void smi_arena_trim(sm_arena_t *a);
/* From any thread: a's full blocks that other threads' frees emptied go to
 * the pool (those with room back to its avail lists), as its revisit does. */
void smi_arena_reclaim(sm_arena_t *a);
/* In a fork child: repairs a's lists if a thread the child does not have held its lock. */
void smi_arena_after_fork(sm_arena_t *a, bool *mine);

/* pool.c */
#define SMI_EMPTY_LISTS (2 * SMI_KINDS_OF_BLOCKS) /* the pool's empty lists: warm and cold per kind */
smi_block_t *smi_pool_take(sm_arena_t *a, unsigned cls);
void smi_pool_give(smi_block_t *b);    /* an empty block, back to the pool */
void smi_pool_abandon(smi_block_t *b); /* a block with live objects, left by its thread */
void smi_pool_drained(smi_block_t *b); /* a remote free read a count of 0: an abandoned block's last */
void smi_pool_thread_churn(void);      /* a thread starts or ends: the pool keeps what threads leave warm a while */
void smi_pool_upkeep(bool force);      /* purge empty blocks past the delay */
/* What of a block's memory was touched (whole pages); a block out of the pool
 * whose bump moves reports it, before and after, so the pool knows how much
 * the heap holds (its warm cap is a share of that). */
size_t smi_pool_touched(const smi_block_t *b);
void smi_pool_touch(size_t before, size_t after);
size_t smi_pool_in_use(void); /* the touched bytes of the blocks out of the pool: what the heap holds */
/* Before answering ENOMEM (and for malloc_trim), on the calling thread: the
 * empty blocks of a and of the thread's root arena go to the pool (current
 * ones too), the dismantle queue is finished, every empty block and cached
 * large object goes back to the OS, and so do whole empty segments. Other
 * threads' arenas give their blocks to the pool the moment they empty. */
void smi_pool_reclaim(sm_arena_t *a);
void smi_dismantle_push(smi_block_t *b); /* blocks of closed arenas */
void smi_dismantle_push_large(smi_segment_t *seg);
size_t smi_dismantle(size_t budget);
bool smi_dismantle_waiting(void);
#define SMI_DISMANTLE_BATCH 4     /* blocks dismantled at each allocation slow path */
#define SMI_DISMANTLE_ON_CLOSE 64 /* blocks dismantled by sm_arena_close itself */
void smi_pool_after_fork(bool *mine);
void smi_pool_count_abandoned(sm_stats_t *s); /* process statistics: s, the totals of a report (stats.h) */

/* large.c */
void *smi_large_malloc(sm_arena_t *a, size_t size, size_t align, bool zero);
void smi_large_free(smi_segment_t *seg, void *p);
void smi_large_free_dead(smi_segment_t *seg); /* killed already: cache or unmap */
bool smi_large_try_kill(smi_segment_t *seg);  /* live -> dead, once; under its arena's lock */
/* Resizes a live large object; *dead when it was freed or closed meanwhile. */
void *smi_large_realloc(smi_segment_t *seg, size_t size, bool *dead);
bool smi_large_hfree(uint32_t id, uint64_t tag); /* frees it if tag is still its live tag */
smi_segment_t *smi_large_of(const void *p);      /* the large segment whose object starts at p, or NULL */
void smi_large_cache_upkeep(bool force);
void smi_large_after_fork(bool *mine);
void smi_large_list_add(sm_arena_t *a, smi_segment_t *seg);    /* under a->lock */
void smi_large_list_remove(sm_arena_t *a, smi_segment_t *seg); /* under a->lock */

/* free.c */
void smi_remote_flush(void);     /* the thread's batches of remote frees onto their blocks' lists */
void smi_remote_sweep(void);     /* those of its batches not added to since the last sweep */
void smi_remote_batch_end(void); /* thread exit: flushed, and no batching any more */
/* Fork child: a vanished thread's batches are forgotten (it may have stopped
 * mid-change), the table's memory freed. */
void smi_remote_forget(smi_heap_t *h);
unsigned smi_remote_place(const smi_block_t *b); /* where b's batch goes in a thread's table */
bool smi_slot_is_live(const smi_block_t *b, uintptr_t u, uint32_t *index);
size_t smi_usable_size(const void *p);
/* Frees slot i of b if its generation is still gen (for sm_hfree); false otherwise. */
bool smi_slot_free_checked(smi_block_t *b, uint32_t i, void *p, uint8_t gen);
sm_arena_t *smi_arena_of_object(const void *p); /* arena of a live object, NULL otherwise */

/* error.c */
enum { SMI_ERR_DOUBLE_FREE, SMI_ERR_INVALID_FREE, SMI_ERR_INVALID_REALLOC, SMI_ERR_CORRUPT };
void smi_report(int kind, const void *p, size_t size);
void smi_message(const char *text);

/* options.c: one field per SLOTMALLOC_* variable (the table in options.c
 * parses them strictly; a bad value keeps the default, with one warning). */
enum { SMI_STATS_OFF = 0, SMI_STATS_TEXT = 1, SMI_STATS_JSON = 2 };
typedef struct {
  bool abort_on_error;     /* SLOTMALLOC_ABORT_ON_ERROR (default 1) */
  uint8_t stats;           /* SLOTMALLOC_STATS: SMI_STATS_* at exit (default off) */
  const char *stats_file;  /* SLOTMALLOC_STATS_FILE: path (%p: pid) or NULL (stderr); points into environ */
  int verbose;             /* SLOTMALLOC_VERBOSE (0..2) */
  uint32_t purge_delay_ms; /* SLOTMALLOC_PURGE_DELAY_MS (default 100) */
  bool numa;               /* SLOTMALLOC_NUMA (default 0): bind new segments to the thread's node */
  size_t large_cache;      /* SLOTMALLOC_LARGE_CACHE_MB, in bytes (default 128 MiB) */
  size_t prof_sample;      /* SLOTMALLOC_PROF_SAMPLE: mean bytes between samples (0: off) */
  const char *prof_file;   /* SLOTMALLOC_PROF_FILE: path (%p: pid) or NULL; points into environ */
  bool leaks;              /* SLOTMALLOC_LEAKS: a leak report at exit (default 0) */
  bool background_purge;   /* SLOTMALLOC_BACKGROUND_PURGE (default 0) */
  bool batch_madvise;      /* SLOTMALLOC_BATCH_MADVISE (default 0): process_madvise for many ranges */
} smi_options_t;
extern smi_options_t smi_opt;
void smi_options_load(void);
/* Copies pattern to out with each %p replaced by the pid; returns the length,
 * 0 if it does not fit (or pattern is NULL). Allocates nothing. */
size_t smi_path_expand(const char *pattern, char *out, size_t size);

/* prof.c: the heap profiler (SLOTMALLOC_PROF_SAMPLE) and the leak report
 * (SLOTMALLOC_LEAKS). While profiling is on, an arena's direct bins stay
 * empty (as under a byte cap), so every allocation reaches smi_arena_alloc,
 * which calls smi_prof_sample: the fast paths stay as they are. */
static inline bool smi_direct_off(const sm_arena_t *a) { return a->limit || smi_opt.prof_sample; }
/* The byte count-down; samples p (size bytes asked) with its stack from the
 * frame returning to ret (smi_arena_alloc's return address). */
void smi_prof_sample(void *p, size_t size, const void *ret);
extern __thread uint64_t smi_prof_left; /* bytes before this thread's next sample (0: draw) */
static inline void smi_prof_count(void *p, size_t size, const void *ret) {
  if (smi_likely(smi_prof_left > size)) smi_prof_left -= size;
  else smi_prof_sample(p, size, ret);
}
int smi_prof_write(const char *pattern); /* sm_prof_dump: 0 or an errno code */
void smi_prof_at_exit(void);             /* SLOTMALLOC_PROF_FILE, SLOTMALLOC_LEAKS */
/* " (allocated at 0x... ...)" into out if the freed object at p was sampled;
 * its length (0: none). For misuse reports: allocates nothing. */
size_t smi_prof_site(const void *p, char *out, size_t room);
void smi_prof_after_fork(bool *mine);

/* stats.c */
void smi_stats_at_exit(void);

/* background.c: the opt-in background purge thread */
void smi_background_start(void);      /* once, if the option is on; call holding no lock */
void smi_background_after_fork(void); /* fork child: started again when next needed */

/* meta.c: memory for arena and heap structs (never from the arenas themselves) */
void *smi_meta_alloc(size_t size);
void smi_meta_free(void *p, size_t size);
void smi_meta_after_fork(bool *mine);

#endif
