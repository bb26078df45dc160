/* test_footprint.c: what the library costs a process that barely allocates
 * (issue 8, peak RSS of the small workloads). A trivial program
 * (footprint_prog.c: 1000 malloc+free pairs of 16 B) is run with the library
 * preloaded and without it, and reads its own /proc/self/smaps:
 *   - libgcc_s is not loaded: the heap profiler's unwinder is opened only
 *     when profiling is on (alloc/prof_dl.c); as a load-time dependency it
 *     cost 84 KiB resident in every process (pair -z 16: 1828 -> 1712 KiB,
 *     README "Start-up footprint");
 *   - the anonymous memory the library adds (its first segment, the segment
 *     map and id table pages, its writable data and .bss, where the first
 *     thread's heap lies: alloc/meta.c) and
 *     the resident size of the library's own file (cold code built for
 *     size, relative relocations packed: CMakeLists.txt) stay under bounds
 *     measured with a margin;
 *   - the 16-byte block it uses takes two 4 KiB pages: the slot's and its
 *     generation table's (slots/segment.c, smi_block_layout). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#ifndef SM_FOOTPRINT_PROG
#error "SM_FOOTPRINT_PROG must name footprint_prog"
#endif

static const char *const UNSET[] = {"LD_PRELOAD",
                                    "SLOTMALLOC_PROF_SAMPLE",
                                    "SLOTMALLOC_PROF_FILE",
                                    "SLOTMALLOC_LEAKS",
                                    "SLOTMALLOC_STATS",
                                    "SLOTMALLOC_VERBOSE",
                                    NULL};

/* footprint_prog's smaps (r->out), with the library preloaded or not, and
 * `extra` ("NAME=VALUE" or NULL) in its environment. */
static void run_child(bool preload, const char *extra, tu_proc_t *r) {
  const char *set[3] = {NULL, NULL, NULL};
  int k = 0;
  if (preload) set[k++] = "LD_PRELOAD=" SM_SO_PATH;
  if (extra) set[k++] = extra;
  char **env = tu_env_make(UNSET, set);
  char *argv[] = {(char *)SM_FOOTPRINT_PROG, NULL};
  cr_assert_eq(tu_run(argv, env, NULL, NULL, 60, r), 0, "could not run footprint_prog");
  free(env);
  cr_assert(!r->timed_out && WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0, "footprint_prog: %s\n%s",
            tu_status_str(r), r->err);
}

/* Sums the field (e.g. "Rss:") in KiB over the mappings of smaps whose path
 * contains `path` (NULL: every mapping). */
static long smaps_kib(const char *smaps, const char *path, const char *field) {
  long sum = 0;
  bool in = path == NULL;
  size_t flen = strlen(field);
  for (const char *line = smaps; *line;) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    /* a mapping's header: "lo-hi perms offset dev inode [path]" */
    bool header = strchr("0123456789abcdef", line[0]) && memchr(line, '-', len);
    if (header) {
      if (path) {
        char buf[PATH_MAX + 128];
        snprintf(buf, sizeof buf, "%.*s", (int)len, line);
        in = strstr(buf, path) != NULL;
      }
    } else if (in && strncmp(line, field, flen) == 0) {
      sum += strtol(line + flen, NULL, 10);
    }
    line += len + (end ? 1 : 0);
  }
  return sum;
}

/* The library's file as the maps name it (SM_SO_PATH is a symbolic link). */
static const char *library_file(void) {
  static char real[PATH_MAX];
  cr_assert(realpath(SM_SO_PATH, real), "realpath %s", SM_SO_PATH);
  return real;
}

#ifndef SM_SANITIZED /* a sanitizer's runtime loads libgcc_s itself */
Test(footprint, a_preloaded_program_loads_no_libgcc_s) {
  tu_proc_t r;
  run_child(true, NULL, &r);
  cr_assert_gt(smaps_kib(r.out, library_file(), "Rss:"), 0, "the library is not mapped:\n%s", r.out);
  cr_assert_null(strstr(r.out, "libgcc_s"), "libgcc_s is mapped in a program that does not profile:\n%s", r.out);
  tu_proc_free(&r);
}

Test(footprint, profiling_opens_the_unwinder) {
  tu_proc_t r;
  run_child(true, "SLOTMALLOC_PROF_SAMPLE=1", &r);
  cr_assert_not_null(strstr(r.out, "libgcc_s"), "profiling, and libgcc_s is not mapped:\n%s", r.out);
  tu_proc_free(&r);
}
#endif

/* The default build only: the hardened, debug and sanitizer builds map more. */
#if !defined(SM_SANITIZED) && !defined(SM_HARDENED) && !defined(SM_DEBUG_BUILD)
Test(footprint, a_trivial_program_stays_small) {
  tu_proc_t with, without;
  run_child(true, NULL, &with);
  run_child(false, NULL, &without);
  long anon = smaps_kib(with.out, NULL, "Anonymous:") - smaps_kib(without.out, NULL, "Anonymous:");
  long lib = smaps_kib(with.out, library_file(), "Rss:");
  /* Measured at 44-48 KiB of anonymous memory more than glibc's malloc
   * (52-60 with a 16-byte table over two pages, 68 with libgcc_s too), and
   * 112 KiB of the library's file resident (its
   * whole file: the kernel maps a file's cached pages 64 KiB around each
   * fault; 116 KiB with a page of zeros in its read-only data, 136 before
   * the cold code was built for size and the relative relocations packed). */
  cr_assert_leq(anon, 72, "the library adds %ld KiB of anonymous memory to a trivial program (bound 72)", anon);
  cr_assert_leq(lib, 152, "%ld KiB of the library's file resident (bound 152)", lib);
  tu_proc_free(&with);
  tu_proc_free(&without);
}

/* The 16-byte block of a trivial program takes two pages: the slot's and its
 * generation table's (4096 bytes, the block's last page; it was 4112, over
 * two: test segment::a_small_blocks_table_lies_in_its_last_page). Its
 * segment's header takes three (the pool writes all 63 descriptors when it
 * maps the segment: README "Start-up footprint"). */
Test(footprint, a_16_byte_block_touches_two_pages) {
  tu_proc_t r;
  run_child(true, NULL, &r);
  int header = -2, block = -2;
  cr_assert_eq(sscanf(r.out, "pages: header %d block %d", &header, &block), 2, "footprint_prog:\n%.200s", r.out);
  cr_assert_leq(block, 2, "the 16-byte block: %d of its 4 KiB pages resident (bound 2; header %d)", block, header);
  cr_assert_geq(block, 1); /* (mapped, and a slot written) */
  cr_assert_geq(header, 1);
  tu_proc_free(&r);
}
#endif
