/* out.c: text output that allocates nothing (out.h). */
#include "out.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* A write into a pipe whose reader has gone raises SIGPIPE, whose default
 * action ends the program: with its status 141, not its own
 * (`SLOTMALLOC_STATS=1 prog 2>&1 | head -1` ended so in the report at exit;
 * test outside_sweep::reports_at_exit_into_a_closed_pipe_keep_the_exit_status).
 * The allocator's output never ends a program: SIGPIPE is blocked while it
 * writes, and the one its write raised is taken back (unless the program had
 * SIGPIPE blocked: then it stays pending, as for the program's own writes).
 * Raw system calls: none is a cancellation point. */
bool smi_out_write(int fd, const char *s, size_t n) {
  int saved = errno;
  uint64_t pipe_bit = (uint64_t)1 << (SIGPIPE - 1), old = 0;
  syscall(SYS_rt_sigprocmask, SIG_BLOCK, &pipe_bit, &old, sizeof pipe_bit);
  bool ok = true, broken = false;
  while (n) {
    long w = syscall(SYS_write, fd, s, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      broken = w < 0 && errno == EPIPE;
      ok = false;
      break;
    }
    s += w;
    n -= (size_t)w;
  }
  if (broken && !(old & pipe_bit)) {
    struct timespec now = {0, 0};
    syscall(SYS_rt_sigtimedwait, &pipe_bit, NULL, &now, sizeof pipe_bit);
  }
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, sizeof old);
  errno = saved;
  return ok;
}

void smi_out_flush(smi_out_t *o) {
  if (o->used && !smi_out_write(o->fd, o->own, o->used)) o->failed = true;
  o->used = 0;
}

void smi_out_put(smi_out_t *o, const char *s, size_t len) {
  if (o->fd >= 0) {
    while (len) {
      if (o->used == sizeof o->own) smi_out_flush(o);
      size_t k = sizeof o->own - o->used < len ? sizeof o->own - o->used : len;
      memcpy(o->own + o->used, s, k);
      o->used += k;
      o->n += k;
      s += k;
      len -= k;
    }
    return;
  }
  if (o->size) {
    for (size_t i = 0; i < len && o->n + i < o->size - 1; i++) o->buf[o->n + i] = s[i];
    size_t end = o->n + len < o->size - 1 ? o->n + len : o->size - 1;
    o->buf[end] = 0;
  }
  o->n += len;
}

void smi_out_str(smi_out_t *o, const char *s) { smi_out_put(o, s, strlen(s)); }

void smi_out_dec(smi_out_t *o, uint64_t v) {
  char tmp[24];
  size_t n = sizeof tmp;
  do {
    tmp[--n] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  smi_out_put(o, tmp + n, sizeof tmp - n);
}

void smi_out_hex(smi_out_t *o, uint64_t v) {
  char tmp[18];
  size_t n = sizeof tmp;
  do {
    tmp[--n] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v);
  tmp[--n] = 'x';
  tmp[--n] = '0';
  smi_out_put(o, tmp + n, sizeof tmp - n);
}

void smi_out_fmt(smi_out_t *o, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n > 0) smi_out_put(o, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}
