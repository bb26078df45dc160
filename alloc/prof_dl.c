/* prof_dl.c: in libslotmalloc.so only, not in libslotmalloc.a.
 *
 * The heap profiler's unwinder for the shared library: libgcc_s is not one of
 * its load-time dependencies (mapped and relocated in every process it would
 * cost 84 KiB resident, and only the profiler uses it), so prof.c's
 * constructor opens it here when profiling is on and the program has not
 * loaded it already. In the archive this file is absent (prof.c refers to it
 * weakly), and with it any reference to dlopen, which would make the linker
 * warn in every program linked fully static; prof_static.c links the
 * unwinder in instead. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdbool.h>

/* _Unwind_Backtrace and _Unwind_GetIP of libgcc_s.so.1, opened now; false
 * (and nothing set) if it cannot be opened. Allocates (dlopen): never called
 * inside malloc. */
__attribute__((visibility("hidden"))) bool smi_prof_open_unwinder(void **backtrace, void **get_ip) {
  void *lib = dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return false;
  void *bt = dlsym(lib, "_Unwind_Backtrace"), *ip = dlsym(lib, "_Unwind_GetIP");
  if (!bt || !ip) return false;
  *backtrace = bt;
  *get_ip = ip;
  return true;
}
