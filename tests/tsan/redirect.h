/* tests/tsan/redirect.h: force-included (-include) into the TSan runners'
 * test sources: the tests' own calls of the malloc family become calls of
 * slotmalloc's sm_ API.
 *
 * Why: under TSan the program cannot take slotmalloc's malloc. The TSan
 * runtime's malloc comes first in the symbol lookup order (interceptors), and
 * a malloc defined in the program itself, which would win, is called by the
 * TSan runtime's own initialization (dlsym -> dlerror -> malloc) before the
 * runtime can run instrumented code: it crashes at start-up. So everything
 * else (libc, stdio, the runner) allocates from TSan's allocator, and the
 * tests' objects come from the instrumented slotmalloc, whose synchronization
 * TSan checks.
 *
 * Object-like macros, so that `(c ? sm_free : free)(p)` is redirected too; the
 * system headers are included first and are guarded, so their declarations
 * keep the standard names. */
#ifndef SM_TSAN_REDIRECT_H
#define SM_TSAN_REDIRECT_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <slotmalloc.h>

#define malloc sm_malloc
#define free sm_free
#define calloc sm_calloc
#define realloc sm_realloc
#define reallocarray sm_reallocarray
#define aligned_alloc sm_aligned_alloc
#define posix_memalign sm_posix_memalign
#define malloc_usable_size sm_usable_size

#endif
