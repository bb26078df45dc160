/* os.c: mmap and friends behind the contract of os.h. */
#define _GNU_SOURCE
#include "os.h"

#include "counters.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifdef SMI_OS_FAULTS
#include "os_faults.h" /* (test builds only) */
#endif

bool smi_os_numa_local;

/* Prefers the node of the calling CPU for [p, p+size); silently nothing on a
 * kernel or machine without NUMA. */
static void bind_local(void *p, size_t size) {
  unsigned cpu = 0, node = 0;
  if (syscall(SYS_getcpu, &cpu, &node, NULL) != 0 || node >= 64) return;
  unsigned long mask = 1UL << node;
  enum { MPOL_PREFERRED_ = 1 };
  syscall(SYS_mbind, p, size, MPOL_PREFERRED_, &mask, 64UL, 0U);
}

static _Atomic size_t committed;
static _Atomic size_t committed_peak;

static void account(ptrdiff_t delta) {
  size_t now = atomic_fetch_add_explicit(&committed, (size_t)delta, memory_order_relaxed) + (size_t)delta;
  size_t peak = atomic_load_explicit(&committed_peak, memory_order_relaxed);
  while (delta > 0 && now > peak &&
         !atomic_compare_exchange_weak_explicit(&committed_peak, &peak, now, memory_order_relaxed,
                                                memory_order_relaxed)) {
  }
}

size_t smi_os_committed(void) { return atomic_load_explicit(&committed, memory_order_relaxed); }
size_t smi_os_committed_peak(void) { return atomic_load_explicit(&committed_peak, memory_order_relaxed); }
void smi_os_account_recommit(size_t size) { account((ptrdiff_t)size); }
void smi_os_account_decommit(size_t size) { account(-(ptrdiff_t)size); }

uint64_t smi_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

bool smi_os_random(void *buf, size_t size) { return syscall(SYS_getrandom, buf, size, 0) == (long)size; }

void *smi_os_table_reserve(size_t size) {
  void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

bool smi_os_table_write(void *table, _Atomic uint64_t *bits, size_t from, size_t len) {
  for (size_t pg = from / SMI_OS_PAGE; pg <= (from + len - 1) / SMI_OS_PAGE; pg++) {
    uint64_t bit = (uint64_t)1 << (pg % 64);
    if (atomic_load_explicit(&bits[pg / 64], memory_order_acquire) & bit) continue;
    /* (two threads may both do it: the second mprotect changes nothing) */
    if (mprotect((char *)table + pg * SMI_OS_PAGE, SMI_OS_PAGE, PROT_READ | PROT_WRITE) != 0) return false;
    atomic_fetch_or_explicit(&bits[pg / 64], bit, memory_order_release);
  }
  return true;
}

bool smi_os_guard(void *p, size_t size) { return size == 0 || mprotect(p, size, PROT_NONE) == 0; }

#ifdef SMI_HARDENED
/* The hardened build asks for each mapping at a random 4 MiB-aligned address
 * between 1 TiB and 64 TiB (a hint: the kernel takes another place if that
 * one is taken), so where segments lie differs from one run to the next. */
#define SMI_OS_HINT_ALIGN_MASK (((uint64_t)1 << 22) - 1)
static void *hint(size_t size) {
  static _Atomic uint64_t state;
  uint64_t s = atomic_load_explicit(&state, memory_order_relaxed);
  if (!s) {
    if (!smi_os_random(&s, sizeof s)) s = (uint64_t)(uintptr_t)&s ^ ((uint64_t)smi_now_ms() << 32);
    s |= 1;
    uint64_t zero = 0;
    atomic_compare_exchange_strong_explicit(&state, &zero, s, memory_order_relaxed, memory_order_relaxed);
  }
  uint64_t z = atomic_fetch_add_explicit(&state, 0x9e3779b97f4a7c15u, memory_order_relaxed); /* splitmix64 */
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  z ^= z >> 31;
  const uint64_t lo = (uint64_t)1 << 40, hi = (uint64_t)1 << 46;
  if (size >= hi - lo) return NULL;
  return (void *)(uintptr_t)((lo + z % (hi - lo - size)) & ~(uint64_t)SMI_OS_HINT_ALIGN_MASK);
}
#else
static void *hint(size_t size) {
  (void)size;
  return NULL;
}
#endif

/* reserve: address space committed a page at a time later (slot segments),
 * outside the kernel's overcommit check; otherwise memory that is committed
 * now (large objects, metadata), which the check refuses, as glibc's malloc
 * is refused, when it exceeds what the machine can give. */
static void *map_raw(size_t size, bool reserve) {
  void *p = mmap(hint(size), size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | (reserve ? MAP_NORESERVE : 0), -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

/* In a mapping of size + align bytes at raw, keeps the size bytes starting where
 * (start + offset) is a multiple of align, and unmaps the rest. */
static char *trim_to_alignment(char *raw, size_t size, size_t align, size_t offset) {
  uintptr_t want = (((uintptr_t)raw + offset + align - 1) & ~(uintptr_t)(align - 1)) - offset;
  size_t head = want - (uintptr_t)raw;
  size_t tail = align - head;
  if (head) munmap(raw, head);
  if (tail) munmap((char *)want + size, tail);
  return (char *)want;
}

static void *map_offset_aligned(size_t size, size_t align, size_t offset, bool reserve) {
  if (size > (SIZE_MAX >> 2) || align > (SIZE_MAX >> 2)) return NULL;
  char *raw = map_raw(size + align, reserve);
  if (!raw) return NULL;
  char *want = trim_to_alignment(raw, size, align, offset);
  if (smi_os_numa_local) bind_local(want, size);
  return (void *)want;
}

void *smi_os_map_offset_aligned(size_t size, size_t align, size_t offset) {
  void *p = map_offset_aligned(size, align, offset, false);
  if (p) account((ptrdiff_t)size);
  return p;
}

void *smi_os_reserve_aligned(size_t size, size_t align) { return map_offset_aligned(size, align, 0, true); }

void *smi_os_map_aligned(size_t size, size_t align) { return smi_os_map_offset_aligned(size, align, 0); }

void smi_os_unmap(void *p, size_t size) {
  if (!p || !size) return;
  munmap(p, size);
  account(-(ptrdiff_t)size);
}

void smi_os_decommit(void *p, size_t size) {
  if (!size) return;
  madvise(p, size, MADV_DONTNEED);
  smi_count(SMI_COUNT_GIVEBACK_CALLS, 1);
  account(-(ptrdiff_t)size);
}

/* Many ranges in one call of process_madvise, only when asked
 * (SLOTMALLOC_BATCH_MADVISE=1): one madvise per range costs a TLB shoot-down
 * each in a threaded process, but a seccomp filter that kills a process at a
 * system call it does not list (systemd's SystemCallFilter=, OpenSSH's
 * privilege-separated child, minijail and browser sandboxes, some installed
 * after start) lists madvise, and seldom process_madvise or an open of /proc
 * in the middle of a program: a preloaded allocator must not end a correct
 * program. When asked, each batch first reads /proc/self/status: its
 * "Seccomp:" field is 0 while no filter is in force, and a filter, once
 * installed, stays (a status that cannot be read counts as filtered, and
 * filtered is remembered). process_madvise takes PIDFD_SELF
 * for the calling process (a pidfd opened from getpid() would name the parent
 * in a fork child). A kernel that does not know it, or refuses MADV_DONTNEED
 * there (before 6.13), gets one madvise per range from then on. The errno of
 * a refused call is not the caller's. The valgrind build makes no such call:
 * memcheck does not know it (and says so). */
#define SMI_PIDFD_SELF (-10000)
#define SMI_DISCARD_BATCH 64
bool smi_os_batch_discards;
static _Atomic bool discard_one_by_one;
static bool discard_batch(const smi_os_range_t *r, size_t n) {
#if defined(SYS_process_madvise) && !defined(SMI_VALGRIND)
  struct iovec v[SMI_DISCARD_BATCH];
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    v[i] = (struct iovec){r[i].p, r[i].size};
    total += r[i].size;
  }
  int saved = errno;
  long done = syscall(SYS_process_madvise, SMI_PIDFD_SELF, v, n, MADV_DONTNEED, 0);
  errno = saved;
  smi_count(SMI_COUNT_GIVEBACK_CALLS, 1);
  if (done == (long)total) return true;
  if (done < 0) atomic_store_explicit(&discard_one_by_one, true, memory_order_relaxed);
  return false; /* (a part done twice is harmless: the pages are free) */
#else
  (void)r, (void)n;
  atomic_store_explicit(&discard_one_by_one, true, memory_order_relaxed);
  return false;
#endif
}

size_t smi_os_read_file(const char *path, char *buf, size_t size) {
  int saved = errno;
  size_t len = 0;
  long fd = syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    long got;
    while (len + 1 < size && (got = syscall(SYS_read, fd, buf + len, size - 1 - len)) > 0) len += (size_t)got;
    syscall(SYS_close, fd);
  }
  errno = saved;
  if (size) buf[len] = 0;
  return len;
}

/* True unless /proc/self/status says no seccomp filter is in force. (Called
 * with the pool's lock held: smi_os_read_file is no cancellation point.) */
static bool seccomp_filtered(void) {
  static _Atomic bool filtered;
  if (atomic_load_explicit(&filtered, memory_order_relaxed)) return true;
  char buf[4096];
  smi_os_read_file("/proc/self/status", buf, sizeof buf);
  const char *f = strstr(buf, "\nSeccomp:");
  bool none = f && f[sizeof "\nSeccomp:" - 1] == '\t' && f[sizeof "\nSeccomp:"] == '0';
  if (!none) atomic_store_explicit(&filtered, true, memory_order_relaxed);
  return !none;
}

/* Batches of fewer ranges go one by one: the status read costs system calls too. */
#define SMI_DISCARD_BATCH_MIN 4

static void discard(const smi_os_range_t *r, size_t n) {
  while (n) {
    size_t k = n < SMI_DISCARD_BATCH ? n : SMI_DISCARD_BATCH;
    if (k < SMI_DISCARD_BATCH_MIN || !smi_os_batch_discards ||
        atomic_load_explicit(&discard_one_by_one, memory_order_relaxed) || seccomp_filtered() ||
        !discard_batch(r, k)) {
      for (size_t i = 0; i < k; i++) madvise(r[i].p, r[i].size, MADV_DONTNEED);
      smi_count(SMI_COUNT_GIVEBACK_CALLS, k);
    }
    r += k;
    n -= k;
  }
}

void smi_os_discard(const smi_os_range_t *r, size_t n) { discard(r, n); }

void smi_os_decommit_ranges(const smi_os_range_t *r, size_t n) {
  discard(r, n);
  for (size_t i = 0; i < n; i++) account(-(ptrdiff_t)r[i].size);
}

void smi_os_release(void *p, size_t size) {
  if (size) munmap(p, size);
}

bool smi_os_reacquire(void *p, size_t size) {
  if (!size) return true;
  void *q =
      mmap(p, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
  if (q == p) return true;
  if (q != MAP_FAILED) munmap(q, size); /* a kernel without MAP_FIXED_NOREPLACE placed it elsewhere */
  return false;
}

bool smi_os_grow_in_place(void *p, size_t old_size, size_t new_size) {
  void *q = mremap(p, old_size, new_size, 0);
  if (q == MAP_FAILED) return false;
  account((ptrdiff_t)(new_size - old_size));
  return true;
}

void smi_os_shrink(void *p, size_t old_size, size_t new_size) {
  if (new_size >= old_size) return;
  munmap((char *)p + new_size, old_size - new_size);
  account(-(ptrdiff_t)(old_size - new_size));
}

#ifdef SMI_HARDENED
void *smi_os_grow_guarded(void *p, size_t old_size, size_t new_size, size_t off, size_t guard, size_t align,
                          smi_os_ready_fn ready) {
  char *c = p;
  if (!ready(p, new_size)) return NULL;
  /* In place: the trailing guard joins the body (one mapping again, which
   * mremap wants), the body grows over the free pages after it, a guard ends
   * it anew. */
  if (mprotect(c + old_size - guard, guard, PROT_READ | PROT_WRITE) == 0) {
    if (mremap(c + off, old_size - off, new_size - off, 0) != MAP_FAILED) {
      mprotect(c + new_size - guard, guard, PROT_NONE);
      account((ptrdiff_t)(new_size - old_size));
      return p;
    }
    if (mprotect(c + old_size - guard, guard, PROT_NONE) != 0) return NULL; /* (as it was: never fails) */
  }
  /* Moved: a reservation (PROT_NONE: its pages that nothing moves onto are
   * the new guards), the head's pages made writable there, the body moved
   * onto it, then the head's first page copied (os.h: the rest is padding,
   * zero) and the old mapping, the head and the old guards, unmapped. The
   * body's move is the last call that may be refused: a refusal leaves the
   * object as it was (two moves, the body and then the head, needed the body
   * moved back when the second was refused, and aborted when that was
   * refused too: test_oom_sweep's random_grow_mremap, every seed). */
  char *raw = mmap(hint(new_size + align), new_size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0); /* (at a random place, as every mapping of the hardened build) */
  if (raw == MAP_FAILED) return NULL;
  char *q = trim_to_alignment(raw, new_size, align, 0);
  if (!ready(q, new_size)) {
    munmap(q, new_size);
    return NULL;
  }
  size_t body = old_size - off - guard, head = off - guard;
  if (mprotect(q, head, PROT_READ | PROT_WRITE) != 0 ||
      mremap(c + off, body, new_size - off - guard, MREMAP_MAYMOVE | MREMAP_FIXED, q + off) == MAP_FAILED) {
    munmap(q, new_size);
    return NULL;
  }
  memcpy(q, c, head < SMI_OS_PAGE ? head : SMI_OS_PAGE);
  /* the head with its guard, and the trailing guard: not the body's old
   * range, which is free since the move and may be another mapping already */
  munmap(c, off);
  munmap(c + old_size - guard, guard);
  account((ptrdiff_t)(new_size - old_size));
  return q;
}
#endif

void *smi_os_move(void *p, size_t old_size, size_t new_size, size_t align, size_t offset, smi_os_ready_fn ready) {
  /* Reserve an aligned destination, then let the kernel move the pages there. */
  char *raw = mmap(NULL, new_size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) return NULL;
  char *want = trim_to_alignment(raw, new_size, align, offset);
  if (!ready(want, new_size)) {
    munmap(want, new_size);
    return NULL;
  }
  void *q = mremap(p, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, want);
  if (q == MAP_FAILED) {
    munmap(want, new_size);
    return NULL;
  }
  account((ptrdiff_t)(new_size - old_size));
  return q;
}
