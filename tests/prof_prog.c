/* prof_prog.c: the child program of test_prof (the heap profiler and the leak
 * report). Built three ways: prof_prog (no link to slotmalloc: run under
 * LD_PRELOAD), prof_prog_fp (linked with the shared library, frame pointers
 * kept), prof_prog_static (linked with libslotmalloc.a). Exported symbols
 * (-rdynamic), so the leak report can name the functions.
 *
 *   prof_prog leaks [DUMP]   leak_a keeps 300 x 4000 bytes, leak_b 100 x 1000;
 *                            with DUMP, calls sm_prof_dump(DUMP) and prints
 *                            "DUMP <rc>"; prints "PID <pid>"; exits 0
 *   prof_prog many           leak_many keeps 100000 x 256 bytes
 *   prof_prog double_free N  alloc_site() returns malloc(N), freed twice;
 *                            prints "ADDR <p> SITE <alloc_site>" first
 *   prof_prog threads        4 threads run thread_leak (100 x 2000 bytes kept
 *                            each) and exit; their objects outlive them
 *   prof_prog fork           leak_a, then a child (fork) runs leak_b and
 *                            exits; prints "CHILD <pid>"
 *   prof_prog large_at_exit  2 threads map, grow and free large objects
 *                            without end; main exits after 2 ms, the
 *                            reports at exit running beside them */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern int sm_prof_dump(const char *path) __attribute__((weak));

#define KEEP 200000
static void *volatile kept[KEEP];
static int nkept;

__attribute__((noinline)) void leak_a(void) {
  for (int i = 0; i < 300; i++) {
    kept[nkept++] = malloc(4000);
    void *t = malloc(4000); /* freed at once: not live, not in the profile's live figures */
    free(t);
  }
}

__attribute__((noinline)) void leak_b(void) {
  for (int i = 0; i < 100; i++) kept[nkept++] = malloc(1000);
}

__attribute__((noinline)) void leak_many(void) {
  for (int i = 0; i < 100000; i++) kept[nkept++] = malloc(256);
}

static pthread_mutex_t keep_lock = PTHREAD_MUTEX_INITIALIZER;

__attribute__((noinline)) void *thread_leak(void *arg) {
  (void)arg;
  for (int i = 0; i < 100; i++) {
    void *p = malloc(2000);
    pthread_mutex_lock(&keep_lock);
    kept[nkept++] = p;
    pthread_mutex_unlock(&keep_lock);
  }
  return NULL;
}

static void *large_churn(void *arg) {
  (void)arg;
  for (;;) {
    void *p[8];
    for (int i = 0; i < 8; i++) p[i] = malloc(((size_t)300 + (size_t)i * 97) << 10);
    for (int i = 0; i < 8; i++) {
      void *q = realloc(p[i], ((size_t)2000 + (size_t)i * 300) << 10);
      if (q) p[i] = q;
    }
    for (int i = 0; i < 8; i++) free(p[i]);
  }
  return NULL;
}

__attribute__((noinline)) void *alloc_site(size_t n) {
  void *p = malloc(n);
  __asm__ volatile("" : : "r"(p) : "memory"); /* no tail call: this frame is the site */
  return p;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  printf("PID %d\n", (int)getpid());
  fflush(stdout);
  if (!strcmp(argv[1], "leaks")) {
    leak_a();
    leak_b();
    if (argc > 2) {
      int rc = sm_prof_dump ? sm_prof_dump(argv[2]) : -1;
      printf("DUMP %d\n", rc);
    }
    return 0;
  }
  if (!strcmp(argv[1], "many")) {
    leak_many();
    return 0;
  }
  if (!strcmp(argv[1], "threads")) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
      if (pthread_create(&t[i], NULL, thread_leak, NULL)) return 3;
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    return 0;
  }
  if (!strcmp(argv[1], "fork")) {
    leak_a();
    pid_t c = fork();
    if (c < 0) return 3;
    if (c == 0) {
      leak_b();
      exit(0);
    }
    printf("CHILD %d\n", (int)c);
    int st;
    if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st)) return 4;
    return 0;
  }
  if (!strcmp(argv[1], "large_at_exit")) {
    pthread_t t;
    for (int i = 0; i < 2; i++)
      if (pthread_create(&t, NULL, large_churn, NULL)) return 5;
    usleep(2000);
    exit(0);
  }
  if (!strcmp(argv[1], "double_free") && argc > 2) {
    void *p = alloc_site((size_t)atol(argv[2]));
    free(p);
    printf("ADDR %p SITE %p\n", p, (void *)alloc_site);
    fflush(stdout);
    void *volatile again = p;
    free(again);
    return 0;
  }
  return 2;
}
