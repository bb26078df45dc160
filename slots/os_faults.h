/* os_faults.h: the OS layer's fault injection, for tests only. slots/os.c
 * includes it when compiled with SMI_OS_FAULTS (tests/CMakeLists.txt builds
 * such a copy for tests/oom_prog.c; the libraries never have it). Its
 * declarations are in os.h. Not a header of its own to include elsewhere:
 * it defines os.c's mmap, mremap, mprotect, madvise and munmap. */
#ifndef SMI_OS_FAULTS_H
#define SMI_OS_FAULTS_H
#ifndef SMI_OS_FAULTS
#error "slots/os_faults.h is for slots/os.c compiled with SMI_OS_FAULTS"
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "os.h"

/* Every mmap, mremap, mprotect, madvise and munmap of os.c goes through
 * fault(), which may make it fail as the kernel would refuse it (nothing
 * done). */
static _Atomic unsigned fault_mask;
static _Atomic int fault_mode;
static _Atomic uint64_t fault_nth, fault_seed, fault_calls, fault_failed;
static _Atomic bool fault_env_read;

void smi_os_faults_set(unsigned mask, int mode, uint64_t nth, uint64_t seed) {
  atomic_store(&fault_env_read, true);
  atomic_store(&fault_mask, 0);
  atomic_store(&fault_mode, mode);
  atomic_store(&fault_nth, nth);
  atomic_store(&fault_seed, seed);
  atomic_store(&fault_calls, 0);
  atomic_store(&fault_failed, 0);
  atomic_store(&fault_mask, mask);
}
uint64_t smi_os_faults_calls(void) { return atomic_load(&fault_calls); }
uint64_t smi_os_faults_failed(void) { return atomic_load(&fault_failed); }

/* SMI_OS_FAULTS=mask,mode,nth,seed in the environment arms it from the very
 * first call (the tables reserved at load included). */
static void faults_from_env(void) {
  if (atomic_load_explicit(&fault_env_read, memory_order_relaxed) || atomic_exchange(&fault_env_read, true)) return;
  const char *e = getenv("SMI_OS_FAULTS");
  uint64_t v[4] = {0, 0, 0, 0};
  for (int i = 0; e && *e && i < 4; i++) {
    char *end;
    v[i] = strtoull(e, &end, 0);
    e = *end == ',' ? end + 1 : end;
  }
  if (v[0]) smi_os_faults_set((unsigned)v[0], (int)v[1], v[2], v[3]);
}

static bool fault(unsigned kind) {
  faults_from_env();
  if (!(atomic_load_explicit(&fault_mask, memory_order_relaxed) & kind)) return false;
  uint64_t n = atomic_fetch_add(&fault_calls, 1) + 1, nth = atomic_load(&fault_nth);
  int mode = atomic_load(&fault_mode);
  uint64_t z = (atomic_load(&fault_seed) + n) * 0x9e3779b97f4a7c15u; /* (splitmix64) */
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z ^= z >> 31;
  bool fail = false;
  if (mode == SMI_FAULT_ONE) fail = n == nth;
  else if (mode == SMI_FAULT_FROM) fail = n >= nth;
  else if (mode == SMI_FAULT_RANDOM) fail = nth && z % nth == 0;
  if (fail) atomic_fetch_add(&fault_failed, 1);
  return fail;
}
static void *fault_mmap(void *p, size_t size, int prot, int flags, int fd, off_t off) {
  if (!fault(SMI_FAULT_MMAP)) return mmap(p, size, prot, flags, fd, off);
  errno = ENOMEM;
  return MAP_FAILED;
}
static void *fault_mremap(void *p, size_t old_size, size_t new_size, int flags, ...) {
  void *dest = NULL;
  if (flags & MREMAP_FIXED) {
    va_list ap;
    va_start(ap, flags);
    dest = va_arg(ap, void *);
    va_end(ap);
  }
  if (!fault(SMI_FAULT_MREMAP)) return mremap(p, old_size, new_size, flags, dest);
  errno = ENOMEM;
  return MAP_FAILED;
}
static int fault_mprotect(void *p, size_t size, int prot) {
  if (!fault(SMI_FAULT_MPROTECT)) return mprotect(p, size, prot);
  errno = ENOMEM;
  return -1;
}
static int fault_madvise(void *p, size_t size, int advice) {
  if (!fault(SMI_FAULT_MADVISE)) return madvise(p, size, advice);
  errno = EAGAIN;
  return -1;
}
static int fault_munmap(void *p, size_t size) {
  if (!fault(SMI_FAULT_MUNMAP)) return munmap(p, size);
  errno = ENOMEM; /* (as when a split would pass the process's map count) */
  return -1;
}
#define mmap fault_mmap
#define mremap fault_mremap
#define mprotect fault_mprotect
#define madvise fault_madvise
#define munmap fault_munmap

#endif
