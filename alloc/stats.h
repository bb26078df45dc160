/* stats.h: the statistics report as counted (alloc/stats.c), for the glibc
 * introspection calls (preload/compat.c) and the reports at exit. */
#ifndef SMI_STATS_H
#define SMI_STATS_H

#include <stdbool.h>

#include "internal.h"

typedef struct {
  size_t live;   /* live objects */
  size_t slots;  /* slots in its blocks */
  size_t blocks; /* blocks cut for the class */
} smi_class_stats_t;

/* The totals first: code that counts into an sm_stats_t * of a report finds the
 * report around it (smi_stats_count_block). */
typedef struct {
  sm_stats_t s;
  smi_class_stats_t cls[SMI_CLASSES];
} smi_report_t;

/* Counts a and its descendants (NULL: the process) into r. Takes the tree and
 * arena locks: not to be called with any of them held. */
void smi_stats_collect(sm_arena_t *a, smi_report_t *r);
/* Adds a block's objects to the report whose totals are s. */
void smi_stats_count_block(const smi_block_t *b, sm_stats_t *s);
/* Writes the process report (text or JSON) to fd. */
void smi_stats_write(int fd, bool json);
/* Cancellation off for the calling thread, and back as it was: around the
 * calls that open, read or write files (cancellation points) with a lock,
 * a flag or a descriptor of ours held, or inside a call a program expects
 * never to be cancelled in (the malloc family and glibc's statistics calls
 * are not cancellation points). */
int smi_nocancel_begin(void);
void smi_nocancel_end(int old);
/* At start-up (options.c, once the options are read): the clock of elapsed_ms
 * starts; if a report at exit is wanted, fd 2 is kept (see stats.c). */
void smi_stats_setup(void);
/* Where a report at exit goes instead of a SLOTMALLOC_*_FILE: the program's
 * stderr as it was at start-up if that is still open, else fd 2. */
int smi_stats_stderr(void);

#endif
