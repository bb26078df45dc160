/* compat.c: glibc's malloc introspection calls, answered with slotmalloc's own
 * figures: malloc_stats, malloc_info, mallinfo, mallinfo2, mallopt.
 *
 * A static link (cc -static prog.c libslotmalloc.a) must never pull glibc's
 * malloc.o out of libc.a, or its malloc clashes with ours ("multiple
 * definition of malloc"). So every name that malloc.o defines and a program
 * may call is defined by libslotmalloc: override.c has the allocation calls
 * and their __libc_ names; this file has the introspection calls, their
 * __libc_ and __ names, and the __ names of the allocation calls (thin calls
 * of the public ones). What is left in malloc.o is glibc-internal and only
 * weakly referenced by libc.a (__malloc_fork_lock_parent, the unlocks,
 * __malloc_arena_thread_freeres, __glibc_morecore): never pulled in. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc/internal.h"
#include "alloc/out.h"
#include "alloc/stats.h"

#define SM_EXPORT __attribute__((visibility("default")))
#define SM_ALIAS(name) __attribute__((alias(#name), visibility("default"), used))

/* Free slots in blocks and their bytes, summed over the classes. */
static void free_slots(const smi_report_t *r, size_t *count, size_t *bytes) {
  *count = *bytes = 0;
  for (unsigned k = 0; k < SMI_CLASSES; k++) {
    size_t n = r->cls[k].slots - r->cls[k].live;
    *count += n;
    *bytes += n * smi_class_size[k];
  }
}

/* glibc's meaning, slotmalloc's figures: arena is the memory held for slot
 * blocks and caches (committed minus the large objects), hblkhd the large
 * objects (glibc's mmapped chunks); so arena + hblkhd is the committed memory
 * and uordblks + hblkhd the bytes in live objects, as with glibc. ordblks
 * counts free slots; usmblks, smblks, fsmblks and keepcost are 0, as glibc's
 * are in practice. */
SM_EXPORT struct mallinfo2 mallinfo2(void) {
  smi_report_t r;
  smi_stats_collect(NULL, &r);
  const sm_stats_t *s = &r.s;
  size_t free_count, free_bytes;
  free_slots(&r, &free_count, &free_bytes);
  struct mallinfo2 mi;
  memset(&mi, 0, sizeof mi);
  size_t small_live = s->bytes_live - s->large_bytes;
  mi.arena = s->bytes_committed > s->large_bytes ? s->bytes_committed - s->large_bytes : 0;
  if (mi.arena < small_live) mi.arena = small_live;
  mi.ordblks = free_count;
  mi.hblks = s->large_objects;
  mi.hblkhd = s->large_bytes;
  mi.uordblks = small_live;
  mi.fordblks = mi.arena - small_live;
  return mi;
}

static int clamp_int(size_t v) { return v > INT_MAX ? INT_MAX : (int)v; }

/* The same in ints (each figure at most INT_MAX), for old programs. */
SM_EXPORT struct mallinfo mallinfo(void) {
  struct mallinfo2 m2 = mallinfo2();
  struct mallinfo mi;
  memset(&mi, 0, sizeof mi);
  mi.arena = clamp_int(m2.arena);
  mi.ordblks = clamp_int(m2.ordblks);
  mi.hblks = clamp_int(m2.hblks);
  mi.hblkhd = clamp_int(m2.hblkhd);
  mi.uordblks = clamp_int(m2.uordblks);
  mi.fordblks = clamp_int(m2.fordblks);
  return mi;
}

/* glibc's lines first (a program or script may read them), then slotmalloc's
 * own report; on fd 2, without stdio. */
SM_EXPORT void malloc_stats(void) {
  int cancel = smi_nocancel_begin(); /* glibc's malloc_stats is no cancellation point */
  struct mallinfo2 mi = mallinfo2();
  char text[512];
  int n = snprintf(text, sizeof text,
                   "Arena 0:\nsystem bytes     = %10zu\nin use bytes     = %10zu\nTotal (incl. mmap):\n"
                   "system bytes     = %10zu\nin use bytes     = %10zu\nmax mmap regions = %10zu\n"
                   "max mmap bytes   = %10zu\n",
                   mi.arena, mi.uordblks, mi.arena + mi.hblkhd, mi.uordblks + mi.hblkhd, mi.hblks, mi.hblkhd);
  if (n > 0) smi_out_write(STDERR_FILENO, text, (size_t)n < sizeof text ? (size_t)n : sizeof text - 1);
  smi_stats_write(STDERR_FILENO, false);
  smi_nocancel_end(cancel);
}

/* XML in the shape of glibc's (one heap): per size class, the free slots as
 * glibc lists its free chunks per bin ("from" the previous class's size + 1
 * "to" the slot size); the totals; the memory held. Counted first, written
 * after, with no lock held (fprintf may allocate). */
SM_EXPORT int malloc_info(int options, FILE *fp) {
  if (options != 0 || !fp) {
    errno = EINVAL;
    return -1;
  }
  smi_report_t r;
  smi_stats_collect(NULL, &r);
  const sm_stats_t *s = &r.s;
  size_t free_count, free_bytes;
  free_slots(&r, &free_count, &free_bytes);
  fputs("<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n", fp);
  for (unsigned k = 0; k < SMI_CLASSES; k++) {
    if (!r.cls[k].blocks) continue;
    size_t n = r.cls[k].slots - r.cls[k].live;
    fprintf(fp, "  <size from=\"%u\" to=\"%u\" total=\"%zu\" count=\"%zu\"/>\n",
            k ? (unsigned)smi_class_size[k - 1] + 1 : 1u, (unsigned)smi_class_size[k], n * smi_class_size[k], n);
  }
  fprintf(
      fp,
      "</sizes>\n<total type=\"fast\" count=\"0\" size=\"0\"/>\n<total type=\"rest\" count=\"%zu\" size=\"%zu\"/>\n"
      "<system type=\"current\" size=\"%zu\"/>\n<system type=\"max\" size=\"%zu\"/>\n"
      "<aspace type=\"total\" size=\"%zu\"/>\n<aspace type=\"mprotect\" size=\"%zu\"/>\n</heap>\n",
      free_count, free_bytes, s->bytes_committed, s->bytes_peak, s->bytes_committed, s->bytes_committed);
  fprintf(fp,
          "<total type=\"fast\" count=\"0\" size=\"0\"/>\n<total type=\"rest\" count=\"%zu\" size=\"%zu\"/>\n"
          "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n<system type=\"current\" size=\"%zu\"/>\n"
          "<system type=\"max\" size=\"%zu\"/>\n<aspace type=\"total\" size=\"%zu\"/>\n"
          "<aspace type=\"mprotect\" size=\"%zu\"/>\n</malloc>\n",
          free_count, free_bytes, s->large_objects, s->large_bytes, s->bytes_committed, s->bytes_peak,
          s->bytes_committed, s->bytes_committed);
  return 0;
}

/* Accepted and without effect: glibc's tuning knobs (fastbins, trim and mmap
 * thresholds, arena counts, perturbation, check action) have no counterpart
 * here; the SLOTMALLOC_* options tune slotmalloc, and the misuse abort is
 * never turned off by a program's mallopt. Returns 1 for a parameter glibc
 * knows, 0 for any other. */
SM_EXPORT int mallopt(int param, int value) {
  (void)value;
  switch (param) {
    case M_MXFAST:
    case M_NLBLKS:
    case M_GRAIN:
    case M_KEEP:
    case M_TRIM_THRESHOLD:
    case M_TOP_PAD:
    case M_MMAP_THRESHOLD:
    case M_MMAP_MAX:
    case M_CHECK_ACTION:
    case M_PERTURB:
    case M_ARENA_TEST:
    case M_ARENA_MAX: return 1;
    default: return 0;
  }
}

struct mallinfo2 __libc_mallinfo2(void) __THROW SM_ALIAS(mallinfo2);
struct mallinfo2 __mallinfo2(void) __THROW SM_ALIAS(mallinfo2);
struct mallinfo __libc_mallinfo(void) __THROW SM_ALIAS(mallinfo);
struct mallinfo __mallinfo(void) __THROW SM_ALIAS(mallinfo);
void __malloc_stats(void) __THROW SM_ALIAS(malloc_stats);
int __malloc_info(int options, FILE *fp) __THROW SM_ALIAS(malloc_info);
int __libc_mallopt(int param, int value) __THROW SM_ALIAS(mallopt);
int __mallopt(int param, int value) __THROW SM_ALIAS(mallopt);

/* The __ names of the allocation calls (glibc's malloc.o defines them too). */
SM_EXPORT void *__malloc(size_t size) { return malloc(size); }
SM_EXPORT void __free(void *p) { free(p); }
SM_EXPORT void *__calloc(size_t count, size_t size) { return calloc(count, size); }
SM_EXPORT void *__realloc(void *p, size_t size) { return realloc(p, size); }
SM_EXPORT void *__memalign(size_t alignment, size_t size) { return memalign(alignment, size); }
SM_EXPORT int __posix_memalign(void **out, size_t alignment, size_t size) {
  return posix_memalign(out, alignment, size);
}
SM_EXPORT void *__valloc(size_t size) { return valloc(size); }
SM_EXPORT void *__pvalloc(size_t size) { return pvalloc(size); }
SM_EXPORT int __malloc_trim(size_t pad) { return malloc_trim(pad); }
SM_EXPORT size_t __malloc_usable_size(void *p) { return malloc_usable_size(p); }
