/* override.c: the standard allocation names, mapped onto the arena layer, for
 * both libslotmalloc.so (by LD_PRELOAD or linking) and libslotmalloc.a (linked
 * before libc, this object's malloc is the program's). No dlsym, no start-up
 * work: the first call on a thread sets up its heap, before or after any
 * constructor. The __libc_* names are aliases, so glibc-internal callers and
 * programs that call them directly land here too. */
#include <errno.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "alloc/internal.h"
#include "slots/os.h"

#define SM_EXPORT __attribute__((visibility("default")))
#define SM_ALIAS(name) __attribute__((alias(#name), visibility("default"), used))

/* The two fast paths start on a 64-byte line of their own: where the linker
 * put them otherwise moved with every change to any other code, and so did
 * their speed (build/perf/pair -z 16 -n 50000000, medians of 9 interleaved
 * runs: 0.239 s at 9f647ce, malloc and free 48 and 0 bytes into a line; 0.267
 * s at fdb3ab2, 16 and 32 bytes in, the same instructions; 0.225 s with both
 * at a line's start). tests/test_code_layout.c checks it. */
#define SM_HOT_ENTRY __attribute__((aligned(64)))
SM_EXPORT SM_HOT_ENTRY void *malloc(size_t size) { return smi_malloc(size); }
SM_EXPORT SM_HOT_ENTRY void free(void *p) { smi_free(p); }
SM_EXPORT void *calloc(size_t count, size_t size) { return sm_calloc(count, size); }
SM_EXPORT void *realloc(void *p, size_t size) { return sm_realloc(p, size); }
SM_EXPORT void *reallocarray(void *p, size_t count, size_t size) { return sm_reallocarray(p, count, size); }
SM_EXPORT int posix_memalign(void **out, size_t alignment, size_t size) {
  return sm_posix_memalign(out, alignment, size);
}
SM_EXPORT void *aligned_alloc(size_t alignment, size_t size) { return sm_aligned_alloc(alignment, size); }
SM_EXPORT size_t malloc_usable_size(void *p) { return sm_usable_size(p); }

/* memalign rounds a non-power-of-two alignment up, as glibc does; only an
 * alignment that cannot be rounded up (past SIZE_MAX/2 + 1) is EINVAL, and one
 * that cannot be satisfied is ENOMEM (glibc's malloc/tst-malloc-too-large). */
SM_EXPORT void *memalign(size_t alignment, size_t size) {
  if (alignment > SIZE_MAX / 2 + 1) {
    errno = EINVAL;
    return NULL;
  }
  size_t a = 16;
  while (a < alignment) a <<= 1;
  return sm_aligned_alloc(a, size);
}

static size_t page_size(void) {
  static size_t page;
  if (!page) page = (size_t)sysconf(_SC_PAGESIZE);
  return page;
}

SM_EXPORT void *valloc(size_t size) { return sm_aligned_alloc(page_size(), size); }

SM_EXPORT void *pvalloc(size_t size) {
  size_t page = page_size();
  if (size > PTRDIFF_MAX) {
    errno = ENOMEM;
    return NULL;
  }
  size_t rounded = (size + page - 1) & ~(page - 1);
  return sm_aligned_alloc(page, rounded ? rounded : page);
}

/* malloc_trim gives back what can be given back now: the deferred dismantling
 * of closed arenas, empty blocks and cached large objects (the pad is not
 * needed). Returns 1 if memory was released, as glibc does: the committed
 * bytes before and after (the OS layer's count; the full statistics, built
 * twice before, walked every block and read /proc with cancellation points). */
SM_EXPORT int malloc_trim(size_t pad) {
  (void)pad;
  size_t before = smi_os_committed();
  sm_collect(SIZE_MAX);
  return smi_os_committed() < before;
}

/* C23 sized frees: the size is not needed, the slot knows it. */
SM_EXPORT void free_sized(void *p, size_t size) {
  (void)size;
  smi_free(p);
}
SM_EXPORT void free_aligned_sized(void *p, size_t alignment, size_t size) {
  (void)alignment;
  (void)size;
  smi_free(p);
}

void cfree(void *p) SM_ALIAS(free);
void *__libc_malloc(size_t size) SM_ALIAS(malloc);
void __libc_free(void *p) SM_ALIAS(free);
void *__libc_calloc(size_t count, size_t size) SM_ALIAS(calloc);
void *__libc_realloc(void *p, size_t size) SM_ALIAS(realloc);
void *__libc_reallocarray(void *p, size_t count, size_t size) SM_ALIAS(reallocarray);
void *__libc_memalign(size_t alignment, size_t size) SM_ALIAS(memalign);
void *__libc_valloc(size_t size) SM_ALIAS(valloc);
void *__libc_pvalloc(size_t size) SM_ALIAS(pvalloc);
