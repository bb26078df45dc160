/* heap.c: thread heaps. Each thread gets a root arena on its first allocation;
 * at thread exit its empty blocks go back to the pool and blocks that still
 * hold objects are abandoned to the pool, where other threads adopt them.
 * fork.c has the fork policy, and this file the walk over heaps and arenas it
 * needs; init.c the process start-up. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "check.h"

__thread sm_arena_t *smi_tls_cur = &smi_arena_none;
__thread smi_heap_t *smi_tls_heap;

static smi_heap_t *heaps;      /* live heaps, under smi_tree_lock */
static pthread_key_t heap_key; /* its destructor ends a thread's heap */

static void heap_done(void *arg);

void smi_heap_key_create(void) { pthread_key_create(&heap_key, heap_done); }

static sm_arena_t *heap_init(void) {
  if (smi_tls_heap && !smi_tls_heap->done) return &smi_tls_heap->root;
  if (!smi_process_ready()) {
    smi_process_init();
    /* the start-up may have allocated, and so set up this thread's heap */
    if (smi_tls_heap && !smi_tls_heap->done) return &smi_tls_heap->root;
  }
  smi_options_load();
  smi_heap_t *h = smi_meta_alloc(sizeof *h);
  if (!h) return NULL;
  smi_arena_init(&h->root, SMI_ARENA_ROOT);
  h->root.heap = h;
  smi_lock(&smi_tree_lock);
  bool others = heaps != NULL;
  h->next = heaps;
  if (heaps) heaps->prev = h;
  heaps = h;
  smi_unlock(&smi_tree_lock);
  smi_tls_heap = h;
  smi_tls_cur = &h->root;
  pthread_setspecific(heap_key, h);
  /* (pool.c: what threads leave at their exit; not the first thread: a
   * program's start is no churn of threads) */
  if (others) smi_pool_thread_churn();
  return &h->root;
}

sm_arena_t *smi_root_arena(void) {
  smi_heap_t *h = smi_tls_heap;
  if (h && !h->done) return &h->root;
  return heap_init();
}

/* Thread exit: give everything back; children of the root go to the orphans. */
static void heap_exit(smi_heap_t *h) {
  smi_lock(&smi_tree_lock);
  if (h->prev) h->prev->next = h->next;
  else heaps = h->next;
  if (h->next) h->next->prev = h->prev;
  sm_arena_t *c = h->root.first_child;
  while (c) {
    sm_arena_t *next = c->next_sibling;
    c->parent = &smi_orphans;
    c->prev_sibling = NULL;
    c->next_sibling = smi_orphans.first_child;
    if (smi_orphans.first_child) smi_orphans.first_child->prev_sibling = c;
    smi_orphans.first_child = c;
    c = next;
  }
  h->root.first_child = NULL;
  smi_unlock(&smi_tree_lock);
  smi_arena_abandon_all(&h->root);
}

/* The thread's heap is the one its TLS names, not arg: in a static program that
 * dlopens a library linked with libc.so, the second libc's keys share the
 * threads' key slots with the first's, and its key 0 overwrote heap_key's
 * value with the library's own (which this ended as a heap, and crashed). */
static void heap_done(void *arg) {
  (void)arg;
  smi_heap_t *h = smi_tls_heap;
  if (!h || h->done) return;
  smi_remote_batch_end();
  smi_slow_calls_flush();
  h->done = true;
  smi_tls_cur = &smi_arena_none;
  smi_tls_heap = NULL;
  smi_pool_thread_churn(); /* before its blocks come (pool.c: what threads leave at their exit) */
  heap_exit(h);
  smi_pool_upkeep(false);
  smi_meta_free(h, sizeof *h);
}

/* ---- fork (alloc/fork.c has the policy) ------------------------------------- */

#define FORK_WALK_MAX ((size_t)1 << 22) /* arenas and heaps a child visits at most */

/* Repairs one arena and its subtree in a fork child; relink: the tree lock was
 * orphaned, so the back links and parents are rebuilt from the forward ones
 * (which every tree change keeps a valid chain). */
static void after_fork_subtree(sm_arena_t *a, bool relink, bool *mine, size_t *budget) {
  smi_arena_after_fork(a, mine);
  sm_arena_t *prev = NULL;
  for (sm_arena_t *c = a->first_child; c; prev = c, c = c->next_sibling) {
    if (!*budget || c == a) { /* a cycle left by a half-done change: cut it */
      if (prev) prev->next_sibling = NULL;
      else a->first_child = NULL;
      break;
    }
    --*budget;
    if (relink) {
      c->prev_sibling = prev;
      c->parent = a;
    }
    after_fork_subtree(c, relink, mine, budget);
  }
}

void smi_heap_after_fork(bool *mine) {
  bool relink = smi_lock_orphaned(&smi_tree_lock, mine);
  size_t budget = FORK_WALK_MAX;
  smi_heap_t *prev = NULL;
  for (smi_heap_t *h = heaps; h; prev = h, h = h->next) {
    if (!budget) {
      if (prev) prev->next = NULL;
      else heaps = NULL;
      break;
    }
    --budget;
    if (relink) h->prev = prev;
    after_fork_subtree(&h->root, relink, mine, &budget);
  }
  after_fork_subtree(&smi_orphans, relink, mine, &budget);
}

void smi_heap_exit_others(void) {
  smi_heap_t *h = heaps;
  while (h) {
    smi_heap_t *next = h->next;
    if (h != smi_tls_heap) {
      smi_check_forked(); /* its thread may have stopped mid-update: see check.h */
      smi_remote_forget(h);
      h->done = true;
      heap_exit(h);
    }
    h = next;
  }
}

void smi_heap_reclaim_others(void) {
  smi_lock(&smi_tree_lock);
  for (smi_heap_t *h = heaps; h; h = h->next)
    if (h != smi_tls_heap) smi_arena_reclaim(&h->root);
  smi_unlock(&smi_tree_lock);
}

/* Calls fn on every live thread's root arena (under smi_tree_lock). */
void smi_heap_each_root(void (*fn)(sm_arena_t *, sm_stats_t *), sm_stats_t *s) {
  for (smi_heap_t *h = heaps; h; h = h->next) fn(&h->root, s);
}
