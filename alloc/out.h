/* out.h: text output that allocates nothing, for the reports the allocator
 * writes itself (statistics, heap profile, leak report), which run at exit
 * and inside malloc: into a caller's buffer (always NUL-terminated, cut to
 * fit; n counts the whole length) or to a file descriptor through a stack
 * buffer. */
#ifndef SMI_OUT_H
#define SMI_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  char *buf;      /* the caller's buffer (fd < 0) */
  size_t size;    /* its size */
  size_t n;       /* bytes written so far (the length needed, past size) */
  int fd;         /* >= 0: written to this descriptor through own[] */
  bool failed;    /* a write to fd failed */
  size_t used;    /* bytes waiting in own[] */
  char own[1024]; /* small: reports run on any thread's stack, 16 KiB (PTHREAD_STACK_MIN) ones too */
} smi_out_t;

/* Initializers: smi_out_t o = SMI_OUT_FD(fd); or SMI_OUT_BUF(buf, size)
 * (size 0: nothing is stored, n only counts). */
#define SMI_OUT_FD(d) \
  { .fd = (d) }
#define SMI_OUT_BUF(b, s) \
  { .buf = (b), .size = (s), .fd = -1 }

void smi_out_put(smi_out_t *o, const char *s, size_t len);
void smi_out_str(smi_out_t *o, const char *s);
void smi_out_dec(smi_out_t *o, uint64_t v);
void smi_out_hex(smi_out_t *o, uint64_t v); /* 0x... */
/* printf through a 512-byte stack line (glibc's vsnprintf allocates nothing
 * for integers and short strings; no floating point). */
__attribute__((format(printf, 2, 3))) void smi_out_fmt(smi_out_t *o, const char *fmt, ...);
void smi_out_flush(smi_out_t *o); /* what waits for fd, written */
/* Writes all n bytes of s to fd (false if the descriptor refuses them): a raw
 * system call, so no cancellation point, the allocator's reports and
 * messages being written from inside malloc and free; errno kept. */
bool smi_out_write(int fd, const char *s, size_t n);

#endif
