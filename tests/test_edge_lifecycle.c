/* test_edge_lifecycle.c: correct programs that allocate at the edges of a
 * thread's or a library's life, and that start processes while other threads
 * allocate: thread-exit destructors (pthread keys, C++ thread_local through
 * __cxa_thread_atexit_impl) that allocate, re-arm themselves and start
 * threads; a library dlopened and dlclosed that allocates in its constructor
 * and frees in its destructor; vfork, posix_spawn, system and popen from a
 * threaded program; fork from a thread inside an entered arena. Each object
 * carries a pattern that is checked before it is freed. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "slotmalloc.h"
#include "testutil.h"

/* ---- thread-exit destructors -------------------------------------------------- */

static pthread_key_t key_alloc, key_thread;
static pthread_mutex_t left_lock = PTHREAD_MUTEX_INITIALIZER;
static void *left[256]; /* objects of exited threads, freed by main */
static size_t nleft;

static void keep_for_main(void *p) {
  pthread_mutex_lock(&left_lock);
  if (nleft < 256) left[nleft++] = p;
  else free(p);
  pthread_mutex_unlock(&left_lock);
}

/* Whether an object of checked_obj still holds its pattern (its seed is in it). */
static bool obj_ok(const void *p) { return tu_obj_check(p, ((const tu_obj_t *)p)->seed) == SIZE_MAX; }

static void *checked_obj(size_t size, uint64_t seed) {
  void *p = malloc(size);
  cr_assert_not_null(p);
  tu_obj_init(p, size, seed);
  return p;
}

/* Frees its value and allocates (small and large); re-arms its key twice, so
 * it runs three times on the exiting thread. */
static void alloc_destructor(void *v) {
  static __thread int runs;
  cr_assert(obj_ok(v), "a key's value was overwritten before its destructor");
  free(v);
  void *big = checked_obj(300 * KiB, 7);
  keep_for_main(checked_obj(40 + (size_t)runs * 100, 9));
  cr_assert(obj_ok(big));
  free(big);
  if (++runs < 3) pthread_setspecific(key_alloc, checked_obj(64, 11));
}

static void *inner_thread(void *v) {
  cr_assert(obj_ok(v));
  free(v); /* the object of a thread that is exiting */
  return checked_obj(1000, 13);
}

/* Starts a thread from the destructor and keeps what it returns. */
static void thread_destructor(void *v) {
  pthread_t t;
  void *r = NULL;
  cr_assert_eq(pthread_create(&t, NULL, inner_thread, v), 0);
  cr_assert_eq(pthread_join(t, &r), 0);
  keep_for_main(r);
}

static void tl_destructor(void *v) { /* a C++ thread_local's destructor */
  cr_assert(obj_ok(v));
  free(v);
  free(checked_obj(5000, 17));
}

extern int __cxa_thread_atexit_impl(void (*dtor)(void *), void *obj, void *dso_symbol);
extern void *__dso_handle;

static void *exiting_thread(void *arg) {
  (void)arg;
  pthread_setspecific(key_alloc, checked_obj(48, 19));
  pthread_setspecific(key_thread, checked_obj(200, 23));
  __cxa_thread_atexit_impl(tl_destructor, checked_obj(3000, 29), &__dso_handle);
  void **objs = checked_obj(100 * sizeof(void *), 31);
  for (int i = 2; i < 100; i++) objs[i] = checked_obj(16 + (size_t)i * 30, (uint64_t)i);
  return objs; /* freed by main after this thread exited */
}

Test(lifecycle, thread_exit_destructors_allocate_and_start_threads, .timeout = 60) {
  cr_assert_eq(pthread_key_create(&key_alloc, alloc_destructor), 0);
  cr_assert_eq(pthread_key_create(&key_thread, thread_destructor), 0);
  for (int round = 0; round < 20; round++) {
    pthread_t t[4];
    void *r[4];
    for (int i = 0; i < 4; i++) cr_assert_eq(pthread_create(&t[i], NULL, exiting_thread, NULL), 0);
    for (int i = 0; i < 4; i++) cr_assert_eq(pthread_join(t[i], &r[i]), 0);
    for (int i = 0; i < 4; i++) {
      void **objs = r[i];
      for (int k = 2; k < 100; k++) {
        cr_assert(obj_ok(objs[k]), "an exited thread's object changed");
        free(objs[k]);
      }
      free(objs);
    }
    pthread_mutex_lock(&left_lock);
    for (size_t i = 0; i < nleft; i++) {
      cr_assert(obj_ok(left[i]), "an object a destructor allocated changed");
      free(left[i]);
    }
    nleft = 0;
    pthread_mutex_unlock(&left_lock);
  }
}

/* A detached thread still allocating when the process exits. */
static void *detached_churn(void *arg) {
  (void)arg;
  for (;;) free(malloc(100));
  return NULL;
}

Test(lifecycle, exit_while_detached_threads_allocate, .timeout = 60) {
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < 3; i++) {
      pthread_t t;
      if (pthread_create(&t, &at, detached_churn, NULL)) _exit(3);
    }
    free(malloc(1000));
    exit(0);
  }
  int st = 0;
  tu_waitpid(pid, &st);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", tu_wait_status_str(st));
}

/* ---- a library loaded and unloaded -------------------------------------------- */

#ifdef SM_LIFE_MODULE
Test(lifecycle, dlopen_library_allocating_in_constructor_and_destructor, .timeout = 60) {
  for (int round = 0; round < 20; round++) {
    void *h = dlopen(SM_LIFE_MODULE, RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(h, "dlopen: %s", dlerror());
    void *(*thread_fn)(void *) = (void *(*)(void *))dlsym(h, "module_thread");
    cr_assert_not_null(thread_fn);
    for (int i = 0; i < 4; i++) { /* its key's destructor runs at each thread's exit */
      pthread_t t;
      cr_assert_eq(pthread_create(&t, NULL, thread_fn, NULL), 0);
      cr_assert_eq(pthread_join(t, NULL), 0);
    }
    cr_assert_eq(dlclose(h), 0); /* frees what the constructor allocated */
  }
}
#endif

/* ---- processes started from a threaded program ----------------------------------- */

static atomic_int churn_stop;
static void *churn(void *arg) {
  uint64_t x = (uintptr_t)arg * 0x9e3779b97f4a7c15u + 1;
  void *keep[128] = {0};
  while (!atomic_load(&churn_stop)) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    size_t i = x % 128;
    free(keep[i]);
    keep[i] = malloc((x >> 16) % ((x & 8) ? 400 * KiB : 600));
  }
  for (int i = 0; i < 128; i++) free(keep[i]);
  return NULL;
}

Test(lifecycle, vfork_posix_spawn_system_popen_while_threads_allocate, .timeout = 120) {
  pthread_t t[3];
  atomic_store(&churn_stop, 0);
  for (uintptr_t i = 0; i < 3; i++) cr_assert_eq(pthread_create(&t[i], NULL, churn, (void *)(i + 1)), 0);
  for (int k = 0; k < 10; k++) {
    pid_t pid = vfork();
    if (pid == 0) {
      execl("/bin/sh", "sh", "-c", "exit 0", (char *)NULL);
      _exit(127);
    }
    cr_assert_gt(pid, 0);
    int st = 0;
    tu_waitpid(pid, &st);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "vfork child: %s", tu_wait_status_str(st));

    char *argv[] = {"sh", "-c", "exit 0", NULL};
    cr_assert_eq(posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ), 0);
    tu_waitpid(pid, &st);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "posix_spawn child: %s", tu_wait_status_str(st));

    st = system("exit 0");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "system: %s", tu_wait_status_str(st));

    FILE *f = popen("echo hello", "r");
    cr_assert_not_null(f);
    char line[64] = {0};
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_assert_str_eq(line, "hello\n");
    cr_assert_eq(pclose(f), 0);
  }
  atomic_store(&churn_stop, 1);
  for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
}

/* fork from a thread whose plain malloc goes to an entered arena, while other
 * threads allocate: the child allocates in the arena, leaves it, closes it,
 * and allocates and frees a lot on its own heap. */
static void *fork_in_arena(void *arg) {
  (void)arg;
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  sm_arena_t *prev = sm_arena_enter(a);
  void *objs[64];
  for (int i = 0; i < 64; i++) objs[i] = checked_obj(32 + (size_t)i * 50, (uint64_t)i);
  for (int k = 0; k < 10; k++) {
    pid_t pid = fork();
    if (pid == 0) {
      void *p = malloc(50);
      if (sm_arena_of(p) != a) _exit(3);
      for (int i = 0; i < 64; i++)
        if (!obj_ok(objs[i])) _exit(4);
      sm_arena_enter(prev);
      sm_arena_close(a);
      if (sm_arena_of(p) || sm_arena_of(objs[0])) _exit(5);
      for (int r = 0; r < 20; r++) {
        void *many[1000];
        for (int i = 0; i < 1000; i++)
          if (!(many[i] = malloc(1 + (size_t)(i * 37) % 3000))) _exit(6);
        for (int i = 0; i < 1000; i++) free(many[i]);
      }
      free(malloc(4 * MiB));
      _exit(0);
    }
    cr_assert_gt(pid, 0);
    int st = 0;
    tu_waitpid(pid, &st);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork child %d: %s", k, tu_wait_status_str(st));
  }
  for (int i = 0; i < 64; i++) {
    cr_assert(obj_ok(objs[i]));
    free(objs[i]);
  }
  sm_arena_enter(prev);
  tu_arena_drop(a);
  return NULL;
}

Test(lifecycle, fork_from_a_thread_in_an_entered_arena, .timeout = 120) {
  pthread_t t[2], f;
  atomic_store(&churn_stop, 0);
  for (uintptr_t i = 0; i < 2; i++) cr_assert_eq(pthread_create(&t[i], NULL, churn, (void *)(i + 7)), 0);
  cr_assert_eq(pthread_create(&f, NULL, fork_in_arena, NULL), 0);
  cr_assert_eq(pthread_join(f, NULL), 0);
  atomic_store(&churn_stop, 1);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
}
