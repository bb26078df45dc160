/* unit_review4.c: checks from the fourth review of the session's changes.
 *
 * review4::a_moved_large_object_unmaps_only_its_own_pages: a realloc that
 * cannot grow a large object in place moves its pages (mremap) to a new
 * place. The range the pages left is free from that moment, and another
 * thread's mmap may take it before the move's last call. The hardened
 * build's smi_os_grow_guarded (slots/os.c) then unmapped the old mapping
 * whole (its head and its two guard pages, and the body's old range with
 * them), and with it the other thread's new mapping. Here mremap is wrapped
 * (tests/CMakeLists.txt): right after the move, a page is mapped at the
 * body's old address, as the other thread's mmap would, and it must still be
 * mapped, its contents intact, once the realloc returns. A page mapped just
 * past the object's mapping keeps it from growing in place. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "alloc/internal.h"
#include "slots/os.h"

#define PAGE ((size_t)4096)

void *__real_mremap(void *old, size_t old_size, size_t new_size, int flags, ...);
static volatile bool plant_armed;
static void *planted;

/* The library's mremap: as the kernel's; once armed, a move that worked has
 * a page mapped at the address it left, with a mark in it. */
void *__wrap_mremap(void *old, size_t old_size, size_t new_size, int flags, ...) {
  void *dest = NULL;
  if (flags & MREMAP_FIXED) {
    va_list ap;
    va_start(ap, flags);
    dest = va_arg(ap, void *);
    va_end(ap);
  }
  void *q = __real_mremap(old, old_size, new_size, flags, dest);
  if (q != MAP_FAILED && q != old && plant_armed) {
    plant_armed = false;
    void *m = mmap(old, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (m == old) {
      memset(m, 0x5a, PAGE);
      planted = m;
    } else if (m != MAP_FAILED) {
      munmap(m, PAGE);
    }
  }
  return q;
}

/* Whether the page at p is mapped (mincore fails with ENOMEM on an unmapped one). */
static bool mapped(void *p) {
  unsigned char v;
  return mincore(p, PAGE, &v) == 0;
}

Test(review4, a_moved_large_object_unmaps_only_its_own_pages) {
  size_t size = (size_t)1 << 20;
  unsigned char *p = sm_malloc(size);
  cr_assert_not_null(p);
  memset(p, 0x33, size);
  smi_segment_t *seg = smi_large_of(p);
  cr_assert_not_null(seg, "a 1 MiB object is a large object");
  /* a page just past its mapping: it cannot grow in place */
  uint8_t *after = (uint8_t *)seg + seg->map_size;
  void *blocker = mmap(after, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (blocker != after) {
    if (blocker != MAP_FAILED) munmap(blocker, PAGE);
    cr_skip_test("the page past the object is taken");
  }
  planted = NULL;
  plant_armed = true;
  unsigned char *q = sm_realloc(p, 8 * size);
  plant_armed = false;
  cr_assert_not_null(q);
  cr_assert_neq(q, p, "the object did not move");
  for (size_t i = 0; i < size; i += 4093) cr_assert_eq(q[i], 0x33, "byte %zu lost in the move", i);
  cr_assert_not_null(planted, "no mapping could be put where the pages were");
  cr_assert(mapped(planted), "the mapping another thread made where the object's pages were (%p) was unmapped",
            planted);
  for (size_t i = 0; i < PAGE; i += 512) cr_assert_eq(((unsigned char *)planted)[i], 0x5a);
  munmap(planted, PAGE);
  munmap(blocker, PAGE);
  sm_free(q);
}
