/* os.c: mmap and friends behind the contract of os.h. */
#define _GNU_SOURCE
#include "os.h"

#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

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
void smi_os_account_untouched(size_t size) { account(-(ptrdiff_t)size); }

uint64_t smi_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void *map_raw(size_t size) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
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

void *smi_os_map_offset_aligned(size_t size, size_t align, size_t offset) {
  if (size > (SIZE_MAX >> 2) || align > (SIZE_MAX >> 2)) return NULL;
  char *raw = map_raw(size + align);
  if (!raw) return NULL;
  char *want = trim_to_alignment(raw, size, align, offset);
  if (smi_os_numa_local) bind_local(want, size);
  account((ptrdiff_t)size);
  return (void *)want;
}

void *smi_os_map_aligned(size_t size, size_t align) { return smi_os_map_offset_aligned(size, align, 0); }

void smi_os_unmap(void *p, size_t size) {
  if (!p || !size) return;
  munmap(p, size);
  account(-(ptrdiff_t)size);
}

void smi_os_decommit(void *p, size_t size) {
  if (!size) return;
  madvise(p, size, MADV_DONTNEED);
  account(-(ptrdiff_t)size);
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

void *smi_os_move(void *p, size_t old_size, size_t new_size, size_t align, size_t offset) {
  /* Reserve an aligned destination, then let the kernel move the pages there. */
  char *raw = mmap(NULL, new_size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) return NULL;
  char *want = trim_to_alignment(raw, new_size, align, offset);
  void *q = mremap(p, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, want);
  if (q == MAP_FAILED) {
    munmap(want, new_size);
    return NULL;
  }
  account((ptrdiff_t)(new_size - old_size));
  return q;
}
