/* lock.h: a small spin lock for short critical sections on slow paths (never
 * taken on a fast path). Yields the CPU while it waits. */
#ifndef SMI_LOCK_H
#define SMI_LOCK_H

#include <sched.h>
#include <stdatomic.h>

typedef struct { atomic_int held; } smi_lock_t;
#define SMI_LOCK_INIT {0}

static inline void smi_lock(smi_lock_t *l) {
  for (int spins = 0;; spins++) {
    if (!atomic_load_explicit(&l->held, memory_order_relaxed) &&
        !atomic_exchange_explicit(&l->held, 1, memory_order_acquire))
      return;
    if (spins > 64) sched_yield();
    else __builtin_ia32_pause();
  }
}
static inline void smi_unlock(smi_lock_t *l) { atomic_store_explicit(&l->held, 0, memory_order_release); }
/* After fork, in the child: the lock is free whoever held it. */
static inline void smi_lock_reset(smi_lock_t *l) { atomic_store_explicit(&l->held, 0, memory_order_relaxed); }

#endif
