/* stats.c: statistics per arena, rolled up the tree, and process-wide; as a
 * struct, as text and as JSON (sm_stats_text / sm_stats_json), and the report
 * at exit (SLOTMALLOC_STATS=1 or json, SLOTMALLOC_STATS_FILE).
 *
 * Nothing here allocates: a report is counted into a struct on the stack
 * (report_t: the totals and one row per size class), then written through a
 * small stack buffer, straight to a file descriptor or into the caller's
 * buffer. The event counts (slots/counters.h) are bumped on slow paths only. */
#define _GNU_SOURCE /* program_invocation_short_name */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "out.h"
#include "stats.h"
#include "slots/counters.h"
#include "slots/generation.h"
#include "slots/os.h"

/* ---- counting -------------------------------------------------------------------- */

/* Live slots are those with a live generation: exact at any moment, remote
 * frees not yet collected included, and counted 16 at a time. */
void smi_stats_count_block(const smi_block_t *b, sm_stats_t *s) {
  smi_report_t *r = (smi_report_t *)s; /* every caller counts into a report */
  size_t live = smi_block_live(b);
  s->objects_live += live;
  s->bytes_live += live * b->size;
  s->blocks++;
  s->slots += b->nslots;
  if (b->cls < SMI_CLASSES) {
    smi_class_stats_t *c = &r->cls[b->cls];
    c->live += live;
    c->slots += b->nslots;
    c->blocks++;
  }
}

/* One arena's own objects, under its lock. */
static void count_arena(sm_arena_t *a, sm_stats_t *s) {
  smi_lock(&a->lock);
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    if (a->current[cls] != &smi_block_none) smi_stats_count_block(a->current[cls], s);
    for (smi_block_t *b = a->avail[cls].head; b; b = b->next) smi_stats_count_block(b, s);
  }
  for (smi_block_t *b = a->full.head; b; b = b->next) smi_stats_count_block(b, s);
  for (smi_segment_t *g = a->large; g; g = g->large_next) {
    s->objects_live++;
    s->large_objects++;
    s->bytes_live += g->large_size;
    s->large_bytes += g->large_size;
  }
  smi_unlock(&a->lock);
  s->arenas++;
}

static void count_subtree(sm_arena_t *a, sm_stats_t *s) {
  count_arena(a, s);
  for (sm_arena_t *c = a->first_child; c; c = c->next_sibling) count_subtree(c, s);
}

/* The process's resident set from /proc/self/statm (its second field, in
 * pages), read into a stack buffer; 0 if unreadable. Raw system calls
 * (smi_os_read_file), no cancellation points: mallinfo, malloc_trim and
 * sm_arena_stats come here, and a thread with a cancel pending was
 * cancelled inside them (at read(): with the descriptor leaked). */
static size_t rss_bytes(void) {
  char buf[128];
  if (!smi_os_read_file("/proc/self/statm", buf, sizeof buf)) return 0;
  const char *p = buf;
  while (*p && *p != ' ') p++;
  if (!*p) return 0;
  size_t pages = 0;
  for (p++; *p >= '0' && *p <= '9'; p++) pages = pages * 10 + (size_t)(*p - '0');
  return pages * (size_t)sysconf(_SC_PAGESIZE);
}

static uint64_t start_ms; /* when the options were read: the allocator's start-up */

void smi_stats_collect(sm_arena_t *a, smi_report_t *r) {
  memset(r, 0, sizeof *r);
  sm_stats_t *s = &r->s;
  smi_lock(&smi_tree_lock);
  if (a) count_subtree(a, s);
  else {
    smi_heap_each_root(count_subtree, s);
    count_subtree(&smi_orphans, s);
  }
  smi_unlock(&smi_tree_lock);
  if (!a) smi_pool_count_abandoned(s);
  s->bytes_committed = smi_os_committed();
  s->bytes_peak = smi_os_committed_peak();
  s->rss = rss_bytes();
  smi_slow_calls_flush(); /* the calling thread's; other threads' up to 63 each */
  s->slow_calls = smi_count_read(SMI_COUNT_SLOW_CALLS);
  s->remote_frees = smi_count_read(SMI_COUNT_REMOTE_FREES);
  s->blocks_purged = smi_count_read(SMI_COUNT_BLOCKS_PURGED);
  s->segments_mapped = smi_count_read(SMI_COUNT_SEGMENTS_MAPPED);
  s->large_mapped = smi_count_read(SMI_COUNT_LARGE_MAPPED);
  s->giveback_calls = smi_count_read(SMI_COUNT_GIVEBACK_CALLS);
  s->elapsed_ms = start_ms ? smi_now_ms() - start_ms : 0;
}

void sm_arena_stats(sm_arena_t *a, sm_stats_t *out) {
  if (!out) return;
  smi_report_t r;
  smi_stats_collect(a, &r);
  *out = r.s;
}

/* A string as a JSON string's contents. */
static void out_json_str(smi_out_t *o, const char *s) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      smi_out_put(o, e, 2);
    } else if (c < 0x20) {
      smi_out_fmt(o, "\\u%04x", c);
    } else {
      smi_out_put(o, (const char *)&c, 1);
    }
  }
}

/* x / 2^20 with one decimal, as "12.3" */
static void mib(char *out, size_t size, size_t x) {
  size_t tenths = (size_t)(((unsigned __int128)x * 10 + (1u << 19)) >> 20);
  snprintf(out, size, "%zu.%zu", tenths / 10, tenths % 10);
}

static const char *program_name(void) {
  const char *name = program_invocation_short_name;
  return name && *name ? name : "?";
}

/* The per-mille of part in whole (0 when whole is 0). */
static size_t permille(size_t part, size_t whole) {
  return whole ? (size_t)(((unsigned __int128)part * 1000 + whole / 2) / whole) : 0;
}

static void write_text(smi_out_t *o, const smi_report_t *r, bool process) {
  const sm_stats_t *s = &r->s;
  char a[32], b[32], c[32];
  if (process)
    smi_out_fmt(o, "slotmalloc stats (process): %s, pid %ld, %llu.%03llu s since start-up\n", program_name(),
                (long)getpid(), (unsigned long long)(s->elapsed_ms / 1000),
                (unsigned long long)(s->elapsed_ms % 1000));
  else smi_out_fmt(o, "slotmalloc stats (arena): %zu arenas\n", s->arenas);
  smi_out_fmt(o, "  %5s %9s %12s %14s %10s %7s %7s\n", "class", "slot size", "live objects", "live bytes", "slots",
              "blocks", "used");
  for (unsigned k = 0; k < SMI_CLASSES; k++) {
    const smi_class_stats_t *cl = &r->cls[k];
    if (!cl->blocks) continue;
    size_t pm = permille(cl->live, cl->slots);
    smi_out_fmt(o, "  %5u %9u %12zu %14zu %10zu %7zu %4zu.%zu%%\n", k, (unsigned)smi_class_size[k], cl->live,
                cl->live * smi_class_size[k], cl->slots, cl->blocks, pm / 10, pm % 10);
  }
  smi_out_fmt(o, "  large objects:  %zu live, %zu bytes\n", s->large_objects, s->large_bytes);
  smi_out_fmt(o, "  live in all:    %zu objects, %zu bytes; %zu blocks, %zu arenas\n", s->objects_live, s->bytes_live,
              s->blocks, s->arenas);
  mib(a, sizeof a, s->bytes_committed);
  mib(b, sizeof b, s->bytes_peak);
  mib(c, sizeof c, s->rss);
  smi_out_fmt(
      o, "  memory:         committed %zu bytes (%s MiB), peak %zu bytes (%s MiB), resident %zu bytes (%s MiB)\n",
      s->bytes_committed, a, s->bytes_peak, b, s->rss, c);
  smi_out_fmt(
      o,
      "  events:         %zu slow path calls, %zu remote frees collected, %zu blocks purged, %zu segments mapped, "
      "%zu large objects mapped, %zu give-back system calls\n",
      s->slow_calls, s->remote_frees, s->blocks_purged, s->segments_mapped, s->large_mapped, s->giveback_calls);
  if (s->objects_live == 0) smi_out_fmt(o, "  all freed:      yes\n");
  else smi_out_fmt(o, "  all freed:      no, %zu objects (%zu bytes) still live\n", s->objects_live, s->bytes_live);
}

static void write_json(smi_out_t *o, const smi_report_t *r, bool process) {
  const sm_stats_t *s = &r->s;
  smi_out_fmt(o, "{\"scope\":\"%s\",", process ? "process" : "arena");
  if (process) {
    smi_out_put(o, "\"program\":\"", 11);
    out_json_str(o, program_name());
    smi_out_fmt(o, "\",\"pid\":%ld,", (long)getpid());
  }
  smi_out_fmt(o,
              "\"elapsed_ms\":%llu,\"objects_live\":%zu,\"bytes_live\":%zu,\"blocks\":%zu,\"slots\":%zu,"
              "\"large_objects\":%zu,\"large_bytes\":%zu,\"arenas\":%zu,\"bytes_committed\":%zu,\"bytes_peak\":%zu,"
              "\"rss\":%zu,\"slow_calls\":%zu,\"remote_frees\":%zu,\"blocks_purged\":%zu,\"segments_mapped\":%zu,"
              "\"large_mapped\":%zu,\"giveback_calls\":%zu,\"classes\":[",
              (unsigned long long)s->elapsed_ms, s->objects_live, s->bytes_live, s->blocks, s->slots,
              s->large_objects, s->large_bytes, s->arenas, s->bytes_committed, s->bytes_peak, s->rss, s->slow_calls,
              s->remote_frees, s->blocks_purged, s->segments_mapped, s->large_mapped, s->giveback_calls);
  bool first = true;
  for (unsigned k = 0; k < SMI_CLASSES; k++) {
    const smi_class_stats_t *cl = &r->cls[k];
    if (!cl->blocks) continue;
    size_t pm = permille(cl->live, cl->slots);
    smi_out_fmt(
        o,
        "%s{\"class\":%u,\"slot_size\":%u,\"objects_live\":%zu,\"bytes_live\":%zu,\"slots\":%zu,\"blocks\":%zu,"
        "\"used\":%zu.%03zu}",
        first ? "" : ",", k, (unsigned)smi_class_size[k], cl->live, cl->live * smi_class_size[k], cl->slots,
        cl->blocks, pm / 1000, pm % 1000);
    first = false;
  }
  smi_out_fmt(o, "],\"all_freed\":%s}\n", s->objects_live ? "false" : "true");
}

static size_t to_buffer(sm_arena_t *a, char *buf, size_t size, bool json) {
  smi_report_t r;
  smi_stats_collect(a, &r);
  smi_out_t o = SMI_OUT_BUF(buf, buf ? size : 0);
  if (o.size) buf[0] = 0;
  if (json) write_json(&o, &r, !a);
  else write_text(&o, &r, !a);
  return o.n;
}

size_t sm_stats_text(sm_arena_t *a, char *buf, size_t size) { return to_buffer(a, buf, size, false); }
size_t sm_stats_json(sm_arena_t *a, char *buf, size_t size) { return to_buffer(a, buf, size, true); }

/* Callers that write (malloc_stats, the report at exit) hold cancellation
 * off around it (smi_nocancel_begin). */
void smi_stats_write(int fd, bool json) {
  smi_report_t r;
  smi_stats_collect(NULL, &r);
  smi_out_t o = SMI_OUT_FD(fd);
  if (json) write_json(&o, &r, true);
  else write_text(&o, &r, true);
  smi_out_flush(&o);
}

/* ---- where reports at exit go ----------------------------------------------------- */
/* A program may close fd 2 before its exit handlers run (coreutils' sort and ls
 * do): when a report at exit is wanted on stderr, fd 2 is duplicated at
 * start-up to a high descriptor (close-on-exec). Its device and inode are kept,
 * so a descriptor the program closed and reused for something else is never
 * written to. */
static int err_fd = -1;
static dev_t err_dev;
static ino_t err_ino;

void smi_stats_setup(void) {
  start_ms = smi_now_ms();
  if (!smi_opt.stats && !smi_opt.verbose && !smi_opt.leaks) return;
  int fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 100);
  struct stat st;
  if (fd < 0) return;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return;
  }
  err_fd = fd;
  err_dev = st.st_dev;
  err_ino = st.st_ino;
}

int smi_stats_stderr(void) {
  struct stat st;
  if (err_fd >= 0 && fstat(err_fd, &st) == 0 && st.st_dev == err_dev && st.st_ino == err_ino) return err_fd;
  return STDERR_FILENO;
}

static void stats_at_exit(void);

int smi_nocancel_begin(void) {
  int old = PTHREAD_CANCEL_ENABLE;
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
  return old;
}

void smi_nocancel_end(int old) { pthread_setcancelstate(old, &old); }

void smi_stats_at_exit(void) {
  if (!smi_opt.stats && !smi_opt.verbose) return;
  int cancel = smi_nocancel_begin(); /* exit() may run in a thread with a cancel pending */
  stats_at_exit();
  smi_nocancel_end(cancel);
}

static void stats_at_exit(void) {
  bool json = smi_opt.stats == SMI_STATS_JSON;
  if (smi_opt.stats_file) {
    char path[4096];
    int fd = -1;
    if (smi_path_expand(smi_opt.stats_file, path, sizeof path))
      fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      smi_stats_write(fd, json);
      close(fd);
      return;
    }
    char line[512];
    snprintf(line, sizeof line,
             "slotmalloc: cannot open SLOTMALLOC_STATS_FILE=%.300s (errno %d); statistics on stderr\n",
             smi_opt.stats_file, errno);
    smi_out_write(smi_stats_stderr(), line, strlen(line));
  }
  smi_stats_write(smi_stats_stderr(), json);
}
