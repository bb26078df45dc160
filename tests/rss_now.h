/* rss_now.h: the resident set of the calling process, for the child programs
 * of the memory tests (memory_prog.c, lean_prog.c). Read with open/read, not
 * stdio, so that measuring allocates nothing. */
#ifndef SM_TESTS_RSS_NOW_H
#define SM_TESTS_RSS_NOW_H

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

/* Resident KiB (/proc/self/statm), -1 if unreadable. */
static inline long rss_kib(void) {
  char buf[128];
  int fd = open("/proc/self/statm", O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  char *end;
  strtol(buf, &end, 10);
  return strtol(end, NULL, 10) * (sysconf(_SC_PAGESIZE) / 1024);
}

#endif
