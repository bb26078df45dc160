/* fuzz_calls.h: the fuzzer's call dispatcher (fuzz_calls.c). Library calls
 * are described by a call_t and executed by the thread the input picks: thread
 * 0 is the fuzzer's own, threads 1..NT-1 are workers waiting for calls; errno
 * is taken on the thread that made the call. */
#ifndef FUZZ_CALLS_H
#define FUZZ_CALLS_H

#include <stddef.h>

#include "slotmalloc.h"

#ifndef FUZZ_THREADS
#define FUZZ_THREADS 1
#endif
#define NT FUZZ_THREADS

/* The standard names, from preload/override.c renamed by objcopy. */
void *fz_malloc(size_t);
void fz_free(void *);
void fz_cfree(void *);
void *fz_calloc(size_t, size_t);
void *fz_realloc(void *, size_t);
void *fz_reallocarray(void *, size_t, size_t);
int fz_posix_memalign(void **, size_t, size_t);
void *fz_aligned_alloc(size_t, size_t);
size_t fz_malloc_usable_size(void *);
void *fz_memalign(size_t, size_t);
void *fz_valloc(size_t);
void *fz_pvalloc(size_t);
int fz_malloc_trim(size_t);
void fz_free_sized(void *, size_t);
void fz_free_aligned_sized(void *, size_t, size_t);

enum {
  F_MALLOC,
  F_PMALLOC,
  F_CALLOC,
  F_PCALLOC,
  F_REALLOC,
  F_PREALLOC,
  F_REALLOCARRAY,
  F_PREALLOCARRAY,
  F_FREE,
  F_PFREE,
  F_CFREE,
  F_FREE_SIZED,
  F_FREE_ASIZED,
  F_ALIGNED,
  F_PALIGNED,
  F_POSIX_MEMALIGN,
  F_PPOSIX_MEMALIGN,
  F_MEMALIGN,
  F_VALLOC,
  F_PVALLOC,
  F_ANEW,
  F_AMALLOC,
  F_ACALLOC,
  F_AALIGNED,
  F_AHALLOC,
  F_HALLOC,
  F_CLOSE,
  F_RETAIN,
  F_RELEASE,
  F_PROMOTE,
  F_STEAL,
  F_MERGE,
  F_ENTER,
  F_SETLIMIT,
  F_HFREE,
  F_COLLECT,
  F_TRIM,
  F_ROOT,
  F_FREELIST,
  F_HFREELIST,
  F_MALLOCLIST,
};

typedef struct {
  int fn;
  void *p;
  size_t a, b, c;
  sm_arena_t *ar, *ar2;
  sm_handle_t h;
  void **list; /* F_FREELIST, F_MALLOCLIST */
  sm_handle_t *hlist;
  int *results;
  size_t *sizes;
  int n;
  /* results */
  void *rp;
  int ri;
  sm_handle_t rh;
  sm_arena_t *ra;
  int err;
} call_t;

void calls_start(void);         /* the worker threads (NT > 1) */
void do_call(call_t *c);        /* on this thread */
void call_on(int t, call_t *c); /* on thread t, waiting for it */
#if NT > 1
/* Runs calls on distinct threads at the same time; thread 0's call runs inline. */
void call_parallel(int n, const int *threads, call_t **calls);
#endif

#endif
