/* test_outside_sweep.c: what a systems programmer's outside-in sweep found
 * (helper R6): each test is a correct program's behaviour that slotmalloc got
 * wrong, reproduced in tests/sweep_prog.c or in this process. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "slotmalloc.h"
#include "testutil.h"

/* The whole of a small file (NULL if it cannot be read); malloc'd. */
static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  if (buf) n = fread(buf, 1, cap - 1, f);
  fclose(f);
  if (buf) buf[n] = 0;
  return buf;
}

/* Runs sweep_prog with the given scenario and options (no other SLOTMALLOC_
 * variable); asserts that it ended well. */
static void run_sweep(const char *scenario, const char *const *options, tu_proc_t *r) {
  char *argv[] = {SM_SWEEP_PROG, (char *)scenario, NULL};
  cr_assert_eq(tu_run(argv, tu_env_without_options(options), NULL, NULL, 60, r), 0);
  cr_assert(!r->timed_out && WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0,
            "sweep_prog %s: %s\nstdout: %s\nstderr: %s", scenario, tu_wait_status_str(r->status), r->out, r->err);
  cr_assert(strstr(r->out, "sweep_prog: ok"), "stdout: %s", r->out);
}

/* A program that sets its process title (postgres, redis, nginx, sendmail,
 * sshd) writes it over the environment strings of the initial stack, after
 * its first malloc read the options from them. The path options must be the
 * ones given: before, SLOTMALLOC_STATS_FILE read as "" at exit ("cannot open
 * SLOTMALLOC_STATS_FILE=", the statistics on stderr), and a title of another
 * length would have named some other file; SLOTMALLOC_PROF_FILE the same. */
Test(outside_sweep, path_options_survive_a_process_title) {
  char dir[] = "/tmp/sm_sweep_XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  char stats_opt[128], prof_opt[128], stats_path[128], prof_path[128];
  snprintf(stats_opt, sizeof stats_opt, "SLOTMALLOC_STATS_FILE=%s/stats.txt", dir);
  snprintf(prof_opt, sizeof prof_opt, "SLOTMALLOC_PROF_FILE=%s/heap.prof", dir);
  snprintf(stats_path, sizeof stats_path, "%s/stats.txt", dir);
  snprintf(prof_path, sizeof prof_path, "%s/heap.prof", dir);
  const char *options[] = {"SLOTMALLOC_STATS=text", stats_opt, "SLOTMALLOC_PROF_SAMPLE=1", prof_opt, NULL};
  tu_proc_t r;
  run_sweep("title", options, &r);
  cr_assert_null(strstr(r.err, "cannot open"), "stderr: %s", r.err);
  char *stats = slurp(stats_path), *prof = slurp(prof_path);
  cr_assert(stats && strstr(stats, "slotmalloc stats"), "no statistics in %s; stderr: %s", stats_path, r.err);
  cr_assert(prof && !strncmp(prof, "heap profile: ", 14), "no heap profile in %s; stderr: %s", prof_path, r.err);
  free(stats);
  free(prof);
  tu_proc_free(&r);
  unlink(stats_path);
  unlink(prof_path);
  rmdir(dir);
}

/* A library constructor that registers a pthread_atfork child handler before
 * the process's first malloc: glibc runs child handlers in the order of
 * registration, so it ran before the allocator's repair, and when it
 * allocated it waited for ever on a lock that a thread the child does not
 * have held at the fork (sweep_prog atfork: a child hung within the first
 * 0-250 of 300 forks). glibc's malloc is repaired inside fork, before any
 * handler. */
Test(outside_sweep, fork_child_handler_registered_before_the_first_malloc, .timeout = 120) {
  tu_proc_t r;
  run_sweep("atfork", NULL, &r);
  tu_proc_free(&r);
}

/* The reports at exit write to stderr (or SLOTMALLOC_STATS_FILE): when that is
 * a pipe whose reader has gone (`SLOTMALLOC_STATS=1 prog 2>&1 | head -1`), the
 * write raised SIGPIPE and the program ended with it (status 141) instead of
 * its own exit status. Each report option, stderr a pipe with no reader, and
 * SIGPIPE at its default action in the child. */
Test(outside_sweep, reports_at_exit_into_a_closed_pipe_keep_the_exit_status) {
  const char *cases[][3] = {{"SLOTMALLOC_STATS=text", NULL, NULL},
                            {"SLOTMALLOC_STATS=json", NULL, NULL},
                            {"SLOTMALLOC_LEAKS=1", NULL, NULL},
                            {"SLOTMALLOC_VERBOSE=2", NULL, NULL},
                            {"SLOTMALLOC_STATS=text", "SLOTMALLOC_LEAKS=1", NULL}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    close(fds[0]); /* no reader: every write is EPIPE and raises SIGPIPE */
    char *argv[] = {SM_SWEEP_PROG, "noop", NULL};
    char **env = tu_env_without_options(cases[c]);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
      int null = open("/dev/null", O_RDWR);
      dup2(null, 0);
      dup2(null, 1);
      dup2(fds[1], 2);
      signal(SIGPIPE, SIG_DFL);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, NULL);
      execve(argv[0], argv, env);
      _exit(127);
    }
    close(fds[1]);
    int st = 0;
    cr_assert_eq(tu_waitpid(pid, &st), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s %s: %s", cases[c][0], cases[c][1] ? cases[c][1] : "",
              tu_wait_status_str(st));
  }
}

/* The same with two threads forking at once: glibc does not serialize forks,
 * so one fork's parent handler may run while another thread is between its
 * prepare handler and its fork; that child must still be repaired once. */
Test(outside_sweep, two_threads_fork_at_once_with_an_early_child_handler, .timeout = 120) {
  tu_proc_t r;
  run_sweep("atfork2", NULL, &r);
  tu_proc_free(&r);
}
