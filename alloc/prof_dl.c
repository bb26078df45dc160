/* prof_dl.c: the heap profiler's unwinder for libslotmalloc.so (the shared
 * library only; the archive and every other build of the sources have
 * prof_static.c instead).
 *
 * libgcc_s is not one of the shared library's load-time dependencies: mapped
 * and relocated in every process it would cost 84 KiB resident, and only the
 * profiler uses it. prof.c's constructor asks for it here when profiling is
 * on, and it is opened then (the one the program has, if it has one). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdbool.h>

/* _Unwind_Backtrace and _Unwind_GetIP of libgcc_s.so.1, opened now; false
 * (and nothing set) if it cannot be opened. Allocates (dlopen): never called
 * inside malloc. */
__attribute__((visibility("hidden"))) bool smi_prof_find_unwinder(void **backtrace, void **get_ip) {
  void *lib = dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return false;
  void *bt = dlsym(lib, "_Unwind_Backtrace"), *ip = dlsym(lib, "_Unwind_GetIP");
  if (!bt || !ip) return false;
  *backtrace = bt;
  *get_ip = ip;
  return true;
}
