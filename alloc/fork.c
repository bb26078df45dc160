/* fork.c: what a fork child does to the allocator.
 *
 * No lock is taken before fork. glibc runs pthread_atfork prepare handlers
 * before it takes its stdio list lock, and stdio calls malloc while holding
 * FILE locks, so allocator locks held across fork invert the lock order and
 * deadlock (glibc bug 19431); and a fork from a signal handler that
 * interrupted malloc would wait forever for a lock of its own thread.
 *
 * Instead the child repairs, with only the forking thread running. A lock
 * found held in the child was held at the instant of fork:
 *  - by a thread the child does not have: its critical section never ends and
 *    may be half done. The lock is freed and what it guards is repaired: lists
 *    are rebuilt from their forward links (every list change keeps them a
 *    chain of real blocks), or forgotten where that is simpler and safe (the
 *    pool, the large cache, free ids: their memory stays unused in the child).
 *  - by the forking thread itself (fork from a signal handler inside the
 *    allocator): that code resumes when the handler returns and finishes its
 *    critical section, so the child leaves it alone and does no more.
 * Then the heaps of the threads the child does not have are ended, as at
 * thread exit: their empty blocks go to the pool, blocks with live objects are
 * abandoned for adoption, and their objects can be freed by the child.
 * Frees that were under way on vanished threads are forgotten.
 *
 * The repair runs once per child: in the allocator's pthread_atfork child
 * handler, or before it, when a child handler registered earlier (glibc runs
 * them in the order of registration; a library constructor may register one
 * before the process's first malloc) allocates and finds a lock held: the
 * lock's waiter runs it (slots/lock.h, smi_lock_forks). The prepare handler
 * takes no lock: it only counts the fork and writes the pid that forks (and,
 * in a child not repaired yet that forks, runs the repair first). */
#include <unistd.h>

#include "internal.h"

void smi_fork_prepare(void) {
  int pid = (int)getpid();
  /* A child not repaired yet forks (from a child handler that runs before
   * the allocator's): after this its count and pid read as a parent's, and
   * its lock waiters could no longer tell (tests/unit_fork_waiter.c). */
  if (atomic_load(&smi_lock_forks) && atomic_load(&smi_lock_fork_pid) != pid) smi_fork_child();
  atomic_store(&smi_lock_fork_pid, pid);
  atomic_fetch_add(&smi_lock_forks, 1);
}

void smi_fork_parent(void) { atomic_fetch_sub(&smi_lock_forks, 1); }

/* A repair found a lock of the forking thread's own (mine) and so did not end
 * the other threads' heaps. Run by a lock's waiter, that is an operation of
 * the child's under way (an earlier child handler's sm_arena_stats: the tree
 * lock, then a vanished thread's arena lock), not a fork inside the
 * allocator: the allocator's own handler, which runs after it, repairs again
 * (idempotent: no lock is orphaned any more) and ends them. Else those heaps'
 * blocks stayed owned for the child's life (tests/unit_fork_waiter.c). */
static bool repair_left;

void smi_fork_child(void) {
  /* the child's count is its parent's forks under way, its own among them */
  if (!atomic_exchange(&smi_lock_forks, 0) && !repair_left) return; /* repaired already (by a lock's waiter) */
  repair_left = false;
  bool mine = false;
  smi_revisit_fork_mark();
  smi_segment_after_fork(&mine);
  smi_meta_after_fork(&mine);
  smi_large_after_fork(&mine);
  smi_pool_after_fork(&mine);
  smi_heap_after_fork(&mine);
  smi_revisit_fork_requeue(mine);
  smi_prof_after_fork(&mine);
  smi_background_after_fork();
  if (mine) { /* forked inside the allocator, or a waiter's repair: the interrupted code finishes */
    repair_left = true;
    return;
  }
  smi_heap_exit_others();
}
