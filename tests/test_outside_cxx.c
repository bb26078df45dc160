/* test_outside_cxx.c: C++ programs on slotmalloc (helper R2). The program
 * (outside_cxx_prog.cpp) runs with glibc's malloc, with LD_PRELOAD of the
 * shared library, linked with libslotmalloc.a through the CMake target
 * slotmalloc_static, and fully static (-static) where libc.a and libstdc++.a
 * are installed; each way it must exit 0 (its own checks hold) and print
 * the same as with glibc. Under slotmalloc it checks that operator new's
 * memory is slotmalloc's (sm_arena_of). Skipped when no C++ compiler was
 * found at configure time. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "testutil.h"

#ifdef SM_CXX_PROG
static void run_mode(const char *mode) {
#ifdef SM_CXX_PROG_FULLSTATIC
  enum { WAYS = 4 };
  const char *progs[WAYS] = {SM_CXX_PROG, SM_CXX_PROG, SM_CXX_PROG_STATIC, SM_CXX_PROG_FULLSTATIC};
#else
  enum { WAYS = 3 };
  const char *progs[WAYS] = {SM_CXX_PROG, SM_CXX_PROG, SM_CXX_PROG_STATIC};
#endif
  const char *how[4] = {"glibc", "preloaded", "static", "fully static (-static)"};
  char *glibc_out = NULL;
  for (int k = 0; k < WAYS; k++) {
    const char *preload[] = {"LD_PRELOAD=" SM_SO_PATH, NULL};
    const char *unset[] = {"LD_PRELOAD", NULL};
    char **env = k == 1 ? tu_env_make(unset, preload) : tu_env_make(unset, NULL);
    char *argv[] = {(char *)progs[k], (char *)mode, NULL};
    tu_proc_t r;
    cr_assert_eq(tu_run(argv, env, NULL, NULL, 60, &r), 0);
    free(env);
    cr_assert(!r.timed_out && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "%s %s: %s; stderr: %s", mode,
              how[k], tu_status_str(&r), r.err);
    if (k == 0) {
      glibc_out = strdup(r.out);
    } else {
      cr_assert_str_eq(r.out, glibc_out, "%s %s printed otherwise than with glibc", mode, how[k]);
    }
    cr_assert(r.out_len > 0);
    tu_proc_free(&r);
  }
  free(glibc_out);
}

/* Plain, array, sized, aligned (16 B to 2 MiB, over-aligned types) and
 * nothrow operator new/delete; impossible sizes: nullptr from the nothrow
 * forms, std::bad_alloc from the others. */
Test(outside_cxx, every_form_of_operator_new, .timeout = 120) { run_mode("new"); }

/* RLIMIT_AS 64 MiB past the mapped size: std::bad_alloc from a 1 GiB vector
 * and from a growing container, nullptr from new(nothrow), then the memory
 * freed serves again. */
Test(outside_cxx, bad_alloc_under_a_tight_address_space_limit, .timeout = 120) { run_mode("badalloc"); }

/* 20 waves of 8 std::threads whose thread_local objects' destructors allocate
 * and free as the threads end: every destructor ran (160). */
Test(outside_cxx, thread_local_destructors_that_allocate, .timeout = 120) { run_mode("tls"); }

/* std::map<std::string, std::string> churn in 4 threads, entries handed to
 * the next thread: the same maps as with glibc. */
Test(outside_cxx, map_and_string_churn_across_threads, .timeout = 120) { run_mode("map"); }
#else
Test(outside_cxx, no_cxx_compiler, .disabled = true) {}
#endif
