/* prof.c: the heap profiler and the leak report.
 *
 * Sampling (SLOTMALLOC_PROF_SAMPLE=N). Each thread counts down the bytes it
 * allocates; the allocation that reaches zero is sampled, and the next
 * distance is drawn from an exponential distribution of mean N. The sampled
 * bytes are then a Poisson process: an object of s bytes is sampled with
 * probability 1 - exp(-s/N), which google-pprof undoes ("heap_v2/N" in the
 * profile's header) and so does the leak report. N=1 samples every object.
 * The count-down runs in the allocation slow path (smi_prof_count, inline,
 * called by smi_arena_alloc; smi_prof_sample past zero); while profiling is
 * on the direct bins stay empty (smi_arena_set_current), so every allocation
 * takes that path, where pop_profiled pops what the fast path would have. The
 * fast paths of internal.h are the same instructions whether profiling is on
 * or off.
 *
 * A sample is the object's address, its generational handle, its size and
 * its stack. There is no free hook: an object is live exactly while its handle
 * dereferences (a handle never revives: taking it names the block, handle.c).
 *
 * Stacks come from libgcc's _Unwind_Backtrace (DWARF unwind tables: no frame
 * pointers needed). It does not allocate. libgcc_s is not a load-time
 * dependency of the shared library (in every process it would be mapped and
 * relocated for nothing: 84 KiB resident): when profiling is on, the
 * constructor below opens it (prof_dl.c, in the .so only), once, before any
 * stack is taken (never inside malloc). A program linked with
 * libslotmalloc.a links the unwinder in (prof_static.c, in the archive), so
 * one linked fully static has stacks too. A thread-local flag keeps anything
 * under the profiler from being sampled in turn. The allocator's own frames
 * are dropped: those up to smi_arena_alloc's return address, then (shared
 * library) any in the library's code.
 *
 * Memory: the tables are mapped from the OS and grow by remapping; when the
 * sample table fills, samples of dead objects are dropped first.
 *
 * Output, all without allocating (write(2) from stack buffers):
 *   sm_prof_dump / SLOTMALLOC_PROF_FILE  the legacy text heap profile
 *     "heap profile: n: bytes [n: bytes] @ heap_v2/N", one line per stack
 *     "live_n: live_bytes [sampled_n: sampled_bytes] @ pc pc ...", then
 *     "MAPPED_LIBRARIES:" and /proc/self/maps: what google-pprof reads.
 *   SLOTMALLOC_LEAKS=1  objects still live at exit by size class (from the
 *     generation tables: exact), and by allocation site when profiling is on;
 *     on stderr as it was at start-up, or appended to SLOTMALLOC_STATS_FILE.
 *   smi_prof_site  the allocation site of a freed object, for misuse reports. */
#define _GNU_SOURCE /* dladdr, dl_iterate_phdr */
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <unwind.h>

#include "internal.h"
#include "out.h"
#include "stats.h"
#include "slots/generation.h"
#include "slots/os.h"

/* libgcc's _Unwind_Backtrace and _Unwind_GetIP, or false: in the shared
 * library opened by prof_dl.c, in the archive (and every other build of the
 * sources) linked in by prof_static.c. Allocates (dlopen): never inside malloc. */
bool smi_prof_find_unwinder(void **backtrace, void **get_ip);

#define PROF_DEPTH 32      /* frames kept per stack */
#define PROF_WALK 64       /* frames walked at most (the allocator's own included) */
#define LEAK_SITES 10      /* sites in the leak report */
#define LEAK_SITE_FRAMES 4 /* frames of each */
#define MISUSE_FRAMES 6    /* frames in a misuse report */

typedef struct {
  uintptr_t addr; /* the object */
  sm_handle_t h;  /* its handle: the object is live while it dereferences */
  size_t size;    /* bytes asked for (at least 1) */
  uint32_t stack; /* index in stacks */
} prof_sample_t;

typedef struct {
  uint64_t hash;
  uint32_t depth, first;         /* frames[first .. first + depth) */
  uint64_t alloc_n, alloc_bytes; /* every sample taken here */
  uint64_t live_n, live_bytes;   /* scratch: the live ones, counted by tally_live */
} prof_stack_t;

static smi_lock_t prof_lock = SMI_LOCK_INIT; /* everything below; a leaf lock */
static prof_sample_t *samples;
static size_t nsamples, cap_samples;
static prof_stack_t *stacks;
static size_t nstacks, cap_stacks;
static uint32_t *slots; /* hash index of stacks: stack index + 1, 0 empty */
static size_t cap_slots;
static uintptr_t *frames;
static size_t nframes, cap_frames;
typedef struct {
  uintptr_t lo, hi;
} range_t;
static range_t self_code, unwind_code; /* see find_code */
/* The unwinder, found by find_unwinder (NULL: no stacks). */
static _Unwind_Reason_Code (*unwind_backtrace)(_Unwind_Trace_Fn, void *);
static _Unwind_Ptr (*unwind_get_ip)(struct _Unwind_Context *);
static _Atomic int ranges_known; /* 0, 1 being found, 2 found: self_code and unwind_code */

__thread uint64_t smi_prof_left; /* bytes before this thread's next sample (internal.h) */
static __thread uint64_t prof_rng;
static __thread bool prof_armed; /* smi_prof_left was drawn */
static __thread bool prof_busy;  /* inside the profiler: nothing is sampled */

void smi_prof_after_fork(bool *mine) {
  int finding = 1; /* a thread the child does not have was finding the code ranges: look again */
  atomic_compare_exchange_strong(&ranges_known, &finding, 0);
  if (!smi_lock_orphaned(&prof_lock, mine)) return;
  /* a thread the child does not have was changing the tables: start afresh */
  nsamples = nstacks = nframes = 0;
  if (slots) memset(slots, 0, cap_slots * sizeof *slots);
}

/* ---- numbers, without libm -------------------------------------------------- */

static uint64_t rng_next(void) { /* xorshift64* */
  uint64_t x = prof_rng;
  if (!x) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    x = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uintptr_t)&prof_rng;
    x = x ? x : 1;
  }
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  prof_rng = x;
  return x * 0x2545F4914F6CDD1DULL;
}

#define LN2 0.6931471805599453

/* ln(u) for u > 0 normal: u = m 2^e, m in [1, 2); ln m = 2 atanh((m-1)/(m+1)),
 * whose series converges fast for (m-1)/(m+1) < 1/3 (relative error < 1e-7). */
static double ln(double u) {
  uint64_t bits;
  memcpy(&bits, &u, sizeof bits);
  int e = (int)((bits >> 52) & 0x7ff) - 1023;
  bits = (bits & (((uint64_t)1 << 52) - 1)) | ((uint64_t)1023 << 52);
  double m;
  memcpy(&m, &bits, sizeof m);
  double z = (m - 1) / (m + 1), z2 = z * z;
  double s = z * (1 + z2 * (1.0 / 3 + z2 * (1.0 / 5 + z2 * (1.0 / 7 + z2 * (1.0 / 9 + z2 * (1.0 / 11 + z2 / 13))))));
  return 2 * s + e * LN2;
}

/* 1 - exp(-x) for x >= 0, accurate also for tiny x. */
static double one_minus_exp_neg(double x) {
  if (x < 1e-3) return x * (1 - x / 2 * (1 - x / 3));
  if (x > 40) return 1;
  int k = (int)(x / LN2);
  double r = x - k * LN2, t = 1, s = 1; /* e^-r, r in [0, ln 2), by its series */
  for (int i = 1; i < 16; i++) {
    t *= -r / i;
    s += t;
  }
  while (k-- > 0) s *= 0.5;
  return 1 - s;
}

/* A distance to the next sample: exponential of mean `mean`, at least 1. */
static uint64_t draw(size_t mean) {
  double u = (double)((rng_next() >> 11) + 1) * 0x1p-53; /* (0, 1] */
  double d = -ln(u) * (double)mean;
  return d >= 0x1p62 ? (uint64_t)1 << 62 : (uint64_t)d + 1;
}

/* The unbiased estimate of objects (and bytes) a line of n sampled objects of
 * `bytes` in all stands for: pprof's heap_v2 scaling. */
static double scale(uint64_t n, uint64_t bytes) {
  size_t rate = smi_opt.prof_sample;
  if (!n || rate <= 1) return 1;
  double p = one_minus_exp_neg((double)bytes / (double)n / (double)rate);
  return p > 0 ? 1 / p : 1;
}

/* ---- tables ------------------------------------------------------------------ */

/* Grows a table of *cap elements of elem bytes to hold want (doubling). */
static bool grow(void **tab, size_t *cap, size_t elem, size_t want) {
  if (want <= *cap) return true;
  size_t ncap = *cap ? *cap : 1024;
  while (ncap < want) ncap *= 2;
  void *n = smi_os_map_aligned(ncap * elem, SMI_OS_PAGE);
  if (!n) return false;
  if (*tab) {
    memcpy(n, *tab, *cap * elem);
    smi_os_unmap(*tab, *cap * elem);
  }
  *tab = n;
  *cap = ncap;
  return true;
}

static uint64_t hash_frames(const uintptr_t *pcs, uint32_t depth) {
  uint64_t h = 0xcbf29ce484222325ULL ^ depth;
  for (uint32_t i = 0; i < depth; i++) h = (h ^ pcs[i]) * 0x100000001b3ULL;
  return h ^ (h >> 29);
}

/* The slot of the index where the stack of this hash and these frames is, or
 * the empty slot where it goes. */
static size_t probe(uint64_t h, const uintptr_t *pcs, uint32_t depth) {
  size_t mask = cap_slots - 1;
  for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
    uint32_t s = slots[i];
    if (!s) return i;
    const prof_stack_t *st = &stacks[s - 1];
    if (st->hash == h && st->depth == depth && !memcmp(frames + st->first, pcs, depth * sizeof *pcs)) return i;
  }
}

/* The index of this stack in stacks, added if new; UINT32_MAX if out of memory. */
static uint32_t intern(const uintptr_t *pcs, uint32_t depth) {
  if ((nstacks + 1) * 2 > cap_slots) { /* the index at most half full: rebuild it bigger */
    size_t ncap = cap_slots ? cap_slots * 2 : 4096;
    uint32_t *n = smi_os_map_aligned(ncap * sizeof *n, SMI_OS_PAGE);
    if (!n) return UINT32_MAX;
    if (slots) smi_os_unmap(slots, cap_slots * sizeof *slots);
    slots = n;
    cap_slots = ncap;
    for (size_t k = 0; k < nstacks; k++)
      slots[probe(stacks[k].hash, frames + stacks[k].first, stacks[k].depth)] = (uint32_t)k + 1;
  }
  uint64_t h = hash_frames(pcs, depth);
  size_t i = probe(h, pcs, depth);
  if (slots[i]) return slots[i] - 1;
  if (!grow((void **)&stacks, &cap_stacks, sizeof *stacks, nstacks + 1) ||
      !grow((void **)&frames, &cap_frames, sizeof *frames, nframes + depth))
    return UINT32_MAX;
  prof_stack_t *st = &stacks[nstacks];
  memset(st, 0, sizeof *st);
  st->hash = h;
  st->depth = depth;
  st->first = (uint32_t)nframes;
  memcpy(frames + nframes, pcs, depth * sizeof *pcs);
  nframes += depth;
  slots[i] = (uint32_t)++nstacks;
  return (uint32_t)(nstacks - 1);
}

/* Room for one more sample: drop the dead ones, and grow if half are live. */
static bool make_room(void) {
  if (nsamples < cap_samples) return true;
  size_t kept = 0;
  for (size_t i = 0; i < nsamples; i++)
    if (sm_deref(samples[i].h)) samples[kept++] = samples[i];
  nsamples = kept;
  if (kept * 2 <= cap_samples && cap_samples) return true;
  return grow((void **)&samples, &cap_samples, sizeof *samples, nsamples + 1);
}

/* ---- stacks ------------------------------------------------------------------- */

static bool in_range(range_t r, uintptr_t pc) { return pc >= r.lo && pc < r.hi; }

typedef struct {
  bool first;           /* the first object listed is the program */
  range_t self, unwind; /* found so far */
} find_t;

/* The code of the library and of libgcc's unwinder, each when it is a shared
 * object of its own (linked into the program, it is mixed with the program's
 * code: no range). */
static int find_code(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  find_t *f = arg;
  bool main_program = f->first;
  f->first = false;
  if (main_program) return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
    range_t r = {info->dlpi_addr + ph->p_vaddr, info->dlpi_addr + ph->p_vaddr + ph->p_memsz};
    if (in_range(r, (uintptr_t)&find_code)) f->self = r;
    if (in_range(r, (uintptr_t)unwind_backtrace)) f->unwind = r;
  }
  return 0;
}

/* Found once, outside prof_lock: dl_iterate_phdr takes the loader's lock, whose
 * holder may be allocating (and so waiting for prof_lock). */
static bool find_ranges(void) {
  int state = atomic_load_explicit(&ranges_known, memory_order_acquire);
  if (state == 2) return true;
  /* one thread looks; others do not sample meanwhile (waiting could deadlock) */
  if (state == 1 || !atomic_compare_exchange_strong(&ranges_known, &state, 1)) return false;
  find_t f = {.first = true};
  dl_iterate_phdr(find_code, &f);
  self_code = f.self;
  unwind_code = f.unwind;
  atomic_store_explicit(&ranges_known, 2, memory_order_release);
  return true;
}

typedef struct {
  uintptr_t pcs[PROF_WALK];
  uint32_t n;
} walk_t;

static _Unwind_Reason_Code on_frame(struct _Unwind_Context *ctx, void *arg) {
  walk_t *w = arg;
  uintptr_t ip = unwind_get_ip(ctx);
  if (!ip) return _URC_END_OF_STACK;
  w->pcs[w->n++] = ip;
  return w->n == PROF_WALK ? _URC_END_OF_STACK : _URC_NO_REASON;
}

/* The caller's stack from the frame that returns to ret (smi_arena_alloc's
 * return address), less the library's own frames; its depth. */
static uint32_t capture(uintptr_t *out, uintptr_t ret) {
  walk_t w;
  w.n = 0;
  if (unwind_backtrace) unwind_backtrace(on_frame, &w);
  uint32_t i = 0;
  while (i < w.n && w.pcs[i] != ret) i++;
  if (i == w.n) i = 0; /* not found: keep all but the library's own */
  while (i < w.n && in_range(self_code, w.pcs[i])) i++;
  uint32_t n = 0;
  for (; i < w.n && n < PROF_DEPTH; i++) out[n++] = w.pcs[i];
  return n;
}

/* ---- sampling ------------------------------------------------------------------- */

/* Stacks are taken once this library's constructor ran: in a program linked
 * fully static (cc -static, libslotmalloc.a) the first allocations come from
 * inside libc's start-up (_dl_non_dynamic_init), before the unwinder can find
 * any unwind table, and libgcc aborts in _Unwind_Backtrace
 * (uw_init_context_1). The few objects allocated before are not sampled. */
static _Atomic bool unwind_ready;

/* The unwinder; its functions stay NULL if there is none. */
static void find_unwinder(void) {
  void *bt, *ip;
  prof_busy = true; /* dlopen allocates */
  if (smi_prof_find_unwinder(&bt, &ip)) {
    unwind_backtrace = (_Unwind_Reason_Code(*)(_Unwind_Trace_Fn, void *))bt;
    unwind_get_ip = (_Unwind_Ptr(*)(struct _Unwind_Context *))ip;
  }
  prof_busy = false;
}

__attribute__((constructor)) static void prof_unwind_ready(void) {
  smi_options_load(); /* (once; nothing may have allocated yet) */
  if (smi_opt.prof_sample) find_unwinder();
  atomic_store_explicit(&unwind_ready, true, memory_order_release);
}

void smi_prof_sample(void *p, size_t size, const void *ret) {
  if (prof_busy || !p) return;
  size_t rate = smi_opt.prof_sample;
  uint64_t s = size ? size : 1;
  if (rate > 1) {
    if (!prof_armed) {
      smi_prof_left = draw(rate);
      prof_armed = true;
    }
    if (smi_prof_left > s) {
      smi_prof_left -= s;
      return;
    }
    smi_prof_left = draw(rate); /* counted from this object's end: the process has no memory */
  }
  /* Not an allocation by the unwinder itself (libgcc's init_object, under its
   * object lock): unwinding again would take that lock twice. */
  if (!atomic_load_explicit(&unwind_ready, memory_order_acquire) || !find_ranges() ||
      in_range(unwind_code, (uintptr_t)ret))
    return;
  prof_busy = true;
  uintptr_t pcs[PROF_DEPTH];
  uint32_t depth = capture(pcs, (uintptr_t)ret);
  sm_handle_t h = sm_handle_of(p);
  if (h) {
    smi_lock(&prof_lock);
    uint32_t st = intern(pcs, depth);
    if (st != UINT32_MAX) {
      stacks[st].alloc_n++;
      stacks[st].alloc_bytes += s;
      if (make_room()) samples[nsamples++] = (prof_sample_t){(uintptr_t)p, h, (size_t)s, st};
    }
    smi_unlock(&prof_lock);
  }
  prof_busy = false;
}

/* Counts the live samples of each stack into live_n and live_bytes; under prof_lock. */
static void tally_live(uint64_t *n, uint64_t *bytes) {
  *n = *bytes = 0;
  for (size_t k = 0; k < nstacks; k++) stacks[k].live_n = stacks[k].live_bytes = 0;
  for (size_t i = 0; i < nsamples; i++) {
    if (!sm_deref(samples[i].h)) continue;
    prof_stack_t *st = &stacks[samples[i].stack];
    st->live_n++;
    st->live_bytes += samples[i].size;
    ++*n;
    *bytes += samples[i].size;
  }
}

/* A code address as "name+0xoff" (dladdr: exported symbols only; it does not
 * allocate) or "object+0xoff", after the raw address. A return address is
 * looked up one byte back, in the call. */
static void out_frame(smi_out_t *o, uintptr_t pc) {
  smi_out_hex(o, pc);
  Dl_info info;
  if (!dladdr((void *)(pc - 1), &info)) return;
  smi_out_str(o, " (");
  if (info.dli_sname && info.dli_saddr) {
    smi_out_str(o, info.dli_sname);
    smi_out_str(o, "+");
    smi_out_hex(o, pc - (uintptr_t)info.dli_saddr);
  } else if (info.dli_fname && info.dli_fname[0]) {
    const char *base = info.dli_fname;
    for (const char *c = base; *c; c++)
      if (*c == '/') base = c + 1;
    smi_out_str(o, base);
    smi_out_str(o, "+");
    smi_out_hex(o, pc - (uintptr_t)info.dli_fbase);
  } else {
    smi_out_str(o, "?");
  }
  smi_out_str(o, ")");
}

/* ---- the heap profile ------------------------------------------------------------------ */

static void write_profile(smi_out_t *o) {
  smi_lock(&prof_lock);
  uint64_t live_n, live_bytes, all_n = 0, all_bytes = 0;
  tally_live(&live_n, &live_bytes);
  for (size_t k = 0; k < nstacks; k++) {
    all_n += stacks[k].alloc_n;
    all_bytes += stacks[k].alloc_bytes;
  }
  smi_out_str(o, "heap profile: ");
  smi_out_dec(o, live_n);
  smi_out_str(o, ": ");
  smi_out_dec(o, live_bytes);
  smi_out_str(o, " [");
  smi_out_dec(o, all_n);
  smi_out_str(o, ": ");
  smi_out_dec(o, all_bytes);
  smi_out_str(o, "] @ heap_v2/");
  smi_out_dec(o, smi_opt.prof_sample);
  smi_out_str(o, "\n");
  for (size_t k = 0; k < nstacks; k++) {
    const prof_stack_t *st = &stacks[k];
    if (!st->depth) continue;
    smi_out_dec(o, st->live_n);
    smi_out_str(o, ": ");
    smi_out_dec(o, st->live_bytes);
    smi_out_str(o, " [");
    smi_out_dec(o, st->alloc_n);
    smi_out_str(o, ": ");
    smi_out_dec(o, st->alloc_bytes);
    smi_out_str(o, "] @");
    /* pprof takes one from every address but the first: the first is put
     * back into its call as well */
    for (uint32_t f = 0; f < st->depth; f++) {
      smi_out_str(o, " ");
      smi_out_hex(o, frames[st->first + f] - (f == 0));
    }
    smi_out_str(o, "\n");
  }
  smi_unlock(&prof_lock);
  smi_out_str(o, "\nMAPPED_LIBRARIES:\n");
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char buf[1024]; /* small: the caller's stack may be 16 KiB (PTHREAD_STACK_MIN) */
  ssize_t r;
  while ((r = read(fd, buf, sizeof buf)) > 0) smi_out_put(o, buf, (size_t)r);
  close(fd);
}

int smi_prof_write(const char *pattern) {
  if (!pattern) return EINVAL;
  if (!smi_opt.prof_sample) return EINVAL;
  char path[4096];
  if (!smi_path_expand(pattern, path, sizeof path)) return ENAMETOOLONG;
  /* open, write and read are cancellation points, and part of the profile is
   * written under prof_lock: a cancel acting there left the lock held (every
   * sampled allocation of every thread then waited for it) and the file open */
  int cancel = smi_nocancel_begin();
  bool was_busy = prof_busy;
  prof_busy = true;
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int err = 0;
  if (fd < 0) {
    err = errno;
  } else {
    smi_out_t o = SMI_OUT_FD(fd);
    write_profile(&o);
    smi_out_flush(&o);
    if (o.failed) err = EIO;
    if (close(fd) != 0 && !err) err = errno;
  }
  prof_busy = was_busy;
  smi_nocancel_end(cancel);
  return err;
}

/* ---- the leak report ---------------------------------------------------------------------- */

/* Live objects by size class, from every block's generations (exact: what is
 * in arenas, abandoned by exited threads and remote frees not yet collected
 * alike), and large objects from the segment table. */
static void count_live(uint64_t *n, uint64_t *bytes, uint64_t *large_n, uint64_t *large_bytes) {
  /* Large objects from their arenas' lists, under the arenas' locks: a thread
   * still running at exit may free or move one, and its header (its size)
   * goes with its mapping (read here from the segment table, the report
   * crashed: 8 of 200 runs of two threads reallocating large objects). */
  smi_report_t r;
  smi_stats_collect(NULL, &r);
  *large_n = r.s.large_objects;
  *large_bytes = r.s.large_bytes;
  uint32_t ids = smi_segment_ids_used();
  for (uint32_t id = 0; id < ids; id++) {
    smi_segslot_t *slot = &smi_segtab[id];
    smi_segment_t *seg = atomic_load_explicit(&slot->seg, memory_order_acquire);
    if (!seg || slot->is_large) continue; /* (a slot segment's header stays mapped) */
    for (uint32_t k = 0; k < seg->nblocks; k++) {
      const smi_block_t *b = &seg->blocks[k];
      uint32_t ns = atomic_load_explicit((_Atomic uint32_t *)&b->nslots, memory_order_acquire);
      if (!ns || !(b->flags & SMI_BLOCK_FORMATTED) || (b->flags & SMI_BLOCK_DECOMMITTED) || b->cls >= SMI_CLASSES)
        continue;
      /* (the table as loaded bounds the count: a re-cut may race this) */
      uint8_t *gens = __atomic_load_n(&b->gens, __ATOMIC_RELAXED);
      size_t len = smi_gens_len(ns), room = (size_t)(smi_block_end(b) - gens);
      size_t live = smi_gens_count_live(gens, len < room ? len : room);
      n[b->cls] += live;
      bytes[b->cls] += (uint64_t)live * b->size;
    }
  }
}

typedef struct {
  uint64_t bytes, n; /* estimated */
  uint32_t depth;
  uintptr_t pcs[LEAK_SITE_FRAMES];
} site_t;

/* The top sites by estimated live bytes, copied out under prof_lock; printed
 * after it (dladdr takes the loader's lock, whose holder may be allocating). */
static void leak_sites(smi_out_t *o) {
  site_t top[LEAK_SITES];
  int ntop = 0;
  uint64_t live_n, live_bytes;
  smi_lock(&prof_lock);
  tally_live(&live_n, &live_bytes);
  uint64_t last = UINT64_MAX;
  size_t last_k = SIZE_MAX;
  for (; ntop < LEAK_SITES; ntop++) {
    /* the next site by estimated bytes, after the last one taken (ties by index) */
    size_t best = SIZE_MAX;
    uint64_t best_bytes = 0;
    for (size_t k = 0; k < nstacks; k++) {
      const prof_stack_t *st = &stacks[k];
      if (!st->live_n) continue;
      uint64_t est = (uint64_t)((double)st->live_bytes * scale(st->live_n, st->live_bytes));
      bool after = est < last || (est == last && k > last_k);
      if (after && (best == SIZE_MAX || est > best_bytes)) {
        best = k;
        best_bytes = est;
      }
    }
    if (best == SIZE_MAX) break;
    const prof_stack_t *st = &stacks[best];
    site_t *t = &top[ntop];
    t->bytes = best_bytes;
    t->n = (uint64_t)((double)st->live_n * scale(st->live_n, st->live_bytes) + 0.5);
    t->depth = st->depth < LEAK_SITE_FRAMES ? st->depth : LEAK_SITE_FRAMES;
    memcpy(t->pcs, frames + st->first, t->depth * sizeof *t->pcs);
    last = best_bytes;
    last_k = best;
  }
  smi_unlock(&prof_lock);
  smi_out_str(o, "slotmalloc: by allocation site (1 in ");
  smi_out_dec(o, smi_opt.prof_sample);
  smi_out_str(o, " bytes sampled; ");
  smi_out_dec(o, live_n);
  smi_out_str(o, " live samples; estimated totals):\n");
  for (int i = 0; i < ntop; i++) {
    smi_out_str(o, "slotmalloc:   ");
    smi_out_dec(o, top[i].bytes);
    smi_out_str(o, " bytes in ");
    smi_out_dec(o, top[i].n);
    smi_out_str(o, " objects at");
    for (uint32_t f = 0; f < top[i].depth; f++) {
      smi_out_str(o, f ? " <- " : " ");
      out_frame(o, top[i].pcs[f]);
    }
    smi_out_str(o, "\n");
  }
}

static void leak_report(int fd) {
  uint64_t n[SMI_CLASSES] = {0}, bytes[SMI_CLASSES] = {0}, large_n = 0, large_bytes = 0;
  count_live(n, bytes, &large_n, &large_bytes);
  uint64_t tn = large_n, tb = large_bytes;
  for (unsigned c = 0; c < SMI_CLASSES; c++) {
    tn += n[c];
    tb += bytes[c];
  }
  smi_out_t o = SMI_OUT_FD(fd);
  smi_out_str(&o, "slotmalloc: leak report (pid ");
  smi_out_dec(&o, (uint64_t)getpid());
  smi_out_str(&o, "): ");
  smi_out_dec(&o, tn);
  smi_out_str(&o, " objects, ");
  smi_out_dec(&o, tb);
  smi_out_str(&o, " bytes live at exit\n");
  for (unsigned c = 0; c < SMI_CLASSES; c++) {
    if (!n[c]) continue;
    smi_out_str(&o, "slotmalloc:   class ");
    smi_out_dec(&o, smi_class_size[c]);
    smi_out_str(&o, " B: ");
    smi_out_dec(&o, n[c]);
    smi_out_str(&o, " objects, ");
    smi_out_dec(&o, bytes[c]);
    smi_out_str(&o, " bytes\n");
  }
  if (large_n) {
    smi_out_str(&o, "slotmalloc:   large: ");
    smi_out_dec(&o, large_n);
    smi_out_str(&o, " objects, ");
    smi_out_dec(&o, large_bytes);
    smi_out_str(&o, " bytes\n");
  }
  if (smi_opt.prof_sample && tn) leak_sites(&o);
  smi_out_flush(&o);
}

void smi_prof_at_exit(void) {
  if (!smi_opt.prof_sample && !smi_opt.leaks) return;
  int cancel = smi_nocancel_begin(); /* exit() may run in a thread with a cancel pending */
  prof_busy = true;
  if (smi_opt.prof_sample && smi_opt.prof_file) {
    int err = smi_prof_write(smi_opt.prof_file);
    if (err) smi_message("slotmalloc: could not write the heap profile (SLOTMALLOC_PROF_FILE)\n");
  }
  if (smi_opt.leaks) {
    int err_fd = smi_stats_stderr(), fd = err_fd; /* stderr as at start-up (stats.c) */
    char path[4096];
    if (smi_opt.stats_file && smi_path_expand(smi_opt.stats_file, path, sizeof path)) {
      int f = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (f >= 0) fd = f;
    }
    leak_report(fd);
    if (fd != err_fd) close(fd);
  }
  prof_busy = false;
  smi_nocancel_end(cancel);
}

/* ---- the site of a freed object -------------------------------------------------------------- */

/* The generation and epoch fields of a small object's handle (handle.c's layout). */
static uint8_t handle_gen(sm_handle_t h) { return (uint8_t)(h >> 1); }
static uint32_t handle_epoch(sm_handle_t h) { return (uint32_t)(h >> 9) & (((uint32_t)1 << SMI_EPOCH_BITS) - 1); }

/* Was sample s the last object at its address, freed once since? Small
 * objects: the slot's generation is one past the handle's, in the same epoch.
 * Large ones: the address only. */
static bool freed_once(const prof_sample_t *s) {
  uintptr_t u = s->addr;
  if (smi_map_of(u) != SMI_MAP_SLOTS) return true;
  const smi_block_t *b = smi_block_at(smi_segment_at(u), u);
  uint32_t ns = atomic_load_explicit((_Atomic uint32_t *)&b->nslots, memory_order_acquire);
  if (!ns) return false;
  uint32_t i = smi_slot_index(b, u);
  _Atomic uint8_t *gp = i < ns ? smi_gen_at(b, i) : NULL;
  if (!gp) return false;
  uint8_t g = atomic_load_explicit(gp, memory_order_relaxed);
  uint32_t e = atomic_load_explicit(&b->epoch, memory_order_relaxed) & (((uint32_t)1 << SMI_EPOCH_BITS) - 1);
  return e == handle_epoch(s->h) && g == smi_gen_freed(handle_gen(s->h));
}

size_t smi_prof_site(const void *p, char *out, size_t room) {
  if (!samples || prof_busy) return 0;
  /* not if this thread holds the lock already (a report from a signal handler) */
  uintptr_t expect = 0;
  if (!atomic_compare_exchange_strong_explicit(&prof_lock.holder, &expect, smi_lock_me(), memory_order_acquire,
                                               memory_order_relaxed)) {
    if (smi_lock_holder_of(expect) == smi_lock_me()) return 0;
    smi_lock(&prof_lock);
  }
  const prof_sample_t *found = NULL;
  for (size_t i = nsamples; i-- > 0;) { /* the latest first */
    const prof_sample_t *s = &samples[i];
    if (s->addr == (uintptr_t)p && !sm_deref(s->h) && freed_once(s)) {
      found = s;
      break;
    }
  }
  size_t n = 0;
  if (found && stacks[found->stack].depth) {
    const prof_stack_t *st = &stacks[found->stack];
    static const char head[] = " (allocated at";
    if (room > sizeof head + 2) {
      memcpy(out, head, sizeof head - 1);
      n = sizeof head - 1;
      for (uint32_t f = 0; f < st->depth && f < MISUSE_FRAMES; f++) {
        char frame[20]; /* " 0x" and 16 digits, whole frames only */
        smi_out_t o = SMI_OUT_BUF(frame, sizeof frame);
        smi_out_put(&o, " ", 1);
        smi_out_hex(&o, frames[st->first + f]);
        if (n + o.n + 1 >= room) break;
        memcpy(out + n, frame, o.n);
        n += o.n;
      }
      out[n++] = ')';
    }
  }
  smi_unlock(&prof_lock);
  return n;
}
