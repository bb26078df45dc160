/* tests/shim/criterion/criterion.h: a small Criterion-compatible test API whose
 * runner (tests/shim/runner.c) runs every test of the executable in ONE process,
 * in source order.
 *
 * Why: Criterion forks a process per test, which hides the state a test leaves
 * behind for the next one (the single-process runners <name>_single), and its
 * runner aborts at start-up under ThreadSanitizer (the TSan build).
 *
 * The subset the slotmalloc tests use:
 *   Test(suite, name, .timeout = s, .init = f, .fini = f, .signal = n,
 *        .exit_code = n, .disabled = b, .description = "...")
 *   cr_assert, cr_assert_not, cr_assert_fail, cr_assert_eq/neq/lt/leq/gt/geq,
 *   cr_assert_null/not_null, cr_assert_str_eq/str_neq, the same as cr_expect_*
 *   (record the failure, the test goes on), cr_skip_test, cr_log_info/warn/error.
 * The message of an assertion is optional; when given, its format must be a
 * string literal (as with Criterion's own macros, in practice).
 *
 * A test with .signal or .exit_code expects to die: it needs a process of its
 * own and is reported as skipped. A fatal assertion ends the test (longjmp back
 * to the runner; .fini still runs). A fatal assertion in another thread marks
 * the test failed and ends that thread (pthread_exit). In a forked child it
 * ends the child (_exit(70)).
 */
#ifndef SM_SHIM_CRITERION_H
#define SM_SHIM_CRITERION_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* cr_assert(x) with no message passes an empty format string on purpose */
#pragma GCC diagnostic ignored "-Wformat-zero-length"

struct sm_shim_test {
  const char *suite;
  const char *name;
  void (*fn)(void);
  const char *file;
  int line;
  /* Criterion's per-test options */
  double timeout;
  void (*init)(void);
  void (*fini)(void);
  int signal;
  int exit_code;
  bool disabled;
  const char *description;
  /* the runner's list */
  struct sm_shim_test *next;
};

void sm_shim_register(struct sm_shim_test *t);
/* fatal: 1 ends the test, 0 records the failure only */
void sm_shim_fail(int fatal, const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void sm_shim_skip(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));
void sm_shim_log(const char *level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* (the parameters are S and N: "suite" and "name" would replace the designators) */
#define Test(S, N, ...)                                                                                            \
  static void sm_shim_fn_##S##_##N(void);                                                                          \
  static struct sm_shim_test sm_shim_t_##S##_##N = {                                                               \
      .suite = #S, .name = #N, .fn = sm_shim_fn_##S##_##N, .file = __FILE__, .line = __LINE__, __VA_ARGS__};       \
  __attribute__((constructor)) static void sm_shim_reg_##S##_##N(void) { sm_shim_register(&sm_shim_t_##S##_##N); } \
  static void sm_shim_fn_##S##_##N(void)

#define SM_SHIM_CHECK(fatal, cond, expr, ...)                                       \
  do {                                                                              \
    if (!(cond)) sm_shim_fail((fatal), __FILE__, __LINE__, (expr), "" __VA_ARGS__); \
  } while (0)

/* ---- fatal ------------------------------------------------------------------ */
#define cr_assert(cond, ...) SM_SHIM_CHECK(1, (cond), #cond, __VA_ARGS__)
#define cr_assert_not(cond, ...) SM_SHIM_CHECK(1, !(cond), "!(" #cond ")", __VA_ARGS__)
#define cr_assert_fail(...) sm_shim_fail(1, __FILE__, __LINE__, "cr_assert_fail", "" __VA_ARGS__)
#define cr_assert_eq(a, b, ...) SM_SHIM_CHECK(1, (a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...) SM_SHIM_CHECK(1, (a) != (b), #a " != " #b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...) SM_SHIM_CHECK(1, (a) < (b), #a " < " #b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...) SM_SHIM_CHECK(1, (a) <= (b), #a " <= " #b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...) SM_SHIM_CHECK(1, (a) > (b), #a " > " #b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...) SM_SHIM_CHECK(1, (a) >= (b), #a " >= " #b, __VA_ARGS__)
#define cr_assert_null(p, ...) SM_SHIM_CHECK(1, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_assert_not_null(p, ...) SM_SHIM_CHECK(1, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) SM_SHIM_CHECK(1, strcmp((a), (b)) == 0, #a " eq " #b, __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...) SM_SHIM_CHECK(1, strcmp((a), (b)) != 0, #a " neq " #b, __VA_ARGS__)

/* ---- non-fatal -------------------------------------------------------------- */
#define cr_expect(cond, ...) SM_SHIM_CHECK(0, (cond), #cond, __VA_ARGS__)
#define cr_expect_not(cond, ...) SM_SHIM_CHECK(0, !(cond), "!(" #cond ")", __VA_ARGS__)
#define cr_expect_fail(...) sm_shim_fail(0, __FILE__, __LINE__, "cr_expect_fail", "" __VA_ARGS__)
#define cr_expect_eq(a, b, ...) SM_SHIM_CHECK(0, (a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_expect_neq(a, b, ...) SM_SHIM_CHECK(0, (a) != (b), #a " != " #b, __VA_ARGS__)
#define cr_expect_lt(a, b, ...) SM_SHIM_CHECK(0, (a) < (b), #a " < " #b, __VA_ARGS__)
#define cr_expect_leq(a, b, ...) SM_SHIM_CHECK(0, (a) <= (b), #a " <= " #b, __VA_ARGS__)
#define cr_expect_gt(a, b, ...) SM_SHIM_CHECK(0, (a) > (b), #a " > " #b, __VA_ARGS__)
#define cr_expect_geq(a, b, ...) SM_SHIM_CHECK(0, (a) >= (b), #a " >= " #b, __VA_ARGS__)
#define cr_expect_null(p, ...) SM_SHIM_CHECK(0, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_expect_not_null(p, ...) SM_SHIM_CHECK(0, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...) SM_SHIM_CHECK(0, strcmp((a), (b)) == 0, #a " eq " #b, __VA_ARGS__)
#define cr_expect_str_neq(a, b, ...) SM_SHIM_CHECK(0, strcmp((a), (b)) != 0, #a " neq " #b, __VA_ARGS__)

/* ---- skip, log ---------------------------------------------------------------- */
#define cr_skip_test(...) sm_shim_skip(__FILE__, __LINE__, "" __VA_ARGS__)
#define cr_log_info(...) sm_shim_log("info", __FILE__, __LINE__, __VA_ARGS__)
#define cr_log_warn(...) sm_shim_log("warn", __FILE__, __LINE__, __VA_ARGS__)
#define cr_log_error(...) sm_shim_log("error", __FILE__, __LINE__, __VA_ARGS__)

#endif
