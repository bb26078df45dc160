/* static_dlopen_prog.c: a program linked fully static (cc -static) with
 * libslotmalloc.a that dlopens a shared library (argv[1], built from
 * static_dlopen_module.c) and runs threads that allocate with slotmalloc and
 * call into it. The library brings libc.so, a second libc whose thread keys
 * share each thread's key slots with the program's: its first key is key 0,
 * as slotmalloc's heap key is in the program's libc, and its
 * pthread_setspecific overwrote the heap key's value. At the thread's exit
 * slotmalloc took that value for the thread's heap and crashed (SIGSEGV in
 * smi_arena_abandon_all); it ends the heap its TLS names now.
 *
 * Exit 0 and "static_dlopen: ok" on success. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *(*module_thread)(void *);

static void *worker(void *arg) {
  void *objs[100];
  for (int i = 0; i < 100; i++) { /* this thread's slotmalloc heap */
    objs[i] = malloc(16 + (size_t)i * 24);
    if (!objs[i]) return NULL;
    memset(objs[i], 2, 16 + (size_t)i * 24);
  }
  module_thread(arg);
  for (int i = 0; i < 100; i += 2) free(objs[i]);
  return objs[1]; /* freed by main after this thread exits */
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: static_dlopen_prog MODULE.so\n");
    return 2;
  }
  free(malloc(1)); /* slotmalloc's heap key is the program's first key */
  for (int round = 0; round < 3; round++) {
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) {
      fprintf(stderr, "static_dlopen: dlopen: %s\n", dlerror());
      return 1;
    }
    *(void **)&module_thread = dlsym(h, "module_thread");
    if (!module_thread) {
      fprintf(stderr, "static_dlopen: dlsym: %s\n", dlerror());
      return 1;
    }
    for (int i = 0; i < 8; i++) {
      pthread_t t;
      void *r = NULL;
      if (pthread_create(&t, NULL, worker, NULL) != 0 || pthread_join(t, &r) != 0) return 1;
      free(r);
    }
    dlclose(h);
  }
  puts("static_dlopen: ok");
  return 0;
}
