/* heap.c: thread heaps. Each thread gets a root arena on its first allocation;
 * at thread exit its empty blocks go back to the pool and blocks that still
 * hold objects are abandoned to the pool, where other threads adopt them.
 * Also the process set-up (options, exit statistics) and fork handling. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

__thread sm_arena_t *smi_tls_cur = &smi_arena_empty;
__thread smi_heap_t *smi_tls_heap;

smi_lock_t smi_tree_lock = SMI_LOCK_INIT;
static smi_heap_t *heaps;          /* live heaps, under smi_tree_lock */
static pthread_key_t heap_key;
static _Atomic int process_state;  /* 0 new, 1 setting up, 2 ready */

static void heap_done(void *arg);
static void at_exit(void) { smi_stats_at_exit(); }

static void process_init(void) {
  int expect = 0;
  if (!atomic_compare_exchange_strong(&process_state, &expect, 1)) {
    while (atomic_load(&process_state) != 2) sched_yield();
    return;
  }
  smi_options_load();
  pthread_key_create(&heap_key, heap_done);
  atomic_store(&process_state, 2);
  /* These may allocate: they run after the state is ready. */
  pthread_atfork(smi_heap_fork_prepare, smi_heap_fork_parent, smi_heap_fork_child);
  atexit(at_exit);
}

sm_arena_t *smi_heap_init(void) {
  if (smi_tls_heap && !smi_tls_heap->done) return &smi_tls_heap->root;
  if (atomic_load_explicit(&process_state, memory_order_acquire) != 2) {
    process_init();
    /* process_init may have allocated, and so set up this thread's heap */
    if (smi_tls_heap && !smi_tls_heap->done) return &smi_tls_heap->root;
  }
  smi_options_load();
  smi_heap_t *h = smi_meta_alloc(sizeof *h);
  if (!h) return NULL;
  smi_arena_init(&h->root, SMI_ARENA_ROOT);
  h->root.heap = h;
  smi_lock(&smi_tree_lock);
  h->next = heaps;
  if (heaps) heaps->prev = h;
  heaps = h;
  smi_unlock(&smi_tree_lock);
  smi_tls_heap = h;
  smi_tls_cur = &h->root;
  pthread_setspecific(heap_key, h);
  return &h->root;
}

sm_arena_t *smi_root_arena(void) {
  smi_heap_t *h = smi_tls_heap;
  if (h && !h->done) return &h->root;
  return smi_heap_init();
}

/* Thread exit: give everything back; children of the root go to the orphans. */
static void heap_retire(smi_heap_t *h) {
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

static void heap_done(void *arg) {
  smi_heap_t *h = arg;
  if (!h || h->done) return;
  h->done = true;
  smi_tls_cur = &smi_arena_empty;
  smi_tls_heap = NULL;
  heap_retire(h);
  smi_pool_upkeep(false);
  smi_meta_free(h, sizeof *h);
}

/* ---- fork: every lock is taken before fork and given back after, so the
 * child finds consistent structures; the child then abandons the heaps of the
 * threads it does not have, so their objects can still be freed. */

static void each_arena_lock(sm_arena_t *a, bool take) {
  for (; a; a = a->next_sibling) {
    if (take) smi_lock(&a->lock);
    each_arena_lock(a->first_child, take);
  }
}

extern smi_lock_t *smi_segment_lock(void);

void smi_heap_fork_prepare(void) {
  smi_lock(&smi_tree_lock);
  for (smi_heap_t *h = heaps; h; h = h->next) {
    smi_lock(&h->root.lock);
    each_arena_lock(h->root.first_child, true);
  }
  smi_lock(&smi_orphans.lock);
  each_arena_lock(smi_orphans.first_child, true);
  smi_lock(smi_pool_lock());
  smi_lock(smi_large_cache_lock());
  smi_lock(smi_meta_lock());
  smi_lock(smi_segment_lock());
}

static void each_arena_unlock(sm_arena_t *a) {
  for (; a; a = a->next_sibling) {
    smi_unlock(&a->lock);
    each_arena_unlock(a->first_child);
  }
}

void smi_heap_fork_parent(void) {
  smi_unlock(smi_segment_lock());
  smi_unlock(smi_meta_lock());
  smi_unlock(smi_large_cache_lock());
  smi_unlock(smi_pool_lock());
  each_arena_unlock(smi_orphans.first_child);
  smi_unlock(&smi_orphans.lock);
  for (smi_heap_t *h = heaps; h; h = h->next) {
    each_arena_unlock(h->root.first_child);
    smi_unlock(&h->root.lock);
  }
  smi_unlock(&smi_tree_lock);
}

void smi_heap_fork_child(void) {
  smi_heap_fork_parent();
  smi_segment_after_fork_child();
  /* Only this thread lives on: the other heaps' blocks become orphans. */
  smi_heap_t *h = heaps;
  while (h) {
    smi_heap_t *next = h->next;
    if (h != smi_tls_heap) {
      h->done = true;
      heap_retire(h);
    }
    h = next;
  }
}

/* Calls fn on every live thread's root arena (under smi_tree_lock). */
void smi_heap_each_root(void (*fn)(sm_arena_t *, sm_stats_t *), sm_stats_t *s) {
  for (smi_heap_t *h = heaps; h; h = h->next) fn(&h->root, s);
}
