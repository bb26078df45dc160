/* test_code_layout.c: malloc and free of libslotmalloc.so each start on a
 * 64-byte line (preload/override.c, SM_HOT_ENTRY). Left to the linker, their
 * offsets in a line moved with any change elsewhere in the library, and the
 * hot pair's speed with them (pair -z 16: x1.12 of the time at one layout
 * against another, the same instructions). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>

#include "slotmalloc.h"
#include "testutil.h"

/* The loaded library's name, as the loader has it (its soname's file). */
static int find_library(struct dl_phdr_info *info, size_t size, void *out) {
  (void)size;
  if (!strstr(info->dlpi_name, "libslotmalloc")) return 0;
  *(const char **)out = info->dlpi_name;
  return 1;
}

/* The address of the library's own definition of name (the program's
 * reference may be a PLT stub or a copy in the executable). */
static uintptr_t defined_in_library(const char *name) {
  const char *path = NULL;
  dl_iterate_phdr(find_library, &path);
  cr_assert_not_null(path, "libslotmalloc is not loaded");
  void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
  cr_assert_not_null(lib, "%s: %s", path, dlerror());
  void *sym = dlsym(lib, name);
  cr_assert_not_null(sym, "no %s in %s", name, path);
  dlclose(lib);
  return (uintptr_t)sym;
}

Test(code_layout, malloc_and_free_start_a_cache_line) {
  sm_free(sm_malloc(16)); /* (a call of the library's own: linked as needed, it is loaded) */
  cr_expect_eq(defined_in_library("malloc") % 64, 0, "malloc at %#lx", (unsigned long)defined_in_library("malloc"));
  cr_expect_eq(defined_in_library("free") % 64, 0, "free at %#lx", (unsigned long)defined_in_library("free"));
}
