/* unit_drained_signal.c: a free that brings an abandoned block's remote count
 * to 0 takes the pool's lock (alloc/pool.c, smi_pool_drained). A signal
 * handler's free that does so while the thread it interrupted holds that lock
 * must not wait for it: the thread itself would never let go. The block then
 * stays on its abandoned list until the next upkeep or adoption collects it.
 *
 * The test raises the signal from inside the pool's lock: smi_block_collect_biased,
 * which the pool calls only under it, is wrapped at link time (tests/CMakeLists.txt). */
#define _GNU_SOURCE /* testutil.h */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>

#include "alloc/internal.h"
#include "testutil.h"
#include "watchdog.h"

size_t __real_smi_block_collect_biased(smi_block_t *b);

static void *small_obj, *big_obj; /* the ended thread's only objects of their classes */
static volatile sig_atomic_t armed, handled;

size_t __wrap_smi_block_collect_biased(smi_block_t *b) {
  if (armed) { /* (under pool_lock) */
    armed = 0;
    raise(SIGUSR1);
  }
  return __real_smi_block_collect_biased(b);
}

static void on_signal(int sig) {
  (void)sig;
  sm_free(small_obj); /* the last live object of its abandoned block */
  handled = 1;
}

static void *leave_two(void *arg) {
  (void)arg;
  small_obj = sm_malloc(48);
  big_obj = sm_malloc(3000); /* (a free of more than 2 KiB never waits in a batch) */
  return NULL;
}

static int scenario(void *arg) {
  (void)arg;
  signal(SIGUSR1, on_signal);
  pthread_t t;
  if (pthread_create(&t, NULL, leave_two, NULL) || pthread_join(t, NULL)) return wd_fail("thread");
  smi_block_t *b = smi_block_of(small_obj);
  if (!(b->flags & SMI_BLOCK_ABANDONED) || b->used != 1) return wd_fail("not abandoned with one object");
  wd_phase("the last free of a block, its drain raising the signal under pool_lock");
  armed = 1;
  sm_free(big_obj); /* its block drains: pool_lock, then the wrapped collect */
  if (!handled || armed) return wd_fail("the signal did not come under the pool's lock");
  wd_phase("upkeep");
  smi_pool_upkeep(true); /* what the handler's free left for it */
  if (b->flags & SMI_BLOCK_ABANDONED) return wd_fail("the emptied block is still abandoned after an upkeep");
  if (b->used != 0) return wd_fail("used %u after the upkeep", b->used);
  return 0;
}

Test(drained_signal, a_signal_handlers_last_free_inside_the_pools_lock_does_not_wait_for_it, .timeout = 60) {
  WD_RUN("drained_signal", 20, scenario, NULL);
}
