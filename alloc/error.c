/* error.c: the one place that reports misuse. Every detected misuse prints one
 * fixed, greppable line on stderr (with the allocation site when the profiler
 * sampled the object: prof.c), then aborts (SLOTMALLOC_ABORT_ON_ERROR=0:
 * reports and goes on, touching nothing). No allocation, no stdio. */
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

static size_t put_str(char *out, const char *s) {
  size_t n = 0;
  while (s[n]) {
    out[n] = s[n];
    n++;
  }
  return n;
}

static size_t put_hex(char *out, uintptr_t v) {
  char tmp[16];
  size_t n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v);
  out[0] = '0';
  out[1] = 'x';
  for (size_t i = 0; i < n; i++) out[2 + i] = tmp[n - 1 - i];
  return n + 2;
}

static size_t put_dec(char *out, size_t v) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  return n;
}

void smi_message(const char *text) {
  size_t n = 0;
  while (text[n]) n++;
  ssize_t w = write(STDERR_FILENO, text, n);
  (void)w;
}

void smi_report(int kind, const void *p, size_t size) {
  static const char *const what[] = {
      [SMI_ERR_DOUBLE_FREE] = "double free of ",
      [SMI_ERR_INVALID_FREE] = "invalid free of ",
      [SMI_ERR_INVALID_REALLOC] = "invalid realloc of ",
      [SMI_ERR_CORRUPT] = "corrupted metadata at ",
  };
  char line[320];
  size_t n = put_str(line, "slotmalloc: ");
  n += put_str(line + n, what[kind]);
  n += put_hex(line + n, (uintptr_t)p);
  if (size) {
    n += put_str(line + n, " (size ");
    n += put_dec(line + n, size);
    n += put_str(line + n, ")");
  } else if (kind == SMI_ERR_INVALID_FREE || kind == SMI_ERR_INVALID_REALLOC) {
    n += put_str(line + n, " (not a live object of slotmalloc)");
  }
  n += smi_prof_site(p, line + n, sizeof line - n - 1); /* when the object was sampled */
  line[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, n);
  (void)w;
  if (smi_opt.abort_on_error) abort();
}
