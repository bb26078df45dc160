/* unit_ownership.c: the owner's frees into its full blocks against another
 * thread's smi_arena_reclaim (malloc_trim, the background purge), and a fork
 * in the middle of that reclaim. Linked with the static library and with two
 * of its internal calls wrapped (tests/CMakeLists.txt: -Wl,--wrap), which
 * pause a thread at an exact point, so each interleaving is forced, not
 * hoped for:
 *   smi_block_collect  the reclaiming thread stops inside its critical
 *                      section (the arena's lock held) at a chosen block;
 *   smi_lock_wait      says when a thread found a watched lock held and waits. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc/internal.h"

/* ---- the hooks ----------------------------------------------------------------- */

size_t __real_smi_block_collect(smi_block_t *b);
void __real_smi_lock_wait(smi_lock_t *l);

static _Atomic(smi_lock_t *) watch;     /* the lock whose waiters are counted */
static atomic_int watch_hits;           /* threads that found it held */
static _Atomic(smi_block_t *) pause_at; /* the block whose collect pauses (once) */
static void (*pause_fn)(void);          /* what the paused thread does meanwhile */
static bool pause_after;                /* pause after the collect (else before it) */
static atomic_int paused;               /* the pause happened */

void __wrap_smi_lock_wait(smi_lock_t *l) {
  if (l == atomic_load(&watch)) atomic_fetch_add(&watch_hits, 1);
  __real_smi_lock_wait(l);
}

size_t __wrap_smi_block_collect(smi_block_t *b) {
  smi_block_t *want = b;
  if (!atomic_compare_exchange_strong(&pause_at, &want, NULL)) return __real_smi_block_collect(b);
  size_t n = pause_after ? __real_smi_block_collect(b) : 0;
  atomic_store(&paused, 1);
  pause_fn();
  return pause_after ? n : __real_smi_block_collect(b);
}

static void wait_for(atomic_int *v, int value) {
  while (atomic_load(v) < value) sched_yield();
}

/* ---- full blocks of the calling thread ------------------------------------------- */

#define SIZE 1024 /* a small block of 1 KiB slots: 63 of them */
#define MAX_OBJS 512

typedef struct {
  smi_block_t *b;
  void *objs[128]; /* the block's objects, all of its slots */
  uint32_t n;
} full_block_t;

static void *spill[MAX_OBJS]; /* objects past the full blocks */
static int nspill;

/* Fills blocks with the calling thread's objects until n of them went full:
 * each is full, all its slots the thread's, its owner tagged full. (The
 * block the class starts in may hold objects of the test runner's, whose
 * malloc is this one: the first block filled is a fresh one, whose first
 * object is ours.) (A block
 * a switch leaves goes to the avail list; the next switch finds it without
 * room and moves it to the full list: the objects past the n blocks fill one
 * more block and open another.) */
static void fill_blocks(full_block_t *out, int n) {
  sm_arena_t *a = smi_tls_cur;
  int k = -1;
  smi_block_t *spill_block = NULL;
  for (int tries = 0; tries < MAX_OBJS * 4; tries++) {
    void *p = sm_malloc(SIZE);
    cr_assert_not_null(p);
    smi_block_t *b = smi_block_of(p);
    if (k < 0 && b->used != 2) continue; /* (used: its objects + 1, the pin of the current block) */
    if (spill_block) {
      cr_assert_lt(nspill, MAX_OBJS);
      spill[nspill++] = p;
      if (b != spill_block) break; /* it opened another block: out[k] went to the full list */
      continue;
    }
    if (k < 0 || b != out[k].b) {
      if (k + 1 == n) {
        cr_assert_lt(nspill, MAX_OBJS);
        spill[nspill++] = p; /* it opened another block: out[k] went full */
        spill_block = b;
        continue;
      }
      out[++k] = (full_block_t){.b = b};
    }
    cr_assert_lt(out[k].n, 128);
    out[k].objs[out[k].n++] = p;
  }
  a = smi_tls_cur;
  for (int i = 0; i < n; i++) {
    smi_block_t *b = out[i].b;
    cr_assert_eq(b->owner, smi_owner_full(a), "block %d is not on the full list", i);
    cr_assert_eq(b->used, out[i].n, "block %d holds objects of others", i);
    cr_assert_eq(b->used, b->nslots, "block %d is not full", i);
  }
}

/* ---- 1. the owner frees into a draining block while a reclaim collects it -------- */

/* A block drains (takes no new allocation) once a quarter of its slots have
 * retired (their generation wrapped while a handle named the block). Other
 * threads' frees of wrapping slots retire them only when collected, so the
 * collect of a foreign smi_arena_reclaim can turn a full block draining
 * inside its critical section. The owner frees into a full draining block
 * without making it available again; that free must wait for the arena's
 * lock too, or it races the collect (b->free, b->used, b->retired). */

static full_block_t fb;
static sm_arena_t *owner_arena;
static atomic_int phase;   /* 1: the block is ready; 2: the owner frees; 3: the owner may end */
static atomic_int freed;   /* the owner's free returned */
static int freed_in_pause; /* it had returned while the reclaim held the lock */

static void *owner_thread(void *arg) {
  (void)arg;
  fill_blocks(&fb, 1);
  owner_arena = smi_tls_cur;
  cr_assert_neq(sm_handle_of(fb.objs[0]), 0); /* the block is named: its wrapped slots retire */
  uint32_t quarter = (fb.b->nslots + 3) / 4;
  for (uint32_t i = 0; i < quarter; i++) /* the first quarter at the last generation: their frees wrap */
    __atomic_store_n(&fb.b->gens[smi_slot_index(fb.b, (uintptr_t)fb.objs[i])], SMI_GEN_LAST, __ATOMIC_RELAXED);
  atomic_store(&phase, 1);
  wait_for(&phase, 2);
  sm_free(fb.objs[fb.n - 1]); /* the owner's free into its full, now draining, block */
  atomic_store(&freed, 1);
  wait_for(&phase, 3);
  for (uint32_t i = quarter; i < fb.n - 1; i++) sm_free(fb.objs[i]); /* (the first quarter: freed remotely) */
  for (int i = 0; i < nspill; i++) sm_free(spill[i]);
  return NULL;
}

/* Inside the reclaim (the owner's arena locked), the block just collected
 * (draining now): the owner frees into it; wait until that free is done, or
 * waits for the lock. */
static void let_owner_free(void) {
  atomic_store(&watch, &owner_arena->lock);
  atomic_store(&phase, 2);
  while (!atomic_load(&freed) && !atomic_load(&watch_hits)) sched_yield();
  freed_in_pause = atomic_load(&freed);
}

Test(ownership, owner_free_into_draining_block_waits_for_reclaim, .timeout = 120) {
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, owner_thread, NULL), 0);
  wait_for(&phase, 1);
  smi_block_t *b = fb.b;
  uint32_t quarter = (b->nslots + 3) / 4, n = fb.n;
  cr_assert_lt(quarter + 2, n);
  for (uint32_t i = 0; i < quarter; i++) sm_free(fb.objs[i]); /* remote frees that wrap: marked to retire */
  smi_remote_flush();
  cr_assert(atomic_load(&b->queued), "the remote frees did not queue the full block on its arena's revisit stack");
  cr_assert_eq(b->retired, 0);
  pause_fn = let_owner_free;
  pause_after = true;
  atomic_store(&pause_at, b);
  smi_arena_reclaim(owner_arena); /* collects: the block drains */
  cr_assert(atomic_load(&paused), "the reclaim did not collect the block");
  cr_assert_not(freed_in_pause,
                "the owner's free into its draining full block ran while another thread's reclaim held the arena's "
                "lock and collected the block");
  wait_for(&freed, 1);
  cr_assert_eq(b->retired, quarter);
  cr_assert_eq(b->used, n - quarter - 1, "used %u, want %u", b->used, n - quarter - 1);
  cr_assert_eq(b->owner, smi_owner_full(owner_arena), "a draining block stays full");
  atomic_store(&phase, 3);
  pthread_join(t, NULL);
}

/* ---- 2. a fork while another thread's reclaim holds the revisit stack ---------------- */

/* A revisit takes the arena's whole revisit stack at once, then looks at its
 * blocks one by one, each marked queued until then (a remote free does not
 * queue a queued block again). A fork child that does not have the
 * reclaiming thread must still collect every block that was on the stack:
 * the one the reclaim was at, and the ones it had not reached. */

static full_block_t fbs[2];
static atomic_int fork_phase; /* 1: the blocks are queued; 2: fork now; 3: forked */

static void fork_now(void) {
  atomic_store(&fork_phase, 2);
  wait_for(&fork_phase, 3);
}

static void *reclaimer_thread(void *arg) {
  sm_arena_t *a = arg;
  for (int i = 0; i < 2; i++) sm_free(fbs[i].objs[0]); /* remote frees: both full blocks queued */
  smi_remote_flush();
  smi_block_t *top = atomic_load(&a->revisit);
  if (!top || !atomic_load(&fbs[0].b->queued) || !atomic_load(&fbs[1].b->queued)) return (void *)1;
  pause_fn = fork_now;
  pause_after = false;
  atomic_store(&pause_at, top); /* the first block it looks at: the other one waits, still marked */
  atomic_store(&fork_phase, 1);
  smi_arena_reclaim(a);
  return atomic_load(&paused) ? NULL : (void *)2;
}

/* The fork child: the owner's next revisit (its upkeep) collects both blocks,
 * which then have room again. 0, or what went wrong. */
static int child_collects_both(sm_arena_t *a) {
  smi_arena_upkeep(a, true);
  for (int i = 0; i < 2; i++) {
    smi_block_t *b = fbs[i].b;
    if (atomic_load(&b->remote)) return 10 + i; /* its remote free was never collected */
    if (b->owner != a || b->used != fbs[i].n - 1) return 20 + i;
  }
  return 0;
}

Test(ownership, fork_during_reclaim_keeps_every_queued_block, .timeout = 120) {
  sm_arena_t *a = smi_root_arena();
  cr_assert_not_null(a);
  fill_blocks(fbs, 2);
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, reclaimer_thread, a), 0);
  while (atomic_load(&fork_phase) < 2) sched_yield();
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) _exit(child_collects_both(a));
  atomic_store(&fork_phase, 3);
  void *rc;
  pthread_join(t, &rc);
  cr_assert_null(rc, "the reclaim did not run as planned (%d)", (int)(intptr_t)rc);
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status), "the fork child died: status %#x", status);
  cr_assert_eq(WEXITSTATUS(status), 0,
               "fork child: %d (1x: block x's remote free was never collected; 2x: block x did not come back)",
               WEXITSTATUS(status));
}

/* ---- 3. a reclaim takes draining blocks too ------------------------------------------- */

/* A draining full block that other threads' frees emptied goes back to the
 * pool at another thread's reclaim (malloc_trim, the background purge), as
 * any full block does: the owner's own frees into it take the arena's lock. */

static atomic_int drain_phase; /* 1: block full and named; 2: quarter freed; 3: owner collected; 4: end */

static void *draining_owner(void *arg) {
  (void)arg;
  fill_blocks(&fb, 1);
  owner_arena = smi_tls_cur;
  cr_assert_neq(sm_handle_of(fb.objs[0]), 0);
  uint32_t quarter = (fb.b->nslots + 3) / 4;
  for (uint32_t i = 0; i < quarter; i++)
    __atomic_store_n(&fb.b->gens[smi_slot_index(fb.b, (uintptr_t)fb.objs[i])], SMI_GEN_LAST, __ATOMIC_RELAXED);
  atomic_store(&drain_phase, 1);
  wait_for(&drain_phase, 2);
  smi_arena_upkeep(owner_arena, true); /* the owner's revisit collects: the block drains, still full */
  atomic_store(&drain_phase, 3);
  wait_for(&drain_phase, 4);
  for (int i = 0; i < nspill; i++) sm_free(spill[i]);
  return NULL;
}

Test(ownership, reclaim_takes_draining_blocks_other_threads_emptied, .timeout = 120) {
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, draining_owner, NULL), 0);
  wait_for(&drain_phase, 1);
  smi_block_t *b = fb.b;
  uint32_t quarter = (b->nslots + 3) / 4;
  for (uint32_t i = 0; i < quarter; i++) sm_free(fb.objs[i]);
  smi_remote_flush();
  atomic_store(&drain_phase, 2);
  wait_for(&drain_phase, 3);
  cr_assert(smi_block_draining(b), "retired %u of %u", b->retired, b->nslots);
  cr_assert_eq(b->owner, smi_owner_full(owner_arena));
  for (uint32_t i = quarter; i < fb.n; i++) sm_free(fb.objs[i]); /* the rest: the block is empty but for them */
  smi_remote_flush();
  smi_arena_reclaim(owner_arena);
  cr_assert_eq(b->used, 0, "the reclaim left the draining block's %u remote frees uncollected", b->used);
  cr_assert_neq(b->owner, smi_owner_full(owner_arena), "the emptied draining block stayed on the full list");
  atomic_store(&drain_phase, 4);
  pthread_join(t, NULL);
}

/* ---- 4. a remote free queues a block while its owner thread exits ------------------- */

/* A remote free into a full block queues the block on its owner arena's
 * revisit stack (marking it queued) after it read the owner. If the owner's
 * thread exits meanwhile, its blocks go to the pool; a push that lands on the
 * stack of the arena that is gone leaves the block marked for good, so once
 * another thread adopts it, no remote free queues it for that thread either
 * (and the push wrote into the freed heap). Thread exit waits for such pushes
 * and empties the stack after them. */

void __real_smi_revisit_push(sm_arena_t *a, smi_block_t *b);
void __real_smi_block_wait_frees(smi_block_t *b);
static _Atomic(smi_block_t *) push_pause_at; /* the block whose queueing by a remote free pauses */
static _Atomic(smi_block_t *) wait_watch;    /* thread exit waits for frees into this block */
static atomic_int exit_waits;
static pthread_t exiting;
static atomic_int exit_phase; /* 1: the block is full; 2: the thread may end */

void __wrap_smi_block_wait_frees(smi_block_t *b) {
  if (b == atomic_load(&wait_watch)) atomic_store(&exit_waits, 1);
  __real_smi_block_wait_frees(b);
}

static _Atomic(smi_block_t *) push_fork_at; /* the block whose queueing by a remote free forks (test 5) */
static pid_t push_forked = -1;              /* what that fork returned */

static _Atomic(smi_block_t *) push_half_at; /* the block whose queueing stops halfway (test 6) */
static atomic_int half_phase;               /* 1: flagged, not linked; 2: go on */
static void push_halfway(smi_block_t *b);

void __wrap_smi_revisit_push(sm_arena_t *a, smi_block_t *b) {
  smi_block_t *want = b;
  if (atomic_compare_exchange_strong(&push_half_at, &want, NULL)) push_halfway(b);
  want = b;
  if (atomic_compare_exchange_strong(&push_fork_at, &want, NULL)) push_forked = fork(); /* both go on */
  want = b;
  if (atomic_compare_exchange_strong(&push_pause_at, &want, NULL)) {
    atomic_store(&paused, 1);
    atomic_store(&exit_phase, 2); /* the owner's thread ends now */
    while (!atomic_load(&exit_waits) && pthread_tryjoin_np(exiting, NULL) != 0) sched_yield();
  }
  __real_smi_revisit_push(a, b);
}

static void *exiting_owner(void *arg) {
  (void)arg;
  fill_blocks(&fb, 1);
  owner_arena = smi_tls_cur;
  atomic_store(&exit_phase, 1);
  wait_for(&exit_phase, 2);
  return NULL; /* its heap ends: its blocks go to the pool, live objects and all */
}

Test(ownership, remote_free_racing_owner_exit_leaves_no_block_queued, .timeout = 120) {
  cr_assert_eq(pthread_create(&exiting, NULL, exiting_owner, NULL), 0);
  wait_for(&exit_phase, 1);
  smi_block_t *b = fb.b;
  atomic_store(&wait_watch, b);
  atomic_store(&push_pause_at, b);
  sm_free(fb.objs[0]); /* a remote free into the full block: it will queue it */
  smi_remote_flush();
  cr_assert(atomic_load(&paused), "the remote free did not queue the full block");
  pthread_join(exiting, NULL); /* (joined already, unless the exit waited for the free) */
  cr_assert_null(b->owner, "the block did not leave with its thread");
  cr_assert_not(atomic_load(&b->queued),
                "the block left with its thread marked queued on the revisit stack of the arena that is gone");
  cr_assert(atomic_load(&exit_waits), "the thread's exit did not wait for the remote free's announced push");
}

/* ---- 5. a fork in the middle of a free announced in its block's inflight -------
 * A free announced in its block's inflight (here a remote free queueing a full
 * block; also a free into a user arena's block, sm_hfree) that a signal
 * handler interrupts to fork: the child zeroes every block's count (frees under
 * way on threads it does not have never end), then the interrupted free resumes
 * in the child and ends its announcement. The count must not go below zero:
 * wrapped, it keeps every later wait for the block's frees (a close, a re-cut,
 * a thread's exit) spinning for ever. The fork here is made where the handler
 * would make it, inside the free. */

Test(ownership, fork_inside_an_announced_free_leaves_the_count_at_zero, .timeout = 120) {
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, exiting_owner, NULL), 0); /* (it ends once the test lets it) */
  wait_for(&exit_phase, 1);
  smi_block_t *b = fb.b;
  atomic_store(&push_fork_at, b);
  sm_free(fb.objs[0]); /* a remote free into the full block: it queues it, and forks there */
  smi_remote_flush();
  cr_assert_neq(push_forked, -1, "the remote free did not queue the full block (or the fork failed)");
  if (push_forked == 0) {    /* the child: the free ended here too */
    alarm(20);               /* a wait that never ends is killed */
    smi_block_wait_frees(b); /* as a close or a re-cut of the block would */
    _exit(atomic_load(&b->inflight) == 0 ? 0 : 3);
  }
  int status;
  cr_assert_eq(waitpid(push_forked, &status, 0), push_forked);
  cr_assert(!WIFSIGNALED(status) || WTERMSIG(status) != SIGALRM,
            "the fork child's wait for the block's frees never ended: its count went below zero");
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the fork child: status %#x", status);
  atomic_store(&exit_phase, 2);
  pthread_join(t, NULL);
}

/* ---- 6. a fork between a push's flag and its link ---------------------------------
 * A remote free queueing a full block flags it queued, then links it onto its
 * owner's revisit stack. A fork child that does not have a thread stopped
 * between the two must still collect the block's remote frees: the block is
 * flagged, so no later remote free queues it, and it is on no stack. The stop
 * is made where a thread could be preempted: right after the flag. */

/* The first half of smi_revisit_push: the flag, not the link; the parent's
 * push then goes on from the start, as if the flag had not been set. */
static void push_halfway(smi_block_t *b) {
  cr_assert_eq(atomic_exchange(&b->queued, SMI_QUEUED), 0);
  atomic_store(&half_phase, 1);
  wait_for(&half_phase, 2);
  atomic_store(&b->queued, 0);
}

static full_block_t halfb;

static void *remote_freer(void *arg) {
  (void)arg;
  sm_free(halfb.objs[0]); /* a remote free into the full block: it queues the block */
  smi_remote_flush();
  return NULL;
}

/* The fork child: the owner's revisit (its upkeep) collects the remote free,
 * and the block, with room again, is available. 0, or what went wrong. */
static int child_collects_halfway(sm_arena_t *a) {
  smi_block_t *b = halfb.b;
  if (atomic_load(&b->queued) && !atomic_load(&a->revisit)) return 2; /* flagged, on no stack */
  smi_arena_upkeep(a, true);
  if (atomic_load(&b->remote)) return 10; /* the remote free was never collected */
  if (b->owner != a || b->used != halfb.n - 1) return 20;
  return 0;
}

Test(ownership, fork_between_a_push_flag_and_its_link_requeues_the_block, .timeout = 120) {
  sm_arena_t *a = smi_root_arena();
  cr_assert_not_null(a);
  fill_blocks(&halfb, 1);
  atomic_store(&push_half_at, halfb.b);
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, remote_freer, NULL), 0);
  wait_for(&half_phase, 1);
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) _exit(child_collects_halfway(a));
  atomic_store(&half_phase, 2);
  pthread_join(t, NULL);
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status), "the fork child died: status %#x", status);
  cr_assert_eq(WEXITSTATUS(status), 0,
               "fork child: %d (2: the block stayed flagged on no stack; 10: its remote free was never collected; "
               "20: it did not come back)",
               WEXITSTATUS(status));
  cr_assert(atomic_load(&halfb.b->queued), "the parent's push did not go on");
}
