/* counters.h: process-wide event counts for the statistics (alloc/stats.c),
 * bumped on slow paths only (never on the malloc/free fast paths): a relaxed
 * atomic add on a cache line of its own. Defined in slots/segment.c. */
#ifndef SMI_COUNTERS_H
#define SMI_COUNTERS_H

#include <stdatomic.h>
#include <stddef.h>

enum {
  SMI_COUNT_SLOW_CALLS,      /* malloc/calloc calls that took the allocation slow path (smi_malloc_generic) */
  SMI_COUNT_REMOTE_FREES,    /* slots freed by other threads, collected by the owner */
  SMI_COUNT_BLOCKS_PURGED,   /* blocks whose memory went back to the OS */
  SMI_COUNT_SEGMENTS_MAPPED, /* segments of slot blocks mapped */
  SMI_COUNT_LARGE_MAPPED,    /* large objects given a mapping of their own */
  SMI_COUNT_GIVEBACK_CALLS,  /* system calls that gave memory back to the OS (madvise, process_madvise: os.c) */
  SMI_COUNTS
};

typedef struct {
  _Alignas(64) _Atomic size_t n;
} smi_counter_t;
extern smi_counter_t smi_counters[SMI_COUNTS];

static inline void smi_count(unsigned which, size_t n) {
  atomic_fetch_add_explicit(&smi_counters[which].n, n, memory_order_relaxed);
}
static inline size_t smi_count_read(unsigned which) {
  return atomic_load_explicit(&smi_counters[which].n, memory_order_relaxed);
}

#endif
