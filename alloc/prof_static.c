/* prof_static.c: the heap profiler's unwinder for libslotmalloc.a, and for
 * every other build of the sources (CMakeLists.txt SM_SOURCES), but not for
 * libslotmalloc.so, which has prof_dl.c instead.
 *
 * A program linked with the archive links libgcc's unwinder in through the
 * references here, as it did before the shared library stopped loading
 * libgcc_s (libgcc_eh.a in a program linked fully static, which could not
 * dlopen it; libgcc_s otherwise). prof.c calls this, so the linker always
 * takes this member. */
#include <stdbool.h>
#include <unwind.h>

__attribute__((visibility("hidden"))) bool smi_prof_find_unwinder(void **backtrace, void **get_ip) {
  *backtrace = (void *)_Unwind_Backtrace;
  *get_ip = (void *)_Unwind_GetIP;
  return true;
}
