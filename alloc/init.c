/* init.c: process start-up, once, at the first allocation of any thread (no
 * constructor: a preloaded library may be called before constructors run).
 * Reads the options, creates the thread-exit hook of the heaps, registers the
 * fork child handler (fork.c) and the exit statistics. */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#include "internal.h"

static _Atomic int process_state; /* 0 new, 1 starting, 2 ready */

static void at_exit(void) {
  smi_stats_at_exit();
  smi_prof_at_exit(); /* the heap profile file, the leak report */
}

bool smi_process_ready(void) { return atomic_load_explicit(&process_state, memory_order_acquire) == 2; }

void smi_process_init(void) {
  int expect = 0;
  if (!atomic_compare_exchange_strong(&process_state, &expect, 1)) {
    while (!smi_process_ready()) sched_yield(); /* another thread is starting it */
    return;
  }
  smi_options_load();
  smi_heap_key_create();
  atomic_store(&process_state, 2);
  /* These may allocate: they run once the state is ready. */
  smi_lock_fork_repair = smi_fork_child;
  pthread_atfork(smi_fork_prepare, smi_fork_parent, smi_fork_child); /* the prepare takes no lock: see fork.c */
  atexit(at_exit);
}
