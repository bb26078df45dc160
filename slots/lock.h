/* lock.h: a small lock for short critical sections on slow paths (never
 * taken on a fast path). A waiter spins a little, then sleeps on a futex until
 * the holder's unlock wakes it: with more threads than cores a holder is often
 * preempted, and waiters that kept the CPU (spinning or sched_yield) would only
 * delay it.
 *
 * The lock word names its holder (the address of a thread-local word), so a
 * fork child can tell a lock held by a thread it does not have (whose
 * critical section will never end) from one held by itself (a fork from a
 * signal handler that interrupted the allocator): see alloc/fork.c. Bit 0 of
 * the word (SMI_LOCK_PARKED) says a waiter may be asleep: the unlock then
 * wakes one. The futex is the word's low 32 bits. */
#ifndef SMI_LOCK_H
#define SMI_LOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
  _Atomic(uintptr_t) holder;
} smi_lock_t; /* 0: free; else the holder's id, | SMI_LOCK_PARKED */
#define SMI_LOCK_INIT \
  { 0 }
#define SMI_LOCK_PARKED ((uintptr_t)1)

extern __thread uint64_t smi_lock_self; /* its address identifies the calling thread (bit 0 clear) */
static inline uintptr_t smi_lock_me(void) { return (uintptr_t)&smi_lock_self; }
/* The thread that holds a lock whose word reads h (0: none). */
static inline uintptr_t smi_lock_holder_of(uintptr_t h) { return h & ~SMI_LOCK_PARKED; }

void smi_lock_wait(smi_lock_t *l); /* the contended case, out of line */

/* A fork child's repair that has not run yet. pthread_atfork runs child
 * handlers in the order they were registered, so one registered before the
 * allocator's (a library constructor that runs before the process's first
 * malloc) runs first, and if it allocates, it waits for a lock a vanished
 * thread held at the fork: for ever. So the allocator's prepare handler counts
 * the forks under way in smi_lock_forks and writes the forking process's pid
 * (its parent handler counts the fork done; glibc does not serialize forks of
 * several threads), and a waiter about to sleep that finds forks under way in
 * a pid other than its own is in such a child: it runs smi_lock_fork_repair
 * (alloc/fork.c's, once per child: it sets the child's count to 0; it frees
 * the orphaned locks) and tries again. */
extern _Atomic int smi_lock_forks, smi_lock_fork_pid;
extern void (*smi_lock_fork_repair)(void);
void smi_lock_wake(smi_lock_t *l); /* an unlock that found a waiter asleep */

static inline void smi_lock(smi_lock_t *l) {
  uintptr_t expect = 0;
  if (__builtin_expect(!atomic_compare_exchange_strong_explicit(&l->holder, &expect, smi_lock_me(),
                                                                memory_order_acquire, memory_order_relaxed),
                       0))
    smi_lock_wait(l);
}
static inline void smi_unlock(smi_lock_t *l) {
  if (__builtin_expect(atomic_exchange_explicit(&l->holder, 0, memory_order_release) & SMI_LOCK_PARKED, 0))
    smi_lock_wake(l);
}

/* In a fork child. true if l was held at the instant of fork by a thread the
 * child does not have: l is then free again, and what it guards may be half
 * updated and needs repair. A lock held by the calling thread itself is left
 * held and sets *mine: its critical section ends when the interrupted code
 * resumes. (The child has no other thread: no waiter sleeps on l.) */
static inline bool smi_lock_orphaned(smi_lock_t *l, bool *mine) {
  uintptr_t h = atomic_load_explicit(&l->holder, memory_order_relaxed);
  if (!h) return false;
  if (smi_lock_holder_of(h) == smi_lock_me()) {
    *mine = true;
    return false;
  }
  atomic_store_explicit(&l->holder, 0, memory_order_relaxed);
  return true;
}

#endif
