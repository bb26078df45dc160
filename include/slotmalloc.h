/* slotmalloc.h: the public interface of slotmalloc.
 *
 * slotmalloc is a malloc replacement whose every object lives in a slot with a
 * generation counter. On that base it offers nested arenas that close in one
 * sweep, and 64-bit generational handles that never dereference freed memory.
 *
 * Glossary
 *   slot        the memory of one small object; slots of one size class form a block
 *   block       an aligned span cut into slots, with a side table of generations
 *   generation  a per-slot byte: a live bit and a count of the slot's cycles, which every free advances
 *   arena       a set of blocks with one lifetime; arenas nest; every thread has a root arena
 *   handle      64 bits naming a slot and its generation: stale handles dereference to NULL
 *
 * Thread rules: an arena allocates from one thread at a time; its objects may be
 * freed from any thread; it may be closed, retained and released from any thread.
 */
#ifndef SLOTMALLOC_H
#define SLOTMALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SM_API __attribute__((visibility("default")))
#define SM_MALLOC_ATTR __attribute__((malloc, warn_unused_result))
#else
#define SM_API
#define SM_MALLOC_ATTR
#endif

#define SM_VERSION_MAJOR 0
#define SM_VERSION_MINOR 1

/* ---- The malloc family ------------------------------------------------------
 * Same contracts as the C and POSIX functions of the same name:
 *   sm_malloc(0) returns a distinct, freeable pointer; results of 16 bytes or
 *   more are 16-aligned; failure gives NULL with errno ENOMEM (sizes past
 *   PTRDIFF_MAX, count*size overflow, memory the OS refuses).
 *   sm_free(NULL) does nothing; sm_free never changes errno. A double free or a
 *   pointer slotmalloc did not hand out prints one line on stderr and aborts
 *   (SLOTMALLOC_ABORT_ON_ERROR=0: report and ignore).
 *   sm_realloc(p, 0) frees p and returns NULL (as glibc does); a failed
 *   sm_realloc leaves p untouched.
 *   sm_aligned_alloc: alignment a power of two (else NULL, EINVAL), up to 4 MiB
 *   and beyond. sm_posix_memalign: alignment a power of two multiple of
 *   sizeof(void *), else EINVAL and *out untouched; returns 0 or an errno code.
 *   sm_usable_size(p): at least the size asked for, all of it writable; 0 for NULL. */
SM_API SM_MALLOC_ATTR void *sm_malloc(size_t size);
SM_API SM_MALLOC_ATTR void *sm_calloc(size_t count, size_t size);
SM_API void *sm_realloc(void *p, size_t size);
SM_API void *sm_reallocarray(void *p, size_t count, size_t size);
SM_API SM_MALLOC_ATTR void *sm_aligned_alloc(size_t alignment, size_t size);
SM_API int sm_posix_memalign(void **out, size_t alignment, size_t size);
SM_API void sm_free(void *p);
SM_API size_t sm_usable_size(const void *p);

/* ---- Arenas -------------------------------------------------------------------
 * An arena is a set of slot blocks with one lifetime. Arenas nest: closing an
 * arena closes its descendants. Closing makes every object and handle of the
 * subtree stale at once (a bulk sweep over the blocks' generation tables) and
 * gives the memory back incrementally (see sm_collect). */
typedef struct sm_arena_s sm_arena_t;

/* A new arena under parent (NULL: the calling thread's root arena); reference
 * count 1. NULL with ENOMEM on failure, with EINVAL when parent is closed. */
SM_API sm_arena_t *sm_arena_new(sm_arena_t *parent);
/* Allocation in a: as the malloc family, and NULL with EINVAL when a is NULL,
 * closed, or a root arena other than the calling thread's (its own thread
 * allocates there without a lock; sm_arena_halloc then returns 0). */
SM_API SM_MALLOC_ATTR void *sm_arena_malloc(sm_arena_t *a, size_t size);
SM_API SM_MALLOC_ATTR void *sm_arena_calloc(sm_arena_t *a, size_t count, size_t size);
SM_API SM_MALLOC_ATTR void *sm_arena_aligned_alloc(sm_arena_t *a, size_t alignment, size_t size);
/* Closes a and all its descendants, at once, from any thread. Their objects are
 * freed; their handles are stale when this returns. Closing a closed arena does
 * nothing. The arena's memory (the struct itself included) stays valid until
 * its last reference is released. A thread's root arena cannot be closed. */
SM_API void sm_arena_close(sm_arena_t *a);
SM_API void sm_arena_retain(sm_arena_t *a);
/* Drops one reference; the last release closes the arena and frees it. */
SM_API void sm_arena_release(sm_arena_t *a);
/* The arena of a live object; NULL if p is not the start of a live object of ours. */
SM_API sm_arena_t *sm_arena_of(const void *p);
/* Plain malloc on this thread now allocates in a (NULL, a closed arena or a
 * root arena: the calling thread's root arena); returns the previously entered
 * arena (NULL: the root arena). */
SM_API sm_arena_t *sm_arena_enter(sm_arena_t *a);
/* Moves the object into its arena's parent and returns its new address (the
 * old one is freed, its handle goes stale); NULL with errno set if p is not
 * live. Objects of a root arena stay where they are and p is returned. When the
 * parent is a root arena, the object goes to the calling thread's root arena
 * (another thread's root never allocates from this thread). */
SM_API void *sm_arena_promote(void *p);
/* Moves arena a (with its subtree) under new_parent. 0, or EINVAL for a cycle,
 * a closed arena or a root arena. */
SM_API int sm_arena_steal(sm_arena_t *a, sm_arena_t *new_parent);
/* src's objects and children join dst's lifetime; src ends (its handle-facing
 * identity is gone; its objects stay live in dst). 0, or EINVAL. */
SM_API int sm_arena_merge(sm_arena_t *dst, sm_arena_t *src);
/* Caps the bytes live in a (its own objects); allocations past the cap fail
 * with ENOMEM. 0 removes the cap. Returns 0, or EINVAL. */
SM_API int sm_arena_set_limit(sm_arena_t *a, size_t bytes);
/* The parent of a (NULL for a root arena). */
SM_API sm_arena_t *sm_arena_parent(sm_arena_t *a);
/* Runs up to budget units (blocks) of deferred dismantling of closed arenas;
 * returns the units done. sm_collect(SIZE_MAX) finishes all pending work. */
SM_API size_t sm_collect(size_t budget);

/* ---- Handles ------------------------------------------------------------------
 * A handle names one slot at one generation. sm_deref never faults and takes no
 * lock: it returns NULL for 0, a freed object, an object of a closed arena, and
 * any 64-bit value that does not name a live object (forged, random, or a valid
 * handle with any one bit changed). A stale handle never becomes valid again. */
typedef uint64_t sm_handle_t; /* 0 is never a valid handle */

SM_API sm_handle_t sm_halloc(size_t size);
SM_API sm_handle_t sm_arena_halloc(sm_arena_t *a, size_t size);
/* The handle of any live object of ours (malloc'd ones included); 0 otherwise. */
SM_API sm_handle_t sm_handle_of(const void *p);
SM_API void *sm_deref(sm_handle_t h);
/* Frees the object h names: 0, or ESTALE for a handle that names no live
 * object (never an abort). */
SM_API int sm_hfree(sm_handle_t h);

/* ---- Statistics -----------------------------------------------------------------*/
typedef struct sm_stats_s {
  size_t bytes_live;      /* bytes in live objects (usable sizes) */
  size_t objects_live;    /* live objects */
  size_t blocks;          /* slot blocks held */
  size_t large_objects;   /* objects mapped directly */
  size_t bytes_committed; /* memory held from the OS (process-wide only) */
  size_t bytes_peak;      /* peak of bytes_committed (process-wide only) */
  size_t arenas;          /* arenas counted (the subtree, itself included) */
  /* Appended in 0.1 (issue 9). The struct only ever grows at its end, so
   * source that names fields keeps compiling; a binary built against an older
   * header must be rebuilt (sm_arena_stats writes the whole struct). */
  size_t slots;           /* slots in the blocks counted (live + free) */
  size_t large_bytes;     /* bytes of the large objects (included in bytes_live) */
  size_t rss;             /* resident set of the process, /proc/self/statm (process-wide) */
  size_t slow_calls;      /* malloc/calloc calls that took the allocation slow path (process-wide) */
  size_t remote_frees;    /* frees by other threads collected by the owner (process-wide) */
  size_t blocks_purged;   /* blocks whose memory went back to the OS (process-wide) */
  size_t segments_mapped; /* segments of slot blocks mapped (process-wide) */
  size_t large_mapped;    /* large objects given a mapping of their own (process-wide) */
  uint64_t elapsed_ms;    /* since the allocator started (process-wide) */
  size_t giveback_calls;  /* system calls that gave memory back to the OS: madvise, process_madvise (process-wide) */
} sm_stats_t;

/* Statistics of a and its descendants rolled up (NULL: the whole process). */
SM_API void sm_arena_stats(sm_arena_t *a, sm_stats_t *out);
/* Writes the statistics of a (NULL: process) as text or JSON into buf (at most
 * size bytes, NUL-terminated); returns the length it needed. */
SM_API size_t sm_stats_text(sm_arena_t *a, char *buf, size_t size);
SM_API size_t sm_stats_json(sm_arena_t *a, char *buf, size_t size);

/* ---- Heap profile ----------------------------------------------------------------
 * With SLOTMALLOC_PROF_SAMPLE=N (on average one allocation sampled per N bytes,
 * Poisson; N=1: every allocation), writes the live heap's sampled allocation
 * sites to path (a %p in it becomes the pid) in the legacy text heap profile
 * format that google-pprof reads (`google-pprof --text program path`). Returns
 * 0, EINVAL when profiling is off or path is NULL, or the errno of the failed
 * open or write. Allocates nothing. SLOTMALLOC_PROF_FILE=path writes the same
 * at exit. */
SM_API int sm_prof_dump(const char *path);

#ifdef __cplusplus
}
#endif
#endif /* SLOTMALLOC_H */
