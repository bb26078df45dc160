/* footprint_prog.c: the child program of test_footprint. A trivial program
 * (1000 malloc+free pairs of 16 bytes, then exit) that writes its own
 * /proc/self/smaps to stdout, read with open/read into a static buffer so
 * that measuring allocates nothing. Run with and without LD_PRELOAD.
 * Its first line, "pages: header H block B", counts with mincore the resident
 * 4 KiB pages of the 64 KiB around the object's 4 MiB boundary below it (with
 * slotmalloc: its segment's header page) and of the 64 KiB it lies in (its
 * block); -1 where nothing is mapped (glibc's malloc). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static char smaps[1 << 20];

/* Resident 4 KiB pages of the 64 KiB at p, -1 if not all mapped. */
static int resident(uintptr_t p) {
  unsigned char vec[16];
  if (mincore((void *)p, 1 << 16, vec) != 0) return -1;
  int n = 0;
  for (int i = 0; i < 16; i++) n += vec[i] & 1;
  return n;
}

int main(void) {
  uintptr_t u = 0;
  for (int i = 0; i < 1000; i++) {
    void *volatile p = malloc(16);
    u = (uintptr_t)p;
    free(p);
  }
  int len = snprintf(smaps, sizeof smaps, "pages: header %d block %d\n", resident(u & ~(uintptr_t)0x3fffff),
                     resident(u & ~(uintptr_t)0xffff));
  if (len < 0 || write(1, smaps, (size_t)len) != len) return 3;
  int fd = open("/proc/self/smaps", O_RDONLY);
  if (fd < 0) return 2;
  size_t n = 0;
  ssize_t r;
  while (n < sizeof smaps && (r = read(fd, smaps + n, sizeof smaps - n)) > 0) n += (size_t)r;
  close(fd);
  for (size_t off = 0; off < n;) {
    ssize_t w = write(1, smaps + off, n - off);
    if (w <= 0) return 3;
    off += (size_t)w;
  }
  return 0;
}
