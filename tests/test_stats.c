/* test_stats.c: the statistics (alloc/stats.c) and glibc's introspection calls
 * (preload/compat.c).
 *
 * At exit: the child program stats_prog (SM_STATS_PROG) makes a known pattern
 * (37 objects of 7000 bytes in slots of 7168, 1000 of 100 bytes in slots of
 * 112, 3 large objects of 1 MiB) and exits with SLOTMALLOC_STATS=1 or json;
 * the report must name the program and its pid (which it prints on stdout),
 * carry the pattern's per-class counts, go to SLOTMALLOC_STATS_FILE (%p: the
 * pid) when set, and still appear when the program closed fd 2.
 * In process: sm_stats_text / sm_stats_json of an arena with a known content,
 * sm_arena_stats' appended fields, mallinfo2 / mallinfo moving with
 * allocations, malloc_info's XML, malloc_stats, mallopt. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

#ifndef SM_STATS_PROG
#error "SM_STATS_PROG must name the stats_prog executable"
#endif

#define RUN_TIMEOUT 60.0

/* ---- the child ---------------------------------------------------------------- */

/* Runs stats_prog <mode> with set; checks it exited 0; returns its pid. */
static long run_prog(const char *mode, const char *const *set, tu_proc_t *r) {
  char *argv[] = {(char *)SM_STATS_PROG, (char *)mode, NULL};
  char **env = tu_env_without_options(set);
  cr_assert_eq(tu_run(argv, env, NULL, NULL, RUN_TIMEOUT, r), 0);
  free(env);
  cr_assert(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0, "stats_prog %s: %s; stderr:\n%s", mode,
            tu_status_str(r), r->err);
  long pid = 0;
  cr_assert_eq(sscanf(r->out, "pid %ld", &pid), 1, "no pid on stdout: %s", r->out);
  return pid;
}

/* The per-class line of the text report for slot size `slot`: its live
 * objects, live bytes, slots and blocks; false if there is no such line. */
static bool class_line(const char *text, unsigned slot, size_t *live, size_t *bytes, size_t *slots, size_t *blocks) {
  for (const char *l = text; l && *l;) {
    unsigned cls, size;
    double used;
    if (sscanf(l, " %u %u %zu %zu %zu %zu %lf%%", &cls, &size, live, bytes, slots, blocks, &used) == 7 &&
        size == slot)
      return true;
    l = strchr(l, '\n');
    if (l) l++;
  }
  return false;
}

/* The text report of the pattern, from the header to "all freed". */
static void check_text_report(const char *text, long pid, bool all_freed) {
  char head[128];
  snprintf(head, sizeof head, "slotmalloc stats (process): stats_prog, pid %ld, ", pid);
  cr_expect_not_null(strstr(text, head), "no header \"%s\" in:\n%s", head, text);
  cr_expect_not_null(strstr(text, " s since start-up\n"), "no elapsed time in:\n%s", text);
  cr_expect_not_null(strstr(text, "class slot size live objects"), "no class table in:\n%s", text);
  size_t live, bytes, slots, blocks;
  if (!all_freed) {
    cr_assert(class_line(text, 7168, &live, &bytes, &slots, &blocks), "no line for slot size 7168:\n%s", text);
    cr_expect_eq(live, 37, "slot size 7168: %zu live, expected 37", live);
    cr_expect_eq(bytes, 37 * 7168, "slot size 7168: %zu bytes", bytes);
    cr_expect_geq(slots, 37);
    cr_expect_geq(blocks, 1);
    cr_assert(class_line(text, 112, &live, &bytes, &slots, &blocks), "no line for slot size 112:\n%s", text);
    cr_expect_geq(live, 1000, "slot size 112: %zu live, expected at least 1000", live);
    cr_expect_eq(bytes, live * 112);
    cr_expect_geq(blocks, 2, "1000 slots of 112 bytes need 2 blocks of 64 KiB");
    size_t large = 0, large_bytes = 0;
    const char *l = strstr(text, "  large objects:  ");
    cr_assert_not_null(l, "no large objects line:\n%s", text);
    cr_expect_eq(sscanf(l, "  large objects: %zu live, %zu bytes", &large, &large_bytes), 2);
    cr_expect_eq(large, 3);
    cr_expect_geq(large_bytes, (size_t)3 << 20);
  } else {
    /* the pattern is gone; a sanitizer's runtime may keep an object of its own */
    if (class_line(text, 7168, &live, &bytes, &slots, &blocks)) cr_expect_eq(live, 0, "7168: %zu live", live);
    cr_expect_not_null(strstr(text, "  large objects:  0 live, 0 bytes\n"), "large objects left:\n%s", text);
  }
  /* the last line agrees with the totals */
  size_t objects = SIZE_MAX, total = SIZE_MAX;
  const char *l = strstr(text, "  live in all:    ");
  cr_assert_not_null(l, "no 'live in all' line:\n%s", text);
  cr_assert_eq(sscanf(l, "  live in all: %zu objects, %zu bytes", &objects, &total), 2);
  char last[128];
  if (objects)
    snprintf(last, sizeof last, "  all freed:      no, %zu objects (%zu bytes) still live\n", objects, total);
  else snprintf(last, sizeof last, "  all freed:      yes\n");
  cr_expect_not_null(strstr(text, last), "no line '%s' in:\n%s", last, text);
  if (all_freed) cr_expect_lt(objects, 1040, "%zu objects live after everything was freed", objects);
  cr_expect_not_null(strstr(text, "  memory:         committed "), "no memory line:\n%s", text);
  cr_expect_not_null(strstr(text, "resident "), "no RSS in:\n%s", text);
  cr_expect_not_null(strstr(text, "  events:         "), "no events line:\n%s", text);
}

/* A number after "key": in a JSON text; SIZE_MAX if missing. */
static size_t json_num(const char *json, const char *key) {
  char k[64];
  snprintf(k, sizeof k, "\"%s\":", key);
  const char *p = strstr(json, k);
  return p ? strtoull(p + strlen(k), NULL, 10) : SIZE_MAX;
}

Test(stats_at_exit, text) {
  const char *set[] = {"SLOTMALLOC_STATS=1", NULL};
  tu_proc_t r;
  long pid = run_prog("pattern", set, &r);
  check_text_report(r.err, pid, false);
  tu_proc_free(&r);
}

Test(stats_at_exit, all_freed) {
  const char *set[] = {"SLOTMALLOC_STATS=1", NULL};
  tu_proc_t r;
  long pid = run_prog("freeall", set, &r);
  check_text_report(r.err, pid, true);
  tu_proc_free(&r);
}

Test(stats_at_exit, json) {
  const char *set[] = {"SLOTMALLOC_STATS=json", NULL};
  tu_proc_t r;
  long pid = run_prog("pattern", set, &r);
  const char *j = strchr(r.err, '{');
  cr_assert_not_null(j, "no JSON:\n%s", r.err);
  cr_expect_not_null(strstr(j, "\"scope\":\"process\",\"program\":\"stats_prog\""), "%s", j);
  cr_expect_eq(json_num(j, "pid"), (size_t)pid);
  cr_expect_eq(json_num(j, "large_objects"), 3);
  cr_expect_geq(json_num(j, "large_bytes"), (size_t)3 << 20);
  cr_expect_neq(json_num(j, "elapsed_ms"), SIZE_MAX);
  cr_expect_gt(json_num(j, "rss"), 0);
  cr_expect_gt(json_num(j, "bytes_committed"), 0);
  cr_expect_geq(json_num(j, "bytes_peak"), json_num(j, "bytes_committed"));
  cr_expect_geq(json_num(j, "segments_mapped"), 1);
  cr_expect_geq(json_num(j, "slow_calls"), 1);
  cr_expect_eq(json_num(j, "large_mapped"), 3);
  cr_expect_not_null(strstr(j, "{\"class\":53,\"slot_size\":7168,\"objects_live\":37,\"bytes_live\":265216,"),
                     "no class entry for 7168 with 37 live:\n%s", j);
  cr_expect_not_null(strstr(j, "\"all_freed\":false}"), "%s", j);
  size_t len = strlen(j);
  while (len && (j[len - 1] == '\n' || j[len - 1] == ' ')) len--;
  cr_expect_eq(j[len - 1], '}', "JSON does not end with '}'");
  cr_expect_eq(strstr(r.err, "slotmalloc stats (process)"), NULL, "text report printed with json");
  tu_proc_free(&r);
}

/* sort and ls close fd 2 before their exit handlers run: the report still
 * comes, on the stderr the program started with. */
Test(stats_at_exit, fd2_closed) {
  const char *set[] = {"SLOTMALLOC_STATS=1", NULL};
  tu_proc_t r;
  long pid = run_prog("closefd2", set, &r);
  check_text_report(r.err, pid, false);
  tu_proc_free(&r);
}

/* A program that closed fd 2 and reused the descriptor slotmalloc kept for
 * its own file: the report does not go into that file. */
Test(stats_at_exit, kept_fd_reused) {
  char path[] = "/tmp/sm_clobber_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  close(fd);
  const char *set[] = {"SLOTMALLOC_STATS=1", NULL};
  char *argv[] = {(char *)SM_STATS_PROG, "clobber", path, NULL};
  char **env = tu_env_without_options(set);
  tu_proc_t r;
  cr_assert_eq(tu_run(argv, env, NULL, NULL, RUN_TIMEOUT, &r), 0);
  free(env);
  cr_expect(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "%s", tu_status_str(&r));
  static char text[1 << 16];
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f);
  size_t n = fread(text, 1, sizeof text - 1, f);
  text[n] = 0;
  fclose(f);
  unlink(path);
  cr_expect_null(strstr(text, "slotmalloc"), "the report went into the program's file:\n%s", text);
  tu_proc_free(&r);
}

/* SLOTMALLOC_STATS_FILE with %p: the report goes to the file named with the
 * pid, nothing to stderr; JSON likewise. */
Test(stats_at_exit, stats_file) {
  char dir[] = "/tmp/sm_stats_XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  for (int json = 0; json < 2; json++) {
    char var[128];
    snprintf(var, sizeof var, "SLOTMALLOC_STATS_FILE=%s/st.%%p.%s", dir, json ? "json" : "txt");
    const char *set[] = {json ? "SLOTMALLOC_STATS=json" : "SLOTMALLOC_STATS=1", var, NULL};
    tu_proc_t r;
    long pid = run_prog("pattern", set, &r);
    cr_expect_null(strstr(r.err, "slotmalloc"), "printed on stderr with a stats file:\n%s", r.err);
    char path[128];
    snprintf(path, sizeof path, "%s/st.%ld.%s", dir, pid, json ? "json" : "txt");
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no file %s", path);
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    unlink(path);
    if (json) {
      cr_expect_eq(json_num(text, "pid"), (size_t)pid, "%s", text);
      cr_expect_eq(json_num(text, "large_objects"), 3, "%s", text);
    } else {
      check_text_report(text, pid, false);
    }
    tu_proc_free(&r);
  }
  rmdir(dir);
}

/* A stats file that cannot be opened: one line says so, the report goes to stderr. */
Test(stats_at_exit, stats_file_unwritable) {
  const char *set[] = {"SLOTMALLOC_STATS=1", "SLOTMALLOC_STATS_FILE=/nonexistent-dir/x.%p", NULL};
  tu_proc_t r;
  long pid = run_prog("pattern", set, &r);
  cr_expect_not_null(strstr(r.err, "slotmalloc: cannot open SLOTMALLOC_STATS_FILE=/nonexistent-dir/x.%p"), "%s",
                     r.err);
  check_text_report(r.err, pid, false);
  tu_proc_free(&r);
}

/* The event counts: frees by another thread are collected and counted;
 * malloc_trim after freeing everything purges blocks. */
Test(stats_at_exit, events) {
  const char *set[] = {"SLOTMALLOC_STATS=json", NULL};
  tu_proc_t r;
  run_prog("remote", set, &r);
  cr_expect_geq(json_num(r.err, "remote_frees"), 1, "no remote frees counted:\n%s", r.err);
  cr_expect_geq(json_num(r.err, "slow_calls"), 1);
  tu_proc_free(&r);
  const char *set2[] = {"SLOTMALLOC_STATS=json", "SLOTMALLOC_PURGE_DELAY_MS=0", NULL};
  run_prog("purge", set2, &r);
  cr_expect_geq(json_num(r.err, "blocks_purged"), 1, "no blocks purged:\n%s", r.err);
  cr_expect_eq(json_num(r.err, "large_objects"), 0, "%s", r.err);
  cr_expect_not_null(strstr(r.err, json_num(r.err, "objects_live") ? "\"all_freed\":false}" : "\"all_freed\":true}"),
                     "all_freed does not agree with objects_live:\n%s", r.err);
  tu_proc_free(&r);
}

/* Without SLOTMALLOC_STATS, nothing at exit. */
Test(stats_at_exit, off_by_default) {
  tu_proc_t r;
  run_prog("pattern", NULL, &r);
  cr_expect_eq(r.err_len, 0, "stderr not empty:\n%s", r.err);
  tu_proc_free(&r);
}

/* ---- in process ------------------------------------------------------------------- */

/* An arena's text and JSON carry the same per-class content. */
Test(stats, arena_text_and_json_agree) {
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  for (int i = 0; i < 10; i++) cr_assert_not_null(sm_arena_malloc(a, 7000));
  for (int i = 0; i < 5; i++) cr_assert_not_null(sm_arena_malloc(a, 1 << 20));
  static char text[1 << 16], json[1 << 16];
  size_t n = sm_stats_text(a, text, sizeof text);
  cr_assert(n > 0 && n < sizeof text);
  cr_expect_not_null(strstr(text, "slotmalloc stats (arena)"), "%s", text);
  size_t live, bytes, slots, blocks;
  cr_assert(class_line(text, 7168, &live, &bytes, &slots, &blocks), "no line for 7168:\n%s", text);
  cr_expect_eq(live, 10);
  cr_expect_eq(bytes, 10 * 7168);
  cr_expect_not_null(strstr(text, "  large objects:  5 live, "), "%s", text);
  n = sm_stats_json(a, json, sizeof json);
  cr_assert(n > 0 && n < sizeof json);
  char want[160];
  snprintf(want, sizeof want, "\"slot_size\":7168,\"objects_live\":10,\"bytes_live\":%d,\"slots\":%zu,\"blocks\":%zu",
           10 * 7168, slots, blocks);
  cr_expect_not_null(strstr(json, want), "JSON lacks %s:\n%s", want, json);
  cr_expect_eq(json_num(json, "large_objects"), 5);
  sm_stats_t st;
  sm_arena_stats(a, &st);
  cr_expect_eq(st.objects_live, 15);
  cr_expect_eq(st.large_objects, 5);
  cr_expect_geq(st.large_bytes, (size_t)5 << 20);
  cr_expect_geq(st.slots, 10);
  cr_expect_eq(st.bytes_live, 10 * 7168 + st.large_bytes);
  tu_arena_drop(a);
}

/* The process-wide fields appended to sm_stats_t. */
Test(stats, process_fields) {
  void *p = malloc(1 << 20);
  cr_assert_not_null(p);
  sm_stats_t st;
  sm_arena_stats(NULL, &st);
  cr_expect_gt(st.rss, 0);
  cr_expect_geq(st.segments_mapped, 1);
  cr_expect_geq(st.large_mapped + (st.large_objects ? 0 : 1), 1);
  cr_expect_geq(st.slow_calls, 1);
  cr_expect_geq(st.bytes_peak, st.bytes_committed);
  cr_expect_geq(st.slots, st.objects_live - st.large_objects);
  free(p);
}

/* mallinfo2's figures move with what is allocated and freed. */
Test(compat, mallinfo2_moves) {
  enum { N = 300 };
  static void *objs[N];
  struct mallinfo2 before = mallinfo2();
  for (int i = 0; i < N; i++) objs[i] = malloc(1000);
  void *big = malloc((size_t)8 << 20);
  cr_assert_not_null(big);
  struct mallinfo2 mid = mallinfo2();
  cr_expect_geq(mid.uordblks, before.uordblks + N * 1000, "uordblks %zu -> %zu", before.uordblks, mid.uordblks);
  cr_expect_geq(mid.hblkhd, before.hblkhd + ((size_t)8 << 20), "hblkhd %zu -> %zu", before.hblkhd, mid.hblkhd);
  cr_expect_eq(mid.hblks, before.hblks + 1);
  cr_expect_geq(mid.arena, mid.uordblks);
  cr_expect_eq(mid.fordblks, mid.arena - mid.uordblks);
  sm_stats_t st;
  sm_arena_stats(NULL, &st);
  cr_expect_eq(mid.arena + mid.hblkhd >= st.bytes_committed, 1, "arena + hblkhd below committed");
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  struct mallinfo old = mallinfo();
#pragma GCC diagnostic pop
  cr_expect_eq((size_t)old.hblks, mid.hblks);
  cr_expect_eq((size_t)old.hblkhd, mid.hblkhd);
  for (int i = 0; i < N; i++) free(objs[i]);
  free(big);
  struct mallinfo2 after = mallinfo2();
  cr_expect_eq(after.hblks, before.hblks);
  cr_expect_leq(after.uordblks, mid.uordblks - N * 1000);
}

Test(compat, malloc_info_xml) {
  void *big = malloc((size_t)2 << 20);
  char *xml = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&xml, &len);
  cr_assert_not_null(f);
  cr_expect_eq(malloc_info(0, f), 0);
  fclose(f);
  cr_assert_not_null(xml);
  static const char head[] = "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n";
  cr_expect_eq(strncmp(xml, head, sizeof head - 1), 0, "%.200s", xml);
  cr_expect_not_null(strstr(xml, "<size from=\""), "%s", xml);
  cr_expect_not_null(strstr(xml, "<total type=\"mmap\" count=\""), "%s", xml);
  cr_expect_not_null(strstr(xml, "<system type=\"current\" size=\""), "%s", xml);
  cr_expect_not_null(strstr(xml, "</heap>\n"), "%s", xml);
  cr_expect(len > 10 && strcmp(xml + len - 10, "</malloc>\n") == 0, "%s", xml);
  free(xml);
  free(big);
  errno = 0;
  cr_expect_eq(malloc_info(1, stderr), -1);
  cr_expect_eq(errno, EINVAL);
}

/* malloc_stats writes glibc's lines and slotmalloc's report to fd 2. */
Test(compat, malloc_stats_to_stderr) {
  char path[] = "/tmp/sm_mstats_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  fflush(stderr);
  int saved = dup(STDERR_FILENO);
  dup2(fd, STDERR_FILENO);
  malloc_stats();
  dup2(saved, STDERR_FILENO);
  close(saved);
  static char text[1 << 16];
  ssize_t n = pread(fd, text, sizeof text - 1, 0);
  close(fd);
  unlink(path);
  cr_assert_gt(n, 0);
  text[n] = 0;
  static const char head[] = "Arena 0:\nsystem bytes     = ";
  cr_expect_eq(strncmp(text, head, sizeof head - 1), 0, "%.200s", text);
  cr_expect_not_null(strstr(text, "Total (incl. mmap):\n"), "%s", text);
  cr_expect_not_null(strstr(text, "slotmalloc stats (process): "), "%s", text);
  cr_expect_not_null(strstr(text, "  all freed:      "), "%s", text);
}

Test(compat, mallopt_accepts_glibc_params) {
  static const int known[] = {M_MXFAST,       M_TRIM_THRESHOLD, M_TOP_PAD,    M_MMAP_THRESHOLD, M_MMAP_MAX,
                              M_CHECK_ACTION, M_PERTURB,        M_ARENA_TEST, M_ARENA_MAX};
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    cr_expect_eq(mallopt(known[i], 1), 1, "mallopt(%d) did not return 1", known[i]);
  cr_expect_eq(mallopt(12345, 1), 0);
  cr_expect_eq(mallopt(-100, 1), 0);
  /* the calls change nothing: allocation goes on */
  void *p = malloc(10);
  cr_expect_not_null(p);
  free(p);
}
