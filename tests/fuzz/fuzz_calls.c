/* fuzz_calls.c: the fuzzer's call dispatcher (fuzz_calls.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_calls.h"

/* The five frees differ only in the function and its arguments: one entry
 * each, and one case in do_call. */
static void free_sm(call_t *c) { sm_free(c->p); }
static void free_fz(call_t *c) { fz_free(c->p); }
static void free_cfree(call_t *c) { fz_cfree(c->p); }
static void free_sized(call_t *c) { fz_free_sized(c->p, c->a); }
static void free_aligned_sized(call_t *c) { fz_free_aligned_sized(c->p, c->b, c->a); }
static void (*const frees[])(call_t *) = {
    [F_FREE] = free_sm,
    [F_PFREE] = free_fz,
    [F_CFREE] = free_cfree,
    [F_FREE_SIZED] = free_sized,
    [F_FREE_ASIZED] = free_aligned_sized,
};

void do_call(call_t *c) {
  errno = 0;
  switch (c->fn) {
    case F_MALLOC: c->rp = sm_malloc(c->a); break;
    case F_PMALLOC: c->rp = fz_malloc(c->a); break;
    case F_CALLOC: c->rp = sm_calloc(c->a, c->b); break;
    case F_PCALLOC: c->rp = fz_calloc(c->a, c->b); break;
    case F_REALLOC: c->rp = sm_realloc(c->p, c->a); break;
    case F_PREALLOC: c->rp = fz_realloc(c->p, c->a); break;
    case F_REALLOCARRAY: c->rp = sm_reallocarray(c->p, c->a, c->b); break;
    case F_PREALLOCARRAY: c->rp = fz_reallocarray(c->p, c->a, c->b); break;
    case F_FREE:
    case F_PFREE:
    case F_CFREE:
    case F_FREE_SIZED:
    case F_FREE_ASIZED:
      errno = 4242; /* a free leaves errno as it was (fuzz_ops.c checks c->err) */
      frees[c->fn](c);
      break;
    case F_ALIGNED: c->rp = sm_aligned_alloc(c->b, c->a); break;
    case F_PALIGNED: c->rp = fz_aligned_alloc(c->b, c->a); break;
    case F_POSIX_MEMALIGN:
      c->rp = (void *)0x5a5a;
      c->ri = sm_posix_memalign(&c->rp, c->b, c->a);
      break;
    case F_PPOSIX_MEMALIGN:
      c->rp = (void *)0x5a5a;
      c->ri = fz_posix_memalign(&c->rp, c->b, c->a);
      break;
    case F_MEMALIGN: c->rp = fz_memalign(c->b, c->a); break;
    case F_VALLOC: c->rp = fz_valloc(c->a); break;
    case F_PVALLOC: c->rp = fz_pvalloc(c->a); break;
    case F_ANEW: c->ra = sm_arena_new(c->ar); break;
    case F_AMALLOC: c->rp = sm_arena_malloc(c->ar, c->a); break;
    case F_ACALLOC: c->rp = sm_arena_calloc(c->ar, c->a, c->b); break;
    case F_AALIGNED: c->rp = sm_arena_aligned_alloc(c->ar, c->b, c->a); break;
    case F_AHALLOC: c->rh = sm_arena_halloc(c->ar, c->a); break;
    case F_HALLOC: c->rh = sm_halloc(c->a); break;
    case F_CLOSE: sm_arena_close(c->ar); break;
    case F_RETAIN: sm_arena_retain(c->ar); break;
    case F_RELEASE: sm_arena_release(c->ar); break;
    case F_PROMOTE: c->rp = sm_arena_promote(c->p); break;
    case F_STEAL: c->ri = sm_arena_steal(c->ar, c->ar2); break;
    case F_MERGE: c->ri = sm_arena_merge(c->ar, c->ar2); break;
    case F_ENTER: c->ra = sm_arena_enter(c->ar); break;
    case F_SETLIMIT: c->ri = sm_arena_set_limit(c->ar, c->a); break;
    case F_HFREE: c->ri = sm_hfree(c->h); break;
    case F_COLLECT: c->a = sm_collect(c->a); break;
    case F_TRIM: c->ri = fz_malloc_trim(0); break;
    case F_ROOT: {
      sm_arena_t *t = sm_arena_new(NULL);
      c->ra = sm_arena_parent(t);
      sm_arena_release(t);
      break;
    }
    case F_FREELIST:
      for (int i = 0; i < c->n; i++) (c->a & 1 ? fz_free : sm_free)(c->list[i]);
      break;
    case F_HFREELIST:
      for (int i = 0; i < c->n; i++) c->results[i] = sm_hfree(c->hlist[i]);
      break;
    case F_MALLOCLIST:
      for (int i = 0; i < c->n; i++) c->list[i] = sm_malloc(c->sizes[i]);
      break;
  }
  c->err = errno;
}

#if NT > 1
typedef struct {
  call_t *job;
  bool done;
} mailbox_t;
static mailbox_t box[NT];
static pthread_mutex_t box_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t box_cond = PTHREAD_COND_INITIALIZER;

static void *worker(void *arg) {
  int t = (int)(intptr_t)arg;
  pthread_mutex_lock(&box_lock);
  for (;;) {
    while (!box[t].job) pthread_cond_wait(&box_cond, &box_lock);
    call_t *c = box[t].job;
    pthread_mutex_unlock(&box_lock);
    do_call(c);
    pthread_mutex_lock(&box_lock);
    box[t].job = NULL;
    box[t].done = true;
    pthread_cond_broadcast(&box_cond);
  }
  return NULL;
}

static void call_async(int t, call_t *c) {
  pthread_mutex_lock(&box_lock);
  box[t].done = false;
  box[t].job = c;
  pthread_cond_broadcast(&box_cond);
  pthread_mutex_unlock(&box_lock);
}

static void call_wait(int t) {
  pthread_mutex_lock(&box_lock);
  while (!box[t].done) pthread_cond_wait(&box_cond, &box_lock);
  pthread_mutex_unlock(&box_lock);
}

void call_parallel(int n, const int *threads, call_t **calls) {
  for (int k = 0; k < n; k++)
    if (threads[k] != 0) call_async(threads[k], calls[k]);
  for (int k = 0; k < n; k++)
    if (threads[k] == 0) do_call(calls[k]);
  for (int k = 0; k < n; k++)
    if (threads[k] != 0) call_wait(threads[k]);
}
#endif

void call_on(int t, call_t *c) {
#if NT > 1
  if (t != 0) {
    call_async(t, c);
    call_wait(t);
    return;
  }
#endif
  (void)t;
  do_call(c);
}

void calls_start(void) {
#if NT > 1
  for (int t = 1; t < NT; t++) {
    pthread_t th;
    if (pthread_create(&th, NULL, worker, (void *)(intptr_t)t) != 0) abort();
    pthread_detach(th);
  }
#endif
}
