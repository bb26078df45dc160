/* unit_merge.c: sm_arena_merge against another thread's free that is
 * queueing one of src's full blocks on src's revisit stack (queue_full in
 * free.c, announced in the block's inflight). Linked with the static library
 * and two internal calls wrapped (tests/CMakeLists.txt: -Wl,--wrap), so the
 * interleaving is forced:
 *   smi_revisit_push      the remote free stops just before its push;
 *   smi_block_wait_frees  says when the merge waits for the block's frees. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "alloc/internal.h"

void __real_smi_revisit_push(sm_arena_t *a, smi_block_t *b);
void __real_smi_block_wait_frees(smi_block_t *b);

static _Atomic(smi_block_t *) push_pause_at; /* the block whose queueing pauses (once) */
static _Atomic(smi_block_t *) wait_watch;    /* the block whose wait is announced */
static atomic_int pushing;                   /* the remote free is inside its push */
static atomic_int merge_waits;               /* the merge waits for the block's frees */

void __wrap_smi_revisit_push(sm_arena_t *a, smi_block_t *b) {
  smi_block_t *want = b;
  if (atomic_compare_exchange_strong(&push_pause_at, &want, NULL)) {
    atomic_store(&pushing, 1);
    while (!atomic_load(&merge_waits)) sched_yield();
  }
  __real_smi_revisit_push(a, b);
}

void __wrap_smi_block_wait_frees(smi_block_t *b) {
  if (b == atomic_load(&wait_watch)) atomic_store(&merge_waits, 1);
  __real_smi_block_wait_frees(b);
}

#define SIZE 1024 /* a small block of 1 KiB slots */

static void *remote_free(void *p) {
  sm_free(p); /* a user arena's block: never batched */
  return NULL;
}

static bool on_stack(sm_arena_t *a, smi_block_t *b) {
  for (smi_block_t *f = atomic_load(&a->revisit); f; f = f->revisit_next)
    if (f == b) return true;
  return false;
}

/* src's block X is full. Another thread frees an object of X and, having read
 * X's owner (src, full), is about to push X onto src's revisit stack when
 * src merges into dst: the merge moves X to dst's full list and waits for
 * X's announced frees, and the push lands on src's stack. X must end up
 * where dst's revisit finds it (on dst's stack, or not marked queued so that
 * the next remote free queues it): else, marked queued on the stack of an
 * arena that is gone, no free ever queues it again and dst never collects
 * its remote frees (the block and its freed slots are held for good). */
Test(merge, remote_free_queueing_a_merged_block_reaches_the_new_arena, .timeout = 60) {
  sm_arena_t *src = sm_arena_new(NULL), *dst = sm_arena_new(NULL);
  cr_assert(src && dst);
  sm_arena_enter(src);
  void *objs[256];
  int n = 0;
  objs[n++] = sm_malloc(SIZE);
  smi_block_t *x = smi_block_of(objs[0]);
  /* until the objects past x fill another block and open a third: x is full,
   * and that switch moved it from the avail list to the full list */
  for (smi_block_t *next = NULL;;) {
    cr_assert_lt(n, 256);
    void *p = sm_malloc(SIZE);
    cr_assert_not_null(p);
    objs[n++] = p;
    smi_block_t *b = smi_block_of(p);
    if (b == x) continue;
    if (next && b != next) break;
    next = b;
  }
  sm_arena_enter(NULL);
  cr_assert_eq(x->owner, smi_owner_full(src), "the block is not on src's full list");
  atomic_store(&push_pause_at, x);
  atomic_store(&wait_watch, x);
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, remote_free, objs[0]), 0);
  while (!atomic_load(&pushing)) sched_yield();
  cr_assert_eq(sm_arena_merge(dst, src), 0);
  pthread_join(t, NULL);
  cr_assert(atomic_load(&merge_waits), "the merge did not wait for the block's frees");
  cr_assert_eq(x->arena, dst);
  cr_assert(!atomic_load(&x->queued) || on_stack(dst, x),
            "the block is marked queued but not on dst's revisit stack (on src's: %d)", on_stack(src, x));
  /* what malloc_trim does for dst: its full blocks that other threads freed into */
  smi_arena_reclaim(dst);
  cr_assert_eq(atomic_load(&x->remote), 0, "dst's revisit did not collect the remote free into the merged block");
  for (int i = 1; i < n; i++) sm_free(objs[i]);
  sm_arena_release(src);
  sm_arena_release(dst);
}
