/* unit_remote_batch.c: a thread's frees into other threads' blocks wait in
 * batches, one per block (alloc/free.c, "the remote batches"), and reach each
 * block's remote list together, one exchange a batch. Frees that alternate
 * among a few blocks keep one batch each (with a single batch, every change
 * of block pushed the one before: one exchange nearly every free). What the
 * batches must keep: every handle of a freed object is stale at the free, a
 * second free of an object whose batch waits is reported, a batch goes out
 * when full (64 slots, 4 KiB: larger slots never wait), at the second sweep
 * that finds it not added to, and at the thread's exit. A free that comes
 * while the thread is changing its batches (a signal handler's) goes out
 * alone: smi_meta_alloc is wrapped at link time (tests/CMakeLists.txt) to
 * free inside the making of the table, the first remote free's. Linked with
 * the static library: the blocks' remote list words are read directly while
 * their owner thread waits. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc/internal.h"
#include "testutil.h"

#define CLASSES 4                                      /* blocks the frees alternate among */
#define OBJS 160                                       /* objects of each, all in its first block */
static const size_t sizes[CLASSES] = {16, 32, 48, 64}; /* (64 of them: 4 KiB) */

static struct {
  tu_stage_t stage; /* 1: the owner allocated; 2: it may end */
  smi_block_t *b[CLASSES];
  void *objs[CLASSES][OBJS];
} own = {TU_STAGE_INIT, {0}, {{0}}};

static void set_stage(int s) { tu_stage_set(&own.stage, s); }
static void wait_stage(int s) { tu_stage_wait(&own.stage, s); }

/* Allocates OBJS objects of each size (each size's in one block), then waits
 * without calling the allocator, and ends (its heap ends: its blocks are
 * abandoned, with what is still live in them). */
static void *owner(void *arg) {
  (void)arg;
  for (int c = 0; c < CLASSES; c++)
    for (int k = 0; k < OBJS; k++) {
      void *p = sm_malloc(sizes[c]);
      cr_assert_not_null(p);
      if (k == 0) own.b[c] = smi_block_of(p);
      cr_assert_eq(smi_block_of(p), own.b[c], "size %zu's objects are not all in one block", sizes[c]);
      own.objs[c][k] = p;
    }
  set_stage(1);
  wait_stage(2);
  return NULL;
}

static pthread_t start_owner(void) {
  own.stage.n = 0;
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, owner, NULL), 0);
  wait_stage(1);
  /* the test needs each block's batch a place of its own in the table */
  for (int c = 0; c < CLASSES; c++)
    for (int d = 0; d < c; d++)
      if (smi_remote_place(own.b[c]) == smi_remote_place(own.b[d]))
        cr_skip_test("blocks %d and %d share a place of the table", d, c);
  return t;
}

/* The free a signal handler would make, run once inside the library's next
 * smi_meta_alloc (wrapped). */
static void *nested_free;
void *__real_smi_meta_alloc(size_t size);
void *__wrap_smi_meta_alloc(size_t size) {
  void *p = nested_free;
  nested_free = NULL;
  if (p) sm_free(p);
  return __real_smi_meta_alloc(size);
}

/* The slots a batch of b's holds (1: they never wait). */
static uint32_t batch_slots(const smi_block_t *b) {
  size_t size = b->size;
  return size * 2 > 4096 ? 1 : size * 64 > 4096 ? (uint32_t)(4096 / size) : 64;
}

static uint32_t remote_count(int c) { return smi_remote_count(atomic_load(&own.b[c]->remote)); }

/* Frees objects from..to-1 of every class, alternating among the blocks. */
static void free_alternating(int from, int to) {
  for (int k = from; k < to; k++)
    for (int c = 0; c < CLASSES; c++) sm_free(own.objs[c][k]);
}

/* The slots on block c's remote list: distinct, freed, as many as its count. */
static uint32_t walk_remote(int c) {
  smi_block_t *b = own.b[c];
  uintptr_t w = atomic_load(&b->remote);
  uint32_t n = 0;
  for (smi_free_t *f = smi_remote_head(w); f; f = (smi_free_t *)(smi_link_dec(b, f, f->next) & ~(uintptr_t)1)) {
    cr_assert_lt(n, OBJS, "block %d's remote list is longer than what was freed (a cycle?)", c);
    n++;
  }
  return n;
}

Test(remote_batch, frees_alternating_among_blocks_reach_each_list_in_batches, .timeout = 60) {
  pthread_t t = start_owner();
  free_alternating(0, 10);
  for (int c = 0; c < CLASSES; c++)
    cr_assert_eq(remote_count(c), 0,
                 "block %d: %u of its 10 frees reached its remote list before a flush (one batch for all blocks: "
                 "every change of block pushes)",
                 c, remote_count(c));
  smi_remote_flush();
  for (int c = 0; c < CLASSES; c++) {
    cr_assert_eq(remote_count(c), 10, "block %d: %u slots on its list after the flush", c, remote_count(c));
    cr_assert_eq(walk_remote(c), 10);
  }
  /* 64 more each, alternating: each batch goes out whole when full (64
   * slots; the hardened build's 64-byte slots are larger: 4 KiB of them) */
  free_alternating(10, 74);
  for (int c = 0; c < CLASSES; c++) {
    uint32_t full = batch_slots(own.b[c]), want = 10 + 64 / full * full;
    cr_assert_eq(remote_count(c), want, "block %d: %u slots on its list, not 10 + full batches of %u", c,
                 remote_count(c), full);
    cr_assert_eq(smi_remote_head(atomic_load(&own.b[c]->remote)), own.objs[c][want - 1],
                 "block %d's list does not start at the last free", c);
    cr_assert_eq(walk_remote(c), want);
  }
  /* the pending slots still count as used: no block of the owner emptied */
  for (int c = 0; c < CLASSES; c++) cr_assert_geq(own.b[c]->used, OBJS - 74);
  free_alternating(74, OBJS);
  smi_remote_flush();
  for (int c = 0; c < CLASSES; c++) cr_assert_eq(remote_count(c), OBJS);
  set_stage(2);
  pthread_join(t, NULL);
}

Test(remote_batch, a_batch_not_added_to_goes_out_at_the_second_sweep, .timeout = 60) {
  pthread_t t = start_owner();
  smi_remote_flush();
  free_alternating(0, 3);
  smi_remote_sweep(); /* added to since the last: they stay */
  for (int c = 0; c < CLASSES; c++) cr_assert_eq(remote_count(c), 0, "block %d's batch went out at once", c);
  sm_free(own.objs[0][3]); /* block 0's batch added to again */
  smi_remote_sweep();      /* the others: not added to since the last sweep */
  cr_assert_eq(remote_count(0), 0, "block 0's batch, added to, went out");
  for (int c = 1; c < CLASSES; c++)
    cr_assert_eq(remote_count(c), 3, "block %d's batch, not added to, holds %u", c, remote_count(c));
  smi_remote_sweep();
  cr_assert_eq(remote_count(0), 4);
  for (int k = 3; k < OBJS; k++)
    for (int c = 0; c < CLASSES; c++)
      if (c || k > 3) sm_free(own.objs[c][k]);
  smi_remote_flush();
  for (int c = 0; c < CLASSES; c++) cr_assert_eq(remote_count(c), OBJS);
  set_stage(2);
  pthread_join(t, NULL);
}

/* A thread that frees into the owner's blocks and ends: its exit sends its batches. */
static void *free_and_end(void *arg) {
  (void)arg;
  free_alternating(0, 20);
  for (int c = 0; c < CLASSES; c++) cr_assert_eq(remote_count(c), 0);
  return NULL;
}

Test(remote_batch, a_thread_exit_sends_its_batches, .timeout = 60) {
  pthread_t t = start_owner();
  pthread_t f;
  cr_assert_eq(pthread_create(&f, NULL, free_and_end, NULL), 0);
  pthread_join(f, NULL);
  for (int c = 0; c < CLASSES; c++) {
    cr_assert_eq(remote_count(c), 20, "block %d: %u of the ended thread's 20 frees arrived", c, remote_count(c));
    cr_assert_eq(walk_remote(c), 20);
  }
  free_alternating(20, OBJS);
  smi_remote_flush();
  set_stage(2);
  pthread_join(t, NULL);
}

Test(remote_batch, handles_are_stale_and_a_double_free_is_reported_while_the_batch_waits, .timeout = 60) {
  pthread_t t = start_owner();
  smi_remote_flush();
  static sm_handle_t h[CLASSES][OBJS];
  for (int c = 0; c < CLASSES; c++)
    for (int k = 0; k < OBJS; k++) {
      h[c][k] = sm_handle_of(own.objs[c][k]);
      cr_assert_neq(h[c][k], 0);
    }
  for (int k = 0; k < 30; k++)
    for (int c = 0; c < CLASSES; c++) {
      sm_free(own.objs[c][k]);
      cr_assert_null(sm_deref(h[c][k]), "a handle of a freed object (class %d, %d) still dereferences", c, k);
      cr_assert_eq(sm_hfree(h[c][k]), ESTALE);
    }
  for (int c = 0; c < CLASSES; c++) cr_assert_eq(remote_count(c), 0); /* (they wait) */
  for (int c = 0; c < CLASSES; c++)
    for (int k = 30; k < OBJS; k++) cr_assert_eq(sm_deref(h[c][k]), own.objs[c][k], "a live object's handle broke");

  /* free objs[1][5] again while its batch waits: reported, and not queued twice */
  char path[] = "/tmp/unit_remote_batch_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  unlink(path);
  fflush(stderr);
  int saved = dup(STDERR_FILENO);
  dup2(fd, STDERR_FILENO);
  smi_opt.abort_on_error = false;
  sm_free(own.objs[1][5]);
  smi_opt.abort_on_error = true;
  dup2(saved, STDERR_FILENO);
  close(saved);
  char text[512] = {0}, want[64];
  cr_assert_gt(pread(fd, text, sizeof text - 1, 0), 0, "the second free was not reported");
  close(fd);
  snprintf(want, sizeof want, "slotmalloc: double free of %p", own.objs[1][5]);
  cr_assert_not_null(strstr(text, want), "the report reads '%s', not '%s ...'", text, want);

  smi_remote_flush();
  for (int c = 0; c < CLASSES; c++) {
    cr_assert_eq(remote_count(c), 30, "block %d: %u slots on its list for 30 frees", c, remote_count(c));
    cr_assert_eq(walk_remote(c), 30);
  }
  free_alternating(30, OBJS);
  smi_remote_flush();
  set_stage(2);
  pthread_join(t, NULL);
}

/* Objects of 1 KiB, 4 KiB and 64 KiB (8 of each, each size's in one block)
 * of a thread that then waits. */
#define BIG_CLASSES 3
static const size_t big_sizes[BIG_CLASSES] = {1 << 10, 4 << 10, 64 << 10};
static void *big[BIG_CLASSES][8];
static void *big_owner(void *arg) {
  (void)arg;
  for (int c = 0; c < BIG_CLASSES; c++)
    for (int k = 0; k < 8; k++) {
      big[c][k] = sm_malloc(big_sizes[c]);
      cr_assert_not_null(smi_block_of(big[c][k]), "a %zu-byte object is not in a slot block", big_sizes[c]);
      cr_assert_eq(smi_block_of(big[c][k]), smi_block_of(big[c][0]));
    }
  set_stage(1);
  wait_stage(2);
  return NULL;
}
static uint32_t big_count(int c) { return smi_remote_count(atomic_load(&smi_block_of(big[c][0])->remote)); }

Test(remote_batch, a_batch_holds_4_KiB_at_most, .timeout = 60) {
  own.stage.n = 0;
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, big_owner, NULL), 0);
  wait_stage(1);
  for (int k = 0; k < 8; k++) {
    uint32_t full = batch_slots(smi_block_of(big[0][0])); /* 4 (1 KiB slots; 3 in the hardened build) */
    cr_assert_gt(full, 1);
    sm_free(big[0][k]); /* out with every full-th */
    cr_assert_eq(big_count(0), (uint32_t)(k + 1) / full * full, "after %d frees of 1 KiB, %u on the list", k + 1,
                 big_count(0));
    sm_free(big[1][k]); /* 4 and 64 KiB: alone */
    cr_assert_eq(big_count(1), (uint32_t)k + 1, "a free of 4 KiB waited");
    sm_free(big[2][k]);
    cr_assert_eq(big_count(2), (uint32_t)k + 1, "a free of 64 KiB waited");
  }
  set_stage(2);
  pthread_join(t, NULL);
}

Test(remote_batch, a_free_inside_a_change_of_the_batches_goes_out_alone, .timeout = 60) {
  sm_free(sm_malloc(16)); /* this thread's heap, but no batches yet */
  pthread_t t = start_owner();
  nested_free = own.objs[1][0];
  sm_free(own.objs[0][0]); /* the first remote free: its table is made, and objs[1][0] freed meanwhile */
  cr_assert_null(nested_free, "the table was not made at the first remote free");
  cr_assert_eq(remote_count(1), 1, "the free inside went to %u slots of its block's list, not out alone",
               remote_count(1));
  cr_assert_eq(remote_count(0), 0, "the outer free did not wait in a batch");
  for (int c = 2; c < CLASSES; c++) sm_free(own.objs[c][0]);
  free_alternating(1, OBJS);
  smi_remote_flush();
  for (int c = 0; c < CLASSES; c++) {
    cr_assert_eq(remote_count(c), OBJS, "block %d: %u of its %d frees on its list", c, remote_count(c), OBJS);
    cr_assert_eq(walk_remote(c), OBJS);
  }
  set_stage(2);
  pthread_join(t, NULL);
}

/* ---- a fork while batches wait ---------------------------------------------- */

/* A thread that frees objects 0..9 of every class and waits, its batches held. */
static atomic_int holder_phase; /* 1: freed; 2: may end */
static void *holder(void *arg) {
  (void)arg;
  free_alternating(0, 10);
  atomic_store(&holder_phase, 1);
  while (atomic_load(&holder_phase) < 2) sched_yield();
  return NULL;
}

/* The fork child: its own thread's batches (objects 10..19) reach the blocks
 * at its flush; those of the holder, a thread it does not have, are forgotten
 * (it may have stopped mid-change); the child goes on freeing and batching.
 * (The child ended the owner's heap: its blocks are abandoned, and what their
 * lists' words count is read as growth, not as a whole.) */
static int child_flushes_its_own(void) {
  uint16_t start[CLASSES];
  for (int c = 0; c < CLASSES; c++) start[c] = (uint16_t)remote_count(c);
  smi_remote_flush();
  for (int c = 0; c < CLASSES; c++)
    if ((uint16_t)(remote_count(c) - start[c]) != 10) return 20 + c;
  free_alternating(20, 30);
  for (int c = 0; c < CLASSES; c++)
    if ((uint16_t)(remote_count(c) - start[c]) != 10) return 10 + c;
  smi_remote_flush();
  for (int c = 0; c < CLASSES; c++)
    if ((uint16_t)(remote_count(c) - start[c]) != 20) return 30 + c;
  return 0;
}

Test(remote_batch, a_fork_child_sends_its_own_batches_and_forgets_the_vanished_threads, .timeout = 60) {
  pthread_t t = start_owner(), h;
  cr_assert_eq(pthread_create(&h, NULL, holder, NULL), 0);
  while (atomic_load(&holder_phase) < 1) sched_yield();
  free_alternating(10, 20);
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) _exit(child_flushes_its_own());
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status), "the fork child died: status %#x", status);
  cr_assert_eq(WEXITSTATUS(status), 0,
               "fork child: %d (1x: its later frees did not wait; 2x: the child's own batches did not "
               "arrive, or the vanished thread's did; 3x: its later batches)",
               WEXITSTATUS(status));
  atomic_store(&holder_phase, 2);
  pthread_join(h, NULL); /* its exit sends its batches */
  smi_remote_flush();
  for (int c = 0; c < CLASSES; c++) cr_assert_eq(remote_count(c), 20);
  free_alternating(20, OBJS);
  smi_remote_flush();
  set_stage(2);
  pthread_join(t, NULL);
}

/* ---- frees after the thread's heap ended ------------------------------------- */

/* A thread-exit hook that runs after the library's (a key made later): it
 * allocates (a heap made again for the thread, which may never be ended) and
 * frees into the owner's blocks: once the thread's heap ended its frees go
 * out one by one. */
static pthread_key_t late_key;
static atomic_uint late_seen = 99;
static void late_hook(void *arg) {
  (void)arg;
  sm_free(sm_malloc(16));
  sm_free(own.objs[0][0]);
  atomic_store(&late_seen, remote_count(0));
}
static void *late_thread(void *arg) {
  (void)arg;
  pthread_setspecific(late_key, (void *)1);
  sm_free(sm_malloc(16)); /* the thread's heap */
  return NULL;
}

Test(remote_batch, frees_after_the_heap_ended_go_out_alone, .timeout = 60) {
  pthread_t t = start_owner(), l;
  cr_assert_eq(pthread_key_create(&late_key, late_hook), 0);
  cr_assert_eq(pthread_create(&l, NULL, late_thread, NULL), 0);
  pthread_join(l, NULL);
  cr_assert_eq(atomic_load(&late_seen), 1, "a free in a later exit hook reached its list with %u slots, not alone",
               atomic_load(&late_seen));
  for (int c = 0; c < CLASSES; c++)
    for (int k = c ? 0 : 1; k < OBJS; k++) sm_free(own.objs[c][k]);
  smi_remote_flush();
  for (int c = 0; c < CLASSES; c++) cr_assert_eq(remote_count(c), OBJS);
  set_stage(2);
  pthread_join(t, NULL);
}
