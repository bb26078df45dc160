/* unit_genrace.c: what other threads see of the value free's fast path leaves
 * in a generation for a moment when the add did not free (a double free: the
 * byte reads (live, count + 1) until smi_free_undo puts it back). The undo is
 * wrapped at link time (tests/CMakeLists.txt: -Wl,--wrap=smi_free_undo, in
 * both builds), so the other thread's action runs
 * exactly inside that moment, not when a race happens to land there; the
 * reports are counted through -Wl,--wrap=smi_report. Both tests run in
 * report-and-ignore mode (abort_on_error off), where the program goes on
 * after a report and the heap must stay whole.
 *
 * The first and the third failed on 1336c50 (fixed by cb95572: counts 0
 * and 1 never live, smi_block_reopen marks the block wrapped). The second
 * fails, and is disabled: a free slot at count c reads (live, c + 1) in the
 * moment, and another thread's free of the same pointer (free_remote's
 * compare-and-swap) takes it for live, wins, and pushes the slot, already on
 * the freelist, onto the remote list, unreported: the limitation README's
 * guarantees name (one report of the two; it aborts by default). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "alloc/internal.h"

/* ---- the hooks ----------------------------------------------------------------- */

static void (*inside_undo)(void *p); /* runs once, before the real undo */
static atomic_int reports[4];

void __real_smi_report(int kind, const void *p, size_t size);
void __wrap_smi_report(int kind, const void *p, size_t size) {
  atomic_fetch_add(&reports[kind], 1);
  __real_smi_report(kind, p, size);
}

static void run_inside(void *p) {
  void (*fn)(void *) = inside_undo;
  inside_undo = NULL;
  if (fn) fn(p);
}

void __real_smi_free_undo(void *p, uint8_t *g);
void __wrap_smi_free_undo(void *p, uint8_t *g) {
  run_inside(p);
  __real_smi_free_undo(p, g);
}

static void report_mode(void) {
  sm_free(sm_malloc(16)); /* the process is set up (options read) */
  smi_opt.abort_on_error = false;
}

/* ---- a stale handle of a retired slot ------------------------------------------ */

#define SIZE 64
static void *deref_inside;

/* A handle of the slot's object at every cycle, so at its wrap the slot
 * retires with generation 0; a double free then adds 0x81: (live, 1) for a
 * moment (on 1336c50 the first generation of slot 0, whose fresh count was 1).
 * Another thread's sm_deref of any old handle in that moment must still say
 * stale: the slot is dead memory. */
#define CYCLES 200
static sm_handle_t old_handles[CYCLES];
static int nold;

static void deref_old_handles(void *p) {
  (void)p;
  deref_inside = NULL;
  for (int k = 0; k < nold && !deref_inside; k++) deref_inside = sm_deref(old_handles[k]);
}

Test(genrace, double_free_of_a_retired_slot_keeps_its_old_handles_stale) {
#ifdef SMI_HARDENED
  cr_skip_test("the hardened build's quarantine keeps a freed slot from being taken again at once");
#endif
  report_mode();
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  sm_arena_enter(a);
  void *p = sm_malloc(SIZE);
  smi_block_t *b = smi_block_of(p);
  uint32_t i = smi_slot_index(b, (uintptr_t)p);
  /* (slot 0: its fresh count was 1 on 1336c50) */
  /* free and take it again until it wraps and retires (a handle named the block) */
  for (;;) {
    cr_assert_lt(nold, CYCLES, "slot never retired");
    old_handles[nold] = sm_handle_of(p);
    cr_assert_neq(old_handles[nold], 0);
    nold++;
    sm_free(p);
    void *q = sm_malloc(SIZE);
    cr_assert_not_null(q);
    if (q != p) {
      sm_free(q);
      break;
    }
  }
  cr_assert_eq(b->gens[i], SMI_GEN_WRAPPED, "retired slot reads %#x", b->gens[i]);
  deref_old_handles(NULL);
  cr_assert_null(deref_inside);
  int before = atomic_load(&reports[SMI_ERR_DOUBLE_FREE]);
  deref_inside = (void *)1;
  inside_undo = deref_old_handles;
  sm_free(p); /* a double free */
  cr_assert_null(inside_undo, "the fast path's add did not reach the undo");
  cr_assert_eq(atomic_load(&reports[SMI_ERR_DOUBLE_FREE]), before + 1);
  cr_assert_null(deref_inside, "a stale handle dereferenced to the retired slot %p during a double free", p);
  cr_assert_eq(b->gens[i], SMI_GEN_WRAPPED, "the retired slot reads %#x after the report", b->gens[i]);
  sm_arena_enter(NULL);
  sm_arena_release(a);
}

/* ---- another thread's double free of the same slot ------------------------------ */

static void *remote_free_thread(void *p) {
  sm_free(p);
  return NULL;
}

static void free_on_another_thread(void *p) {
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, remote_free_thread, p), 0);
  pthread_join(t, NULL); /* its exit flushes its batch of remote frees */
}

/* The owner frees p a second time, and in the moment its add leaves p's
 * generation reading live, another thread frees p too: two double frees,
 * and both must be reported; and p, already on its block's freelist, must
 * not also be queued on the remote list by the other thread's
 * compare-and-swap (it would be handed out twice). */
/* (disabled: fails; README's guarantees name this race, see the header) */
Test(genrace, racing_double_frees_are_both_reported_and_hand_out_nothing_twice, .disabled = true) {
  report_mode();
  void *p = sm_malloc(SIZE);
  cr_assert_not_null(p);
  sm_free(p);
  int before = atomic_load(&reports[SMI_ERR_DOUBLE_FREE]);
  inside_undo = free_on_another_thread;
  sm_free(p); /* a double free, and the other thread's */
  cr_assert_null(inside_undo, "the fast path's add did not reach the undo");
  int reported = atomic_load(&reports[SMI_ERR_DOUBLE_FREE]) - before;
  /* every object of the class until the block's freelist and remote list are
   * both used up: none twice */
  enum { N = 4096 };
  static void *objs[N];
  int dup = -1;
  for (int k = 0; k < N && dup < 0; k++) {
    objs[k] = sm_malloc(SIZE);
    cr_assert_not_null(objs[k]);
    for (int j = 0; j < k; j++)
      if (objs[j] == objs[k]) dup = k;
  }
  cr_expect_eq(reported, 2, "%d of the two double frees reported", reported);
  cr_assert_lt(dup, 0, "%p handed out twice while live", dup >= 0 ? objs[dup] : NULL);
}

/* ---- a double free after a close wrapped the slot ------------------------------- */

/* Slot 32 of a fresh block starts at count SMI_GEN_RESTART, as slot 0. Its object lives at
 * the last count (SMI_GEN_LAST) when its arena closes: the close sweep wraps
 * it to 0, and the block, reopened for another arena (unnamed: no handle),
 * restarts it at SMI_GEN_RESTART: its fresh value. A free of the old
 * object then frees a slot that was handed out: a double free, not an
 * invalid free (report_not_live's "never handed out" test). */
Test(genrace, free_after_a_close_that_wrapped_the_slot_is_a_double_free) {
#ifdef SMI_HARDENED
  cr_skip_test("the hardened build shuffles fresh slots: slot 32 is not the 33rd object");
#endif
  report_mode();
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  sm_arena_enter(a);
  void *objs[33];
  for (int k = 0; k < 33; k++) objs[k] = sm_malloc(SIZE);
  void *p = objs[32];
  smi_block_t *b = smi_block_of(p);
  uint32_t i = smi_slot_index(b, (uintptr_t)p);
  cr_assert_eq(smi_gen_fresh(i), SMI_GEN_RESTART, "slot %u (fresh count %u)", i, smi_gen_fresh(i));
  while (b->gens[i] != SMI_GEN_LAST) {
    sm_free(p);
    cr_assert_eq(sm_malloc(SIZE), p);
  }
  sm_arena_enter(NULL);
  sm_arena_close(a);
  cr_assert_eq(b->gens[i], SMI_GEN_WRAPPED);
  sm_collect(1000); /* the dismantle only (SIZE_MAX would give the empty blocks back to the OS too) */
  sm_arena_t *a2 = sm_arena_new(NULL);
  cr_assert_not_null(a2);
  sm_arena_enter(a2);
  /* the arena's blocks until it takes b (reopened): its first object there is slot 0 */
  int n = 0;
  while (smi_block_of(sm_malloc(SIZE)) != b) cr_assert_lt(++n, 200000, "the block was not reopened");
  cr_assert_eq(b->gens[i], SMI_GEN_RESTART);
  int dbl = atomic_load(&reports[SMI_ERR_DOUBLE_FREE]), inv = atomic_load(&reports[SMI_ERR_INVALID_FREE]);
  sm_free(p); /* the closed arena's object */
  cr_expect_eq(atomic_load(&reports[SMI_ERR_INVALID_FREE]) - inv, 0, "reported as an invalid free");
  cr_assert_eq(atomic_load(&reports[SMI_ERR_DOUBLE_FREE]) - dbl, 1);
  sm_arena_enter(NULL);
  sm_arena_release(a2);
  sm_arena_release(a);
}
