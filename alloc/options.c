/* options.c: runtime options from SLOTMALLOC_* environment variables, read
 * without allocating (getenv only scans environ). Read at the first heap set-up;
 * read again later if the environment was not there yet (very early preload). */
#define _GNU_SOURCE /* environ */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"
#include "slots/os.h"

smi_options_t smi_opt = {
    .abort_on_error = true,
    .stats = false,
    .verbose = 0,
    .purge_delay_ms = 100,
    .numa = false,
    .large_cache = (size_t)64 << 20,
};

static long read_num(const char *name, long fallback) {
  const char *s = getenv(name);
  if (!s || !*s) return fallback;
  long v = 0;
  bool neg = false;
  if (*s == '-') {
    neg = true;
    s++;
  }
  for (; *s >= '0' && *s <= '9'; s++) v = v * 10 + (*s - '0');
  if (*s == 'y' || *s == 'Y' || *s == 't' || *s == 'T') return 1; /* yes, true */
  if (*s == 'n' || *s == 'N' || *s == 'f' || *s == 'F') return 0; /* no, false */
  return neg ? -v : v;
}

void smi_options_load(void) {
  static bool loaded;
  if (loaded || !environ) return;
  loaded = true;
  smi_opt.abort_on_error = read_num("SLOTMALLOC_ABORT_ON_ERROR", 1) != 0;
  smi_opt.stats = read_num("SLOTMALLOC_STATS", 0) != 0;
  smi_opt.verbose = (int)read_num("SLOTMALLOC_VERBOSE", 0);
  long delay = read_num("SLOTMALLOC_PURGE_DELAY_MS", 100);
  smi_opt.purge_delay_ms = delay < 0 ? 0 : (uint32_t)delay;
  smi_opt.numa = read_num("SLOTMALLOC_NUMA", 0) != 0;
  smi_os_numa_local = smi_opt.numa;
  long cache = read_num("SLOTMALLOC_LARGE_CACHE_MB", 64);
  smi_opt.large_cache = cache < 0 ? 0 : (size_t)cache << 20;
  if (smi_opt.verbose) {
    char line[256];
    snprintf(line, sizeof line,
             "slotmalloc: options abort_on_error=%d stats=%d verbose=%d purge_delay_ms=%u large_cache_mb=%zu "
             "numa=%d\n",
             smi_opt.abort_on_error, smi_opt.stats, smi_opt.verbose, smi_opt.purge_delay_ms,
             smi_opt.large_cache >> 20, smi_opt.numa);
    smi_message(line);
  }
}
