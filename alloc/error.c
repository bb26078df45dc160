/* error.c: the one place that reports misuse. Every detected misuse prints one
 * fixed, greppable line on stderr (with the allocation site when the profiler
 * sampled the object: prof.c), then aborts (SLOTMALLOC_ABORT_ON_ERROR=0:
 * reports and goes on, touching nothing). No allocation, no stdio, no
 * cancellation point (smi_out_write). */
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"
#include "out.h"

void smi_message(const char *text) {
  size_t n = 0;
  while (text[n]) n++;
  smi_out_write(STDERR_FILENO, text, n);
}

void smi_report(int kind, const void *p, size_t size) {
  static const char *const what[] = {
      [SMI_ERR_DOUBLE_FREE] = "double free of ",
      [SMI_ERR_INVALID_FREE] = "invalid free of ",
      [SMI_ERR_INVALID_REALLOC] = "invalid realloc of ",
      [SMI_ERR_CORRUPT] = "corrupted metadata at ",
  };
  char line[320];
  smi_out_t o = SMI_OUT_BUF(line, sizeof line - 1); /* room for the newline */
  smi_out_str(&o, "slotmalloc: ");
  smi_out_str(&o, what[kind]);
  smi_out_hex(&o, (uintptr_t)p);
  if (size) {
    smi_out_str(&o, " (size ");
    smi_out_dec(&o, size);
    smi_out_str(&o, ")");
  } else if (kind == SMI_ERR_INVALID_FREE || kind == SMI_ERR_INVALID_REALLOC) {
    smi_out_str(&o, " (not a live object of slotmalloc)");
  }
  size_t n = o.n;
  n += smi_prof_site(p, line + n, sizeof line - n - 1); /* when the object was sampled */
  line[n++] = '\n';
  smi_out_write(STDERR_FILENO, line, n);
  if (smi_opt.abort_on_error) abort();
}
