/* lock.c: the waiting side of the spin lock (see lock.h). */
#include "lock.h"

#include <sched.h>

__thread char smi_lock_self;

void smi_lock_wait(smi_lock_t *l) {
  uintptr_t me = smi_lock_me();
  for (int spins = 0;; spins++) {
    uintptr_t expect = 0;
    if (!atomic_load_explicit(&l->holder, memory_order_relaxed) &&
        atomic_compare_exchange_weak_explicit(&l->holder, &expect, me, memory_order_acquire, memory_order_relaxed))
      return;
    if (spins > 64) sched_yield();
    else __builtin_ia32_pause();
  }
}
