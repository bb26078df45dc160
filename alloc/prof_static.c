/* prof_static.c: in libslotmalloc.a only, not in libslotmalloc.so.
 *
 * prof.c refers to libgcc's unwinder weakly, so that the shared library does
 * not load libgcc_s into every process (the profiler dlopens it when it is
 * on). A program linked fully static cannot dlopen: this member's strong
 * references link the unwinder into every program linked with the archive,
 * as before (libgcc_eh.a in a cc -static program, libgcc_s otherwise). The
 * archive's users take this member by --undefined=smi_prof_unwinder (the
 * CMake target's link options, slotmalloc.pc). */
#include <unwind.h>

__attribute__((visibility("hidden"), used)) void *const smi_prof_unwinder[2] = {(void *)_Unwind_Backtrace,
                                                                                (void *)_Unwind_GetIP};
