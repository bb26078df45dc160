/* lock.c: the waiting side of the lock (see lock.h). */
#include "lock.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

__thread uint64_t smi_lock_self;
_Atomic int smi_lock_forks, smi_lock_fork_pid;
void (*smi_lock_fork_repair)(void);

/* In a fork child whose repair has not run (lock.h): runs it; false elsewhere
 * (getpid only while a fork is under way). */
static bool fork_repair_pending(void) {
  if (!atomic_load_explicit(&smi_lock_forks, memory_order_acquire) || !smi_lock_fork_repair ||
      atomic_load_explicit(&smi_lock_fork_pid, memory_order_relaxed) == (int)syscall(SYS_getpid))
    return false;
  smi_lock_fork_repair();
  return true;
}

/* The futex word: the low 32 bits of the lock word (x86-64 is little-endian). */
static uint32_t *futex_word(smi_lock_t *l) { return (uint32_t *)(void *)&l->holder; }

/* Rounds of pause while the holder runs on another core, before sleeping. */
#define SMI_LOCK_SPINS 100

void smi_lock_wait(smi_lock_t *l) {
  uintptr_t me = smi_lock_me();
  for (int spins = 0; spins < SMI_LOCK_SPINS; spins++) {
    uintptr_t h = atomic_load_explicit(&l->holder, memory_order_relaxed);
    if (!h) {
      if (atomic_compare_exchange_weak_explicit(&l->holder, &h, me, memory_order_acquire, memory_order_relaxed))
        return;
    } else if (h & SMI_LOCK_PARKED) {
      break; /* others sleep already: queue up behind them */
    }
    __builtin_ia32_pause();
  }
  /* Sleep until the lock is free. A thread that slept takes the lock marked
   * parked: other waiters may still sleep, and its unlock must wake one. */
  int saved = errno; /* (the allocator's callers see errno as it was) */
  for (;;) {
    uintptr_t h = atomic_load_explicit(&l->holder, memory_order_relaxed);
    if (!h) {
      if (atomic_compare_exchange_weak_explicit(&l->holder, &h, me | SMI_LOCK_PARKED, memory_order_acquire,
                                                memory_order_relaxed))
        break;
      continue;
    }
    if (!(h & SMI_LOCK_PARKED) && !atomic_compare_exchange_weak_explicit(&l->holder, &h, h | SMI_LOCK_PARKED,
                                                                         memory_order_relaxed, memory_order_relaxed))
      continue;
    if (fork_repair_pending()) continue; /* the holder may be a vanished thread: freed now */
    /* sleeps only while the word still reads the same holder, parked */
    syscall(SYS_futex, futex_word(l), FUTEX_WAIT_PRIVATE, (uint32_t)(h | SMI_LOCK_PARKED), NULL, NULL, 0);
  }
  errno = saved;
}

void smi_lock_wake(smi_lock_t *l) {
  int saved = errno;
  syscall(SYS_futex, futex_word(l), FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  errno = saved;
}
