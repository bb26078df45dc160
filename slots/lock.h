/* lock.h: a small spin lock for short critical sections on slow paths (never
 * taken on a fast path). Yields the CPU while it waits.
 *
 * The lock word names its holder (the address of a thread-local byte), so a
 * fork child can tell a lock held by a thread it does not have (whose
 * critical section will never end) from one held by itself (a fork from a
 * signal handler that interrupted the allocator): see alloc/fork.c. */
#ifndef SMI_LOCK_H
#define SMI_LOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
  _Atomic(uintptr_t) holder;
} smi_lock_t; /* 0: free */
#define SMI_LOCK_INIT \
  { 0 }

extern __thread char smi_lock_self; /* its address identifies the calling thread */
static inline uintptr_t smi_lock_me(void) { return (uintptr_t)&smi_lock_self; }

void smi_lock_wait(smi_lock_t *l); /* the contended case, out of line */

static inline void smi_lock(smi_lock_t *l) {
  uintptr_t expect = 0;
  if (__builtin_expect(!atomic_compare_exchange_strong_explicit(&l->holder, &expect, smi_lock_me(),
                                                                memory_order_acquire, memory_order_relaxed),
                       0))
    smi_lock_wait(l);
}
static inline void smi_unlock(smi_lock_t *l) { atomic_store_explicit(&l->holder, 0, memory_order_release); }

/* In a fork child. true if l was held at the instant of fork by a thread the
 * child does not have: l is then free again, and what it guards may be half
 * updated and needs repair. A lock held by the calling thread itself is left
 * held and sets *mine: its critical section ends when the interrupted code
 * resumes. */
static inline bool smi_lock_orphaned(smi_lock_t *l, bool *mine) {
  uintptr_t h = atomic_load_explicit(&l->holder, memory_order_relaxed);
  if (!h) return false;
  if (h == smi_lock_me()) {
    *mine = true;
    return false;
  }
  atomic_store_explicit(&l->holder, 0, memory_order_relaxed);
  return true;
}

#endif
