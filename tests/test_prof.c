/* test_prof.c: the heap profiler (SLOTMALLOC_PROF_SAMPLE, SLOTMALLOC_PROF_FILE,
 * sm_prof_dump), the leak report (SLOTMALLOC_LEAKS) and the allocation site
 * in misuse reports. Each case runs prof_prog (tests/prof_prog.c) in a child
 * with its own environment:
 *   prof_prog         no link to slotmalloc, run with LD_PRELOAD
 *   prof_prog_fp      linked with libslotmalloc.so, frame pointers kept
 *   prof_prog_static  linked with libslotmalloc.a
 * The pprof cases read the profile with google-pprof (Debian's
 * google-perftools; tests/run.sh installs it) and skip only without it. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "slotmalloc.h"
#include "testutil.h"

static const char *const UNSET[] = {"LD_PRELOAD",         "SLOTMALLOC_PROF_SAMPLE",    "SLOTMALLOC_PROF_FILE",
                                    "SLOTMALLOC_LEAKS",   "SLOTMALLOC_STATS",          "SLOTMALLOC_STATS_FILE",
                                    "SLOTMALLOC_VERBOSE", "SLOTMALLOC_ABORT_ON_ERROR", NULL};

/* Runs prog with args and the extra variables in set (NULL-ended; preload:
 * LD_PRELOAD of the library too). */
static void run_prog(const char *prog, bool preload, const char *const *args, const char *const *set, tu_proc_t *r) {
  const char *env_set[16];
  int k = 0;
  if (preload) env_set[k++] = "LD_PRELOAD=" SM_SO_PATH;
  for (int i = 0; set && set[i]; i++) env_set[k++] = set[i];
  env_set[k] = NULL;
  char **env = tu_env_make(UNSET, env_set);
  char *argv[8];
  int n = 0;
  argv[n++] = (char *)prog;
  for (int i = 0; args[i]; i++) argv[n++] = (char *)args[i];
  argv[n] = NULL;
  cr_assert_eq(tu_run(argv, env, NULL, NULL, 120, r), 0, "could not run %s", prog);
  free(env);
}

static void assert_exit0(const tu_proc_t *r, const char *what) {
  cr_assert(!r->timed_out && WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0, "%s: %s\nstdout:\n%s\nstderr:\n%s",
            what, tu_status_str(r), r->out, r->err);
}

/* A fresh directory for a case's files. */
static void temp_dir(char *dir, size_t size) {
  snprintf(dir, size, "/tmp/sm_prof_XXXXXX");
  cr_assert_not_null(mkdtemp(dir), "mkdtemp failed");
}

static bool have_pprof(void) {
  static const char *const where[] = {"/usr/bin/google-pprof", "/usr/local/bin/google-pprof", NULL};
  for (int i = 0; where[i]; i++)
    if (access(where[i], X_OK) == 0) return true;
  return false;
}

/* google-pprof --text prog file: its stdout. */
static char *pprof_text(const char *prog, const char *file) {
  const char *pprof =
      access("/usr/bin/google-pprof", X_OK) == 0 ? "/usr/bin/google-pprof" : "/usr/local/bin/google-pprof";
  char *argv[] = {(char *)pprof, "--text", (char *)prog, (char *)file, NULL};
  tu_proc_t r;
  cr_assert_eq(tu_run(argv, NULL, NULL, NULL, 120, &r), 0);
  cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "google-pprof: %s\n%s", tu_status_str(&r), r.err);
  char *out = r.out;
  r.out = NULL;
  tu_proc_free(&r);
  return out;
}

/* The line of pprof's text output whose function column is fn, or NULL. */
static const char *pprof_line(const char *text, const char *fn) {
  size_t len = strlen(fn);
  for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
    const char *end = strchr(line, '\n');
    if (!end) end = line + strlen(line);
    if ((size_t)(end - line) >= len && !memcmp(end - len, fn, len) && (end - len == line || end[-len - 1] == ' '))
      return line;
  }
  return NULL;
}

/* The profile of prof_prog: leak_a (1.2 MB live) and leak_b (100 KB live)
 * both listed by google-pprof, leak_a first. */
static void check_pprof(const char *prog, const char *file) {
  struct stat st;
  cr_assert_eq(stat(file, &st), 0, "no profile written at %s", file);
  char *text = pprof_text(prog, file);
  const char *a = pprof_line(text, "leak_a"), *b = pprof_line(text, "leak_b");
  cr_assert_not_null(a, "google-pprof does not list leak_a:\n%s", text);
  cr_assert_not_null(b, "google-pprof does not list leak_b:\n%s", text);
  cr_assert_lt(a, b, "leak_a (the larger) is not listed before leak_b:\n%s", text);
  free(text);
}

Test(prof, pprof_reads_the_profile_at_exit_preloaded) {
  if (!have_pprof()) cr_skip_test("google-pprof is not installed (apt-get install google-perftools)");
  char dir[64], var[128], file[128];
  temp_dir(dir, sizeof dir);
  snprintf(var, sizeof var, "SLOTMALLOC_PROF_FILE=%s/heap.%%p", dir);
  const char *set[] = {"SLOTMALLOC_PROF_SAMPLE=1", var, NULL};
  const char *args[] = {"leaks", NULL};
  tu_proc_t r;
  run_prog(SM_PROF_PROG, true, args, set, &r);
  assert_exit0(&r, "prof_prog leaks");
  int pid = 0;
  cr_assert_eq(sscanf(r.out, "PID %d", &pid), 1, "%s", r.out);
  snprintf(file, sizeof file, "%s/heap.%d", dir, pid); /* %p became the pid */
  check_pprof(SM_PROF_PROG, file);
  tu_proc_free(&r);
}

/* Sampled (1 in 4096 bytes: leak_b's 100 objects of 1000 bytes give about 22
 * samples), written on demand by sm_prof_dump, frame pointers kept. */
Test(prof, pprof_reads_sm_prof_dump_linked) {
  if (!have_pprof()) cr_skip_test("google-pprof is not installed (apt-get install google-perftools)");
  char dir[64], file[128];
  temp_dir(dir, sizeof dir);
  snprintf(file, sizeof file, "%s/dump.heap", dir);
  const char *set[] = {"SLOTMALLOC_PROF_SAMPLE=4096", NULL};
  const char *args[] = {"leaks", file, NULL};
  tu_proc_t r;
  run_prog(SM_PROF_PROG_FP, false, args, set, &r);
  assert_exit0(&r, "prof_prog_fp leaks");
  cr_assert(strstr(r.out, "DUMP 0"), "sm_prof_dump failed: %s", r.out);
  check_pprof(SM_PROF_PROG_FP, file);
  tu_proc_free(&r);
}

Test(prof, pprof_reads_the_profile_static) {
  if (!have_pprof()) cr_skip_test("google-pprof is not installed (apt-get install google-perftools)");
  char dir[64], var[128], file[128];
  temp_dir(dir, sizeof dir);
  snprintf(file, sizeof file, "%s/static.heap", dir);
  snprintf(var, sizeof var, "SLOTMALLOC_PROF_FILE=%s", file);
  const char *set[] = {"SLOTMALLOC_PROF_SAMPLE=1", var, NULL};
  const char *args[] = {"leaks", NULL};
  tu_proc_t r;
  run_prog(SM_PROF_PROG_STATIC, false, args, set, &r);
  assert_exit0(&r, "prof_prog_static leaks");
  check_pprof(SM_PROF_PROG_STATIC, file);
  tu_proc_free(&r);
}

/* The profile's own text: the heap_v2 header with the rate, leak_a's line
 * exact with every allocation sampled (300 live of 4000 bytes; 600 sampled,
 * the 300 freed at once included), and the memory map. */
Test(prof, profile_format) {
  char dir[64], file[128];
  temp_dir(dir, sizeof dir);
  snprintf(file, sizeof file, "%s/dump.heap", dir);
  const char *set[] = {"SLOTMALLOC_PROF_SAMPLE=1", NULL};
  const char *args[] = {"leaks", file, NULL};
  tu_proc_t r;
  run_prog(SM_PROF_PROG, true, args, set, &r);
  assert_exit0(&r, "prof_prog leaks");
  FILE *f = fopen(file, "r");
  cr_assert_not_null(f);
  char line[4096];
  cr_assert_not_null(fgets(line, sizeof line, f));
  cr_assert(!strncmp(line, "heap profile: ", 14) && strstr(line, "] @ heap_v2/1\n"), "header: %s", line);
  bool live_a = false, freed_a = false, maps = false;
  while (fgets(line, sizeof line, f)) {
    if (!strncmp(line, "300: 1200000 [300: 1200000] @ 0x", 32)) live_a = true;
    if (!strncmp(line, "0: 0 [300: 1200000] @ 0x", 24)) freed_a = true;
    if (!strcmp(line, "MAPPED_LIBRARIES:\n")) maps = true;
  }
  fclose(f);
  cr_assert(live_a, "no line for leak_a's 300 live objects");
  cr_assert(freed_a, "no line for leak_a's 300 objects freed at once");
  cr_assert(maps, "no MAPPED_LIBRARIES section");
  tu_proc_free(&r);
}

Test(prof, dump_without_profiling_is_einval) {
  cr_assert_eq(sm_prof_dump(NULL), EINVAL);
  if (getenv("SLOTMALLOC_PROF_SAMPLE")) return;
  cr_assert_eq(sm_prof_dump("/tmp/sm_prof_never_written"), EINVAL);
  cr_assert_neq(access("/tmp/sm_prof_never_written", F_OK), 0);
}

/* A class line of the leak report: "class <size> B: <n> objects, ..." -> n. */
static long leak_class(const char *err, size_t slot) {
  char want[64];
  snprintf(want, sizeof want, "class %zu B: ", slot);
  const char *l = strstr(err, want);
  return l ? atol(l + strlen(want)) : -1;
}

/* The slot size (the class) of an allocation of n bytes: its usable size; in
 * the hardened build the usable size is the bytes asked and the slot holds
 * the canary and size record past them too: read off the statistics. */
static size_t slot_of(size_t n) {
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  void *p = sm_arena_malloc(a, n);
  cr_assert_not_null(p);
  sm_stats_t st;
  sm_arena_stats(a, &st);
#ifndef SM_HARDENED
  cr_assert_eq(st.bytes_live, sm_usable_size(p), "the statistics count %zu bytes, not the usable size %zu",
               st.bytes_live, sm_usable_size(p));
#endif
  tu_arena_drop(a);
  return st.bytes_live;
}

Test(prof, leak_report_by_size_class) {
  const char *set[] = {"SLOTMALLOC_LEAKS=1", NULL};
  const char *args[] = {"leaks", NULL};
  tu_proc_t r;
  run_prog(SM_PROF_PROG, true, args, set, &r);
  assert_exit0(&r, "prof_prog leaks");
  cr_assert(strstr(r.err, "slotmalloc: leak report (pid "), "no leak report:\n%s", r.err);
  size_t slot_a = slot_of(4000), slot_b = slot_of(1000);
  /* leak_a's 300 objects (and maybe stdio's buffer, if it is of that class) */
  long na = leak_class(r.err, slot_a), nb = leak_class(r.err, slot_b);
  cr_assert(na >= 300 && na <= 302, "class %zu: %ld objects\n%s", slot_a, na, r.err);
  cr_assert(nb >= 100 && nb <= 102, "class %zu: %ld objects\n%s", slot_b, nb, r.err);
  cr_assert_null(strstr(r.err, "by allocation site"), "sites without profiling:\n%s", r.err);
  tu_proc_free(&r);
}

Test(prof, leak_report_by_site) {
  const char *set[] = {"SLOTMALLOC_LEAKS=1", "SLOTMALLOC_PROF_SAMPLE=1", NULL};
  const char *args[] = {"leaks", NULL};
  tu_proc_t r;
  run_prog(SM_PROF_PROG, true, args, set, &r);
  assert_exit0(&r, "prof_prog leaks");
  const char *sites = strstr(r.err, "slotmalloc: by allocation site");
  cr_assert_not_null(sites, "no sites:\n%s", r.err);
  /* every allocation sampled: the figures are exact; dladdr names the functions */
  const char *a = strstr(sites, "1200000 bytes in 300 objects at 0x");
  const char *b = strstr(sites, "100000 bytes in 100 objects at 0x");
  cr_assert(a && b && a < b, "leak_a's and leak_b's lines, in that order:\n%s", r.err);
  const char *a_end = strchr(a, '\n'), *b_end = strchr(b, '\n');
  cr_assert(strstr(a, "(leak_a+0x") && strstr(a, "(leak_a+0x") < a_end, "leak_a not named:\n%s", r.err);
  cr_assert(strstr(b, "(leak_b+0x") && strstr(b, "(leak_b+0x") < b_end, "leak_b not named:\n%s", r.err);
  tu_proc_free(&r);
}

/* The leak report at exit while other threads still free and move large
 * objects: it counts them under their arenas' locks. Read from the segment
 * table, a large object's size was read from a header another thread could
 * unmap at that moment: 8 of 200 runs crashed (SIGSEGV). */
Test(prof, leak_report_while_threads_free_large_objects) {
  const char *set[] = {"SLOTMALLOC_LEAKS=1", "SLOTMALLOC_LARGE_CACHE_MB=0", NULL};
  const char *args[] = {"large_at_exit", NULL};
  for (int i = 0; i < 100; i++) {
    tu_proc_t r;
    run_prog(SM_PROF_PROG, true, args, set, &r);
    assert_exit0(&r, "prof_prog large_at_exit");
    cr_assert(strstr(r.err, "slotmalloc: leak report (pid "), "no leak report:\n%s", r.err);
    tu_proc_free(&r);
  }
}

/* Objects of threads that have exited (their blocks abandoned) stay in the
 * report, at their site. */
Test(prof, leak_report_threads) {
  const char *set[] = {"SLOTMALLOC_LEAKS=1", "SLOTMALLOC_PROF_SAMPLE=1", NULL};
  const char *args[] = {"threads", NULL};
  tu_proc_t r;
  run_prog(SM_PROF_PROG, true, args, set, &r);
  assert_exit0(&r, "prof_prog threads");
  const char *l = strstr(r.err, "800000 bytes in 400 objects at 0x");
  cr_assert(l && strstr(l, "(thread_leak+0x") && strstr(l, "(thread_leak+0x") < strchr(l, '\n'),
            "no line for thread_leak's 400 objects:\n%s", r.err);
  tu_proc_free(&r);
}

/* A fork child writes a profile of its own (%p), with what it inherited and
 * what it allocated; the parent's has only its own. */
Test(prof, fork_child_writes_its_own_profile) {
  char dir[64], var[128], file[128];
  temp_dir(dir, sizeof dir);
  snprintf(var, sizeof var, "SLOTMALLOC_PROF_FILE=%s/heap.%%p", dir);
  const char *set[] = {"SLOTMALLOC_PROF_SAMPLE=1", var, NULL};
  const char *args[] = {"fork", NULL};
  tu_proc_t r;
  run_prog(SM_PROF_PROG, true, args, set, &r);
  assert_exit0(&r, "prof_prog fork");
  int pid = 0, child = 0;
  cr_assert_eq(sscanf(r.out, "PID %d", &pid), 1, "%s", r.out);
  const char *c = strstr(r.out, "CHILD ");
  cr_assert(c && sscanf(c, "CHILD %d", &child) == 1, "%s", r.out);
  static const char *const b_line = "100: 100000 [100: 100000] @ 0x", *const a_line =
                                                                          "300: 1200000 [300: 1200000] @ 0x";
  for (int k = 0; k < 2; k++) {
    snprintf(file, sizeof file, "%s/heap.%d", dir, k ? child : pid);
    FILE *f = fopen(file, "r");
    cr_assert_not_null(f, "no profile %s", file);
    char line[4096];
    bool a = false, b = false;
    while (fgets(line, sizeof line, f)) {
      a |= !strncmp(line, a_line, strlen(a_line));
      b |= !strncmp(line, b_line, strlen(b_line));
    }
    fclose(f);
    cr_assert(a, "%s: leak_a's objects missing", file);
    cr_assert_eq(b, k == 1, "%s: leak_b's objects %s", file, b ? "in the parent's profile" : "missing");
  }
  tu_proc_free(&r);
}

/* Poisson sampling, 1 in 65536 bytes: 100,000 live objects of 256 bytes (25.6
 * MB) give about 390 samples; the estimate is within 20% (5 standard
 * deviations) of the truth. */
Test(prof, sampled_estimate_is_unbiased) {
  const char *set[] = {"SLOTMALLOC_LEAKS=1", "SLOTMALLOC_PROF_SAMPLE=65536", NULL};
  const char *args[] = {"many", NULL};
  tu_proc_t r;
  run_prog(SM_PROF_PROG_FP, false, args, set, &r);
  assert_exit0(&r, "prof_prog_fp many");
  const char *l = strstr(r.err, "(leak_many+0x");
  cr_assert_not_null(l, "no line for leak_many:\n%s", r.err);
  while (l > r.err && l[-1] != '\n') l--;
  unsigned long bytes = 0, objects = 0;
  cr_assert_eq(sscanf(l, "slotmalloc: %lu bytes in %lu objects", &bytes, &objects), 2, "%s", l);
  cr_assert(bytes > 25600000 * 0.8 && bytes < 25600000 * 1.2, "estimated %lu bytes of 25600000\n%s", bytes, r.err);
  cr_assert(objects > 100000 * 0.8 && objects < 100000 * 1.2, "estimated %lu objects of 100000\n%s", objects, r.err);
  tu_proc_free(&r);
}

/* A double free of a sampled object: the one report line names where it was
 * allocated; the first frame is in alloc_site. */
static void check_misuse_site(const char *prog, bool preload, const char *size) {
  const char *set[] = {"SLOTMALLOC_PROF_SAMPLE=1", NULL};
  const char *args[] = {"double_free", size, NULL};
  tu_proc_t r;
  run_prog(prog, preload, args, set, &r);
  cr_assert(!r.timed_out && WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT, "%s: %s\n%s", prog,
            tu_status_str(&r), r.err);
  void *addr = NULL, *site = NULL;
  const char *l = strstr(r.out, "ADDR ");
  cr_assert(l && sscanf(l, "ADDR %p SITE %p", &addr, &site) == 2, "%s", r.out);
  char want[128];
  snprintf(want, sizeof want, "slotmalloc: double free of %p (size ", addr);
  cr_assert(!strncmp(r.err, want, strlen(want)), "stderr: %s\nwant: %s", r.err, want);
  cr_assert_eq(strchr(r.err, '\n'), r.err + strlen(r.err) - 1, "not one line: %s", r.err);
  const char *at = strstr(r.err, ") (allocated at 0x");
  cr_assert_not_null(at, "no allocation site: %s", r.err);
  unsigned long frame = strtoul(at + strlen(") (allocated at "), NULL, 16);
  cr_assert(frame > (uintptr_t)site && frame - (uintptr_t)site < 256,
            "first frame %#lx is not in alloc_site (%p): %s", frame, site, r.err);
  tu_proc_free(&r);
}

Test(prof, double_free_names_the_site_small) { check_misuse_site(SM_PROF_PROG, true, "48"); }
Test(prof, double_free_names_the_site_medium) { check_misuse_site(SM_PROF_PROG_FP, false, "200000"); }
Test(prof, double_free_names_the_site_static) { check_misuse_site(SM_PROF_PROG_STATIC, false, "1000"); }

/* Without profiling the report is as before: no site. */
Test(prof, double_free_without_profiling_has_no_site) {
  const char *args[] = {"double_free", "48", NULL};
  tu_proc_t r;
  run_prog(SM_PROF_PROG, true, args, NULL, &r);
  cr_assert(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT, "%s", tu_status_str(&r));
  cr_assert(strstr(r.err, "slotmalloc: double free of 0x"), "%s", r.err);
  cr_assert_null(strstr(r.err, "allocated at"), "%s", r.err);
  tu_proc_free(&r);
}
