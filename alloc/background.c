/* background.c: the background purge (SLOTMALLOC_BACKGROUND_PURGE=1, off by
 * default, as jemalloc's background_thread): one thread that wakes every
 * quarter purge delay (10 ms to 1 s) and runs the pool's upkeep, so that empty
 * blocks go back to the OS after the delay even in a program that makes no
 * more calls at all, or only fast-path ones.
 *
 * Without it memory still goes back without a slow path where the pool can
 * see it: a block whose last object its thread frees goes to the pool at once,
 * and past the pool's warm cap (pool.c) the oldest empty blocks are given back
 * at once. What waits for a later slow path is only what stays under that cap
 * (a target from 1 MiB up to a quarter of the most the heap held lately:
 * keep_warm_bytes_bounded), past the delay.
 *
 * The thread is started at the first block given to the pool (a point where
 * the caller holds no lock: pthread_create may allocate), and again in a fork
 * child, which does not inherit it. It blocks every signal and allocates
 * nothing. */
#define _GNU_SOURCE /* pthread_setname_np */
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include "internal.h"

static _Atomic int started; /* 0: not yet (or a fork child); 1: started or starting */

static void *purge_main(void *arg) {
  (void)arg;
  for (;;) {
    uint32_t period = smi_opt.purge_delay_ms / 4;
    if (period < 10) period = 10;
    if (period > 1000) period = 1000;
    struct timespec t = {.tv_sec = period / 1000, .tv_nsec = (long)(period % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0) {
    }
    smi_heap_reclaim_others(); /* what other threads' frees emptied in idle threads' arenas */
    smi_pool_upkeep(false);
  }
  return NULL;
}

void smi_background_start(void) {
  if (!smi_opt.background_purge || atomic_load_explicit(&started, memory_order_relaxed)) return;
  if (atomic_exchange(&started, 1)) return;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* the new thread inherits the mask: no signal of the program's */
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_t thread;
  if (pthread_create(&thread, &attr, purge_main, NULL) == 0) pthread_setname_np(thread, "slotmalloc-purge");
  else smi_message("slotmalloc: the background purge thread could not be started\n");
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void smi_background_after_fork(void) { atomic_store_explicit(&started, 0, memory_order_relaxed); }
