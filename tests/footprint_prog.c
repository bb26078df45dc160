/* footprint_prog.c: the child program of test_footprint. A trivial program
 * (1000 malloc+free pairs of 16 bytes, then exit) that writes its own
 * /proc/self/smaps to stdout, read with open/read into a static buffer so
 * that measuring allocates nothing. Run with and without LD_PRELOAD. */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static char smaps[1 << 20];

int main(void) {
  for (int i = 0; i < 1000; i++) {
    void *volatile p = malloc(16);
    free(p);
  }
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
