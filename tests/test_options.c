/* test_options.c: the SLOTMALLOC_* options (alloc/options.c), each value kind
 * and each warning.
 *
 * Every case runs the child program stats_prog (SM_STATS_PROG, see
 * tests/CMakeLists.txt) with one variable set, SLOTMALLOC_VERBOSE=1 (which
 * prints the options in force as one line "slotmalloc: options NAME=value
 * ...") and no other SLOTMALLOC_* variable, then checks on its stderr:
 *   - the warning line expected for a bad value (naming the variable, the
 *     value and the default used), exactly once, and no other warning;
 *   - the value in force (the default after a bad value).
 * Options are read at start-up, so each case needs a process of its own. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#ifndef SM_STATS_PROG
#error "SM_STATS_PROG must name the stats_prog executable"
#endif

#define RUN_TIMEOUT 60.0

/* Runs stats_prog <mode> with the variables of set (NULL-ended). */
static void run_prog(const char *mode, const char *const *set, tu_proc_t *r) {
  char *argv[] = {(char *)SM_STATS_PROG, (char *)mode, NULL};
  char **env = tu_env_without_options(set);
  cr_assert_eq(tu_run(argv, env, NULL, NULL, RUN_TIMEOUT, r), 0, "could not run %s", SM_STATS_PROG);
  free(env);
  cr_assert(!r->timed_out, "stats_prog %s timed out", mode);
}

/* Lines of text that start with prefix. */
static int count_lines(const char *text, const char *prefix) {
  int n = 0;
  size_t len = strlen(prefix);
  for (const char *l = text; l && *l;) {
    if (strncmp(l, prefix, len) == 0) n++;
    l = strchr(l, '\n');
    if (l) l++;
  }
  return n;
}

/* The value of NAME in the "slotmalloc: options" line of err, into out; false
 * if there is no such line or no such name in it. */
static bool in_force(const char *err, const char *name, char *out, size_t size) {
  const char *line = strstr(err, "slotmalloc: options ");
  if (!line) return false;
  const char *end = strchr(line, '\n');
  char key[64];
  snprintf(key, sizeof key, " %s=", name);
  const char *k = strstr(line, key);
  if (!k || (end && k > end)) return false;
  k += strlen(key);
  size_t n = 0;
  while (k[n] && k[n] != ' ' && k[n] != '\n' && n + 1 < size) n++;
  memcpy(out, k, n);
  out[n] = 0;
  return true;
}

typedef struct {
  const char *name;    /* after SLOTMALLOC_ */
  const char *value;   /* as set */
  const char *warning; /* the whole warning line expected (without "\n"), or NULL: none */
  const char *expect;  /* the value in force, or NULL: not checked */
} option_case_t;

/* Runs one case and checks it (failures are reported, the next case runs). */
static void check_case(const option_case_t *c) {
  char var[512];
  snprintf(var, sizeof var, "SLOTMALLOC_%s=%s", c->name, c->value);
  const char *set[] = {var, strcmp(c->name, "VERBOSE") ? "SLOTMALLOC_VERBOSE=1" : NULL, NULL};
  tu_proc_t r;
  run_prog("touch", set, &r);
  cr_expect(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "%s: %s; stderr:\n%s", var, tu_status_str(&r), r.err);
  int warnings = count_lines(r.err, "slotmalloc: SLOTMALLOC_");
  if (c->warning) {
    char line[600];
    snprintf(line, sizeof line, "%s\n", c->warning);
    cr_expect_not_null(strstr(r.err, line), "%s: expected the warning\n  %s\ngot stderr:\n%s", var, c->warning,
                       r.err);
    cr_expect_eq(warnings, 1, "%s: %d warning lines, expected 1:\n%s", var, warnings, r.err);
  } else {
    cr_expect_eq(warnings, 0, "%s: unexpected warning:\n%s", var, r.err);
  }
  if (c->expect) {
    char got[128];
    cr_expect(in_force(r.err, c->name, got, sizeof got), "%s: no %s in the options line:\n%s", var, c->name, r.err);
    cr_expect_str_eq(got, c->expect, "%s: %s=%s in force, expected %s", var, c->name, got, c->expect);
  }
  tu_proc_free(&r);
}

#define W(var, val, rest) "slotmalloc: SLOTMALLOC_" var "=" val " " rest

static void run_cases(const option_case_t *cases, size_t n) {
  for (size_t i = 0; i < n; i++) check_case(&cases[i]);
}
#define RUN(cases) run_cases(cases, sizeof cases / sizeof cases[0])

/* The safety option: every spelling of on and off, and garbage keeps it on. */
Test(options, abort_on_error) {
  static const option_case_t cases[] = {
      {"ABORT_ON_ERROR", "1", NULL, "1"},
      {"ABORT_ON_ERROR", "0", NULL, "0"},
      {"ABORT_ON_ERROR", "on", NULL, "1"},
      {"ABORT_ON_ERROR", "OFF", NULL, "0"},
      {"ABORT_ON_ERROR", "Yes", NULL, "1"},
      {"ABORT_ON_ERROR", "no", NULL, "0"},
      {"ABORT_ON_ERROR", "TRUE", NULL, "1"},
      {"ABORT_ON_ERROR", "false", NULL, "0"},
      {"ABORT_ON_ERROR", "", NULL, "1"}, /* empty: unset */
      {"ABORT_ON_ERROR", "abc",
       "slotmalloc: SLOTMALLOC_ABORT_ON_ERROR=abc is not a boolean (1/0, on/off, yes/no, true/false); using the "
       "default 1",
       "1"},
      {"ABORT_ON_ERROR", "2",
       "slotmalloc: SLOTMALLOC_ABORT_ON_ERROR=2 is not a boolean (1/0, on/off, yes/no, true/false); using the "
       "default 1",
       "1"},
      {"ABORT_ON_ERROR", "offf",
       "slotmalloc: SLOTMALLOC_ABORT_ON_ERROR=offf is not a boolean (1/0, on/off, yes/no, true/false); using the "
       "default 1",
       "1"},
  };
  RUN(cases);
}

/* What the safety option does, not only what it prints: garbage and "on" abort
 * at a double free, "off" reports and goes on. */
Test(options, abort_on_error_behaviour) {
  static const struct {
    const char *var;
    bool aborts;
  } cases[] = {
      {"SLOTMALLOC_ABORT_ON_ERROR=abc", true},
      {"SLOTMALLOC_ABORT_ON_ERROR=on", true},
      {"SLOTMALLOC_ABORT_ON_ERROR=off", false},
      {"SLOTMALLOC_ABORT_ON_ERROR=0", false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *set[] = {cases[i].var, NULL};
    tu_proc_t r;
    run_prog("doublefree", set, &r);
    cr_expect_not_null(strstr(r.err, "slotmalloc: double free of "), "%s: no report:\n%s", cases[i].var, r.err);
    if (cases[i].aborts)
      cr_expect(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT, "%s: %s, expected SIGABRT", cases[i].var,
                tu_status_str(&r));
    else
      cr_expect(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "%s: %s, expected exit 0", cases[i].var,
                tu_status_str(&r));
    tu_proc_free(&r);
  }
}

Test(options, stats) {
  static const option_case_t cases[] = {
      {"STATS", "0", NULL, "off"},
      {"STATS", "off", NULL, "off"},
      {"STATS", "1", NULL, "text"},
      {"STATS", "on", NULL, "text"},
      {"STATS", "text", NULL, "text"},
      {"STATS", "json", NULL, "json"},
      {"STATS", "JSON", NULL, "json"},
      {"STATS", "2", NULL, "json"},
      {"STATS", "jsn", W("STATS", "jsn", "is not one of off/text/json or a boolean; using the default off"), "off"},
      {"STATS", "3", W("STATS", "3", "is not one of off/text/json or a boolean; using the default off"), "off"},
  };
  RUN(cases);
}

Test(options, strings) {
  static const option_case_t cases[] = {
      {"STATS_FILE", "/dev/null", NULL, "/dev/null"},
      {"STATS_FILE", "", NULL, ""},
      {"PROF_FILE", "/tmp/prof.%p.heap", NULL, "/tmp/prof.%p.heap"},
      {"PROF_FILE", "", NULL, ""},
  };
  RUN(cases);
}

Test(options, verbose) {
  static const option_case_t cases[] = {
      {"VERBOSE", "1", NULL, "1"},
      {"VERBOSE", "2", NULL, "2"},
      {"VERBOSE", "3", W("VERBOSE", "3", "is out of range (0..2); using the default 0"), NULL},
      {"VERBOSE", "loud", W("VERBOSE", "loud", "is not a number; using the default 0"), NULL},
  };
  RUN(cases);
}

/* Numbers: digits only, in range, no wrap on overflow. */
Test(options, purge_delay_ms) {
  static const option_case_t cases[] = {
      {"PURGE_DELAY_MS", "250", NULL, "250"},
      {"PURGE_DELAY_MS", "0", NULL, "0"},
      {"PURGE_DELAY_MS", "3600000", NULL, "3600000"},
      {"PURGE_DELAY_MS", "abc", W("PURGE_DELAY_MS", "abc", "is not a number; using the default 100"), "100"},
      {"PURGE_DELAY_MS", "-5", W("PURGE_DELAY_MS", "-5", "is not a number; using the default 100"), "100"},
      {"PURGE_DELAY_MS", "10ms", W("PURGE_DELAY_MS", "10ms", "is not a number; using the default 100"), "100"},
      {"PURGE_DELAY_MS", " 5", W("PURGE_DELAY_MS", " 5", "is not a number; using the default 100"), "100"},
      {"PURGE_DELAY_MS", "3600001",
       W("PURGE_DELAY_MS", "3600001", "is out of range (0..3600000); using the default 100"), "100"},
      {"PURGE_DELAY_MS", "99999999999999999999",
       W("PURGE_DELAY_MS", "99999999999999999999", "is out of range (0..3600000); using the default 100"), "100"},
      {"PURGE_DELAY_MS", "18446744073709551616",
       W("PURGE_DELAY_MS", "18446744073709551616", "is out of range (0..3600000); using the default 100"), "100"},
  };
  RUN(cases);
}

Test(options, booleans) {
  static const option_case_t cases[] = {
      {"NUMA", "yes", NULL, "1"},
      {"NUMA", "0", NULL, "0"},
      {"NUMA", "maybe", W("NUMA", "maybe", "is not a boolean (1/0, on/off, yes/no, true/false); using the default 0"),
       "0"},
      {"LEAKS", "true", NULL, "1"},
      {"LEAKS", "off", NULL, "0"},
      {"LEAKS", "nah", W("LEAKS", "nah", "is not a boolean (1/0, on/off, yes/no, true/false); using the default 0"),
       "0"},
      {"BACKGROUND_PURGE", "on", NULL, "1"},
      {"BACKGROUND_PURGE", "0", NULL, "0"},
      {"BACKGROUND_PURGE", "sometimes",
       W("BACKGROUND_PURGE", "sometimes", "is not a boolean (1/0, on/off, yes/no, true/false); using the default 0"),
       "0"},
      {"BATCH_MADVISE", "yes", NULL, "1"},
      {"BATCH_MADVISE", "off", NULL, "0"},
      {"BATCH_MADVISE", "2",
       W("BATCH_MADVISE", "2", "is not a boolean (1/0, on/off, yes/no, true/false); using the default 0"), "0"},
  };
  RUN(cases);
}

/* Sizes: a bare number in the option's unit (MiB here), K/M/G/T binary
 * suffixes; 1G is 1024 MiB. */
Test(options, large_cache_mb) {
  static const option_case_t cases[] = {
      {"LARGE_CACHE_MB", "96", NULL, "96"},
      {"LARGE_CACHE_MB", "0", NULL, "0"},
      {"LARGE_CACHE_MB", "1G", NULL, "1024"},
      {"LARGE_CACHE_MB", "1g", NULL, "1024"},
      {"LARGE_CACHE_MB", "2GiB", NULL, "2048"},
      {"LARGE_CACHE_MB", "512M", NULL, "512"},
      {"LARGE_CACHE_MB", "512MB", NULL, "512"},
      {"LARGE_CACHE_MB", "1T", NULL, "1048576"},
      {"LARGE_CACHE_MB", "1X",
       W("LARGE_CACHE_MB", "1X", "is not a size (a number, optionally with K, M, G or T); using the default 128"),
       "128"},
      {"LARGE_CACHE_MB", "G",
       W("LARGE_CACHE_MB", "G", "is not a size (a number, optionally with K, M, G or T); using the default 128"),
       "128"},
      {"LARGE_CACHE_MB", "1GG",
       W("LARGE_CACHE_MB", "1GG", "is not a size (a number, optionally with K, M, G or T); using the default 128"),
       "128"},
      {"LARGE_CACHE_MB", "1048577",
       W("LARGE_CACHE_MB", "1048577", "is out of range (0..1048576); using the default 128"), "128"},
      {"LARGE_CACHE_MB", "2T", W("LARGE_CACHE_MB", "2T", "is out of range (0..1048576); using the default 128"),
       "128"},
      {"LARGE_CACHE_MB", "99999999999999999G",
       W("LARGE_CACHE_MB", "99999999999999999G", "is out of range (0..1048576); using the default 128"), "128"},
  };
  RUN(cases);
}

/* A size in bytes: a bare number is bytes. */
Test(options, prof_sample) {
  static const option_case_t cases[] = {
      {"PROF_SAMPLE", "0", NULL, "0"},
      {"PROF_SAMPLE", "524288", NULL, "524288"},
      {"PROF_SAMPLE", "512K", NULL, "524288"},
      {"PROF_SAMPLE", "512k", NULL, "524288"},
      {"PROF_SAMPLE", "1M", NULL, "1048576"},
      {"PROF_SAMPLE", "1", NULL, "1"},
      {"PROF_SAMPLE", "abc",
       W("PROF_SAMPLE", "abc", "is not a size (a number, optionally with K, M, G or T); using the default 0"), "0"},
      {"PROF_SAMPLE", "2T", W("PROF_SAMPLE", "2T", "is out of range (0..1099511627776 bytes); using the default 0"),
       "0"},
  };
  RUN(cases);
}

/* An unknown SLOTMALLOC_* name: one line, with the nearest known name when one
 * is close; nothing changes. */
Test(options, unknown_names) {
  static const option_case_t cases[] = {
      {"STAT", "1",
       "slotmalloc: SLOTMALLOC_STAT=1 is not an option of slotmalloc; ignored (did you mean SLOTMALLOC_STATS?)",
       NULL},
      {"ABORT_ON_ERRORS", "0",
       "slotmalloc: SLOTMALLOC_ABORT_ON_ERRORS=0 is not an option of slotmalloc; ignored (did you mean "
       "SLOTMALLOC_ABORT_ON_ERROR?)",
       NULL},
      {"FOOBAR", "1", "slotmalloc: SLOTMALLOC_FOOBAR=1 is not an option of slotmalloc; ignored", NULL},
  };
  RUN(cases);
  /* nothing was set by them */
  const char *set[] = {"SLOTMALLOC_STAT=1", "SLOTMALLOC_ABORT_ON_ERRORS=0", "SLOTMALLOC_VERBOSE=1", NULL};
  tu_proc_t r;
  run_prog("touch", set, &r);
  char got[64];
  cr_assert(in_force(r.err, "STATS", got, sizeof got), "no options line:\n%s", r.err);
  cr_expect_str_eq(got, "off");
  cr_assert(in_force(r.err, "ABORT_ON_ERROR", got, sizeof got));
  cr_expect_str_eq(got, "1");
  cr_expect_eq(count_lines(r.err, "slotmalloc: SLOTMALLOC_"), 2, "expected 2 warning lines:\n%s", r.err);
  tu_proc_free(&r);
}

/* The defaults, as the options line shows them with nothing set; and without
 * any SLOTMALLOC_* variable nothing at all is printed. */
Test(options, defaults_and_silence) {
  const char *set[] = {"SLOTMALLOC_VERBOSE=1", NULL};
  tu_proc_t r;
  run_prog("touch", set, &r);
  static const char *const want[] = {"ABORT_ON_ERROR=1",   "STATS=off", "STATS_FILE=",        "VERBOSE=1",
                                     "PURGE_DELAY_MS=100", "NUMA=0",    "LARGE_CACHE_MB=128", "PROF_SAMPLE=0",
                                     "PROF_FILE=",         "LEAKS=0",   "BACKGROUND_PURGE=0", "BATCH_MADVISE=0"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    char key[64];
    snprintf(key, sizeof key, " %s", want[i]);
    const char *line = strstr(r.err, "slotmalloc: options ");
    cr_assert_not_null(line, "no options line:\n%s", r.err);
    const char *k = strstr(line, key);
    cr_expect(k && (k[strlen(key)] == ' ' || k[strlen(key)] == '\n'), "default %s not in:\n%s", want[i], r.err);
  }
  tu_proc_free(&r);

  run_prog("touch", NULL, &r);
  cr_expect(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "%s", tu_status_str(&r));
  cr_expect_null(strstr(r.err, "slotmalloc"), "printed without any option set:\n%s", r.err);
  tu_proc_free(&r);
}

/* Several bad variables: one line each, each naming its own variable. */
Test(options, one_line_per_bad_variable) {
  const char *set[] = {"SLOTMALLOC_PURGE_DELAY_MS=x", "SLOTMALLOC_NUMA=x", "SLOTMALLOC_LARGE_CACHE_MB=x",
                       "SLOTMALLOC_STATZ=1", NULL};
  tu_proc_t r;
  run_prog("touch", set, &r);
  cr_expect_eq(count_lines(r.err, "slotmalloc: "), 4, "expected 4 lines:\n%s", r.err);
  cr_expect_eq(count_lines(r.err, "slotmalloc: SLOTMALLOC_PURGE_DELAY_MS=x "), 1);
  cr_expect_eq(count_lines(r.err, "slotmalloc: SLOTMALLOC_NUMA=x "), 1);
  cr_expect_eq(count_lines(r.err, "slotmalloc: SLOTMALLOC_LARGE_CACHE_MB=x "), 1);
  cr_expect_eq(count_lines(r.err, "slotmalloc: SLOTMALLOC_STATZ=1 "), 1);
  tu_proc_free(&r);
}

/* A long value is cut at 48 characters ("..."), a control character shown as '?'. */
Test(options, value_shown_safely) {
  static char var[300];
  char *p = var + sprintf(var, "SLOTMALLOC_PURGE_DELAY_MS=");
  memset(p, '7', 200);
  p[200] = 'x';
  p[201] = 0;
  const char *set[] = {var, "SLOTMALLOC_NUMA=a\tb", NULL};
  tu_proc_t r;
  run_prog("touch", set, &r);
  char want[160];
  snprintf(want, sizeof want,
           "slotmalloc: SLOTMALLOC_PURGE_DELAY_MS=%.48s... is not a number; using the default 100\n", p);
  cr_expect_not_null(strstr(r.err, want), "expected\n%s\ngot\n%s", want, r.err);
  cr_expect_not_null(strstr(r.err, "slotmalloc: SLOTMALLOC_NUMA=a?b is not a boolean"), "got\n%s", r.err);
  tu_proc_free(&r);
}
