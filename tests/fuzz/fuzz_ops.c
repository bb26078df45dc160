/* fuzz_ops.c: an op-stream fuzzer of slotmalloc with a shadow model.
 *
 * The input bytes decode into a stream of operations over the public surface:
 * the sm_ malloc family, the standard names (compiled from preload/override.c
 * and renamed fz_* so that libFuzzer and the sanitizers keep their own malloc),
 * nested arenas, handles, sm_collect, deliberate misuse, and (FUZZ_THREADS > 1)
 * cross-thread frees, closes and true races between threads.
 *
 * All model logic runs on the calling thread (libFuzzer's); every library call
 * is executed on the thread the input chose (or the arena's allocating thread,
 * as the README's thread rules require) through a tiny call dispatcher. The
 * model knows every object's size, alignment, content pattern, arena and
 * handle, and checks after every operation; any failed check prints what op
 * and what object, then abort()s.
 *
 * Built two ways: with libFuzzer (tests/fuzz/run.sh), and with
 * -DFUZZ_REPLAY_MAIN as a plain program that runs files or directories of
 * inputs through the same target (the ctest fuzz_corpus test). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "slotmalloc.h"

#include "fuzz_calls.h"

/* ---- failure ------------------------------------------------------------------ */

static unsigned long long op_total; /* operations executed, all inputs */
static unsigned long op_index;      /* operation number in this input */
static char op_desc[200];           /* what the current operation is */
static int saved_stderr = -1;       /* while stderr is captured */
static bool trace;                  /* FUZZ_TRACE=1: print every operation */

static void restore_stderr(void);

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...) {
  restore_stderr();
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nslotmalloc-fuzz: CHECK FAILED at op #%lu (%s): %s\n", op_index, op_desc, msg);
  fflush(stderr);
  abort();
}
#define CHECK(cond, ...)            \
  do {                              \
    if (!(cond)) fail(__VA_ARGS__); \
  } while (0)

/* ---- stderr capture (misuse reports) ---------------------------------------------
 * Around the calls that may report, fd 2 goes to a file; the text is checked
 * against what the model expects. FUZZ_NO_CAPTURE=1 turns it off (then the
 * report lines are not checked), useful when replaying a crash. */
static int cap_fd = -1;
static bool cap_enabled;
static char cap_buf[8192];

static void capture_begin(void) {
  if (!cap_enabled) return;
  if (ftruncate(cap_fd, 0) != 0 || lseek(cap_fd, 0, SEEK_SET) != 0) return;
  saved_stderr = dup(2);
  dup2(cap_fd, 2);
}

static void restore_stderr(void) {
  if (saved_stderr >= 0) {
    dup2(saved_stderr, 2);
    close(saved_stderr);
    saved_stderr = -1;
  }
}

/* Ends the capture; returns the text (NULL when capture is off). */
static const char *capture_end(void) {
  if (!cap_enabled) return NULL;
  restore_stderr();
  ssize_t n = pread(cap_fd, cap_buf, sizeof cap_buf - 1, 0);
  cap_buf[n > 0 ? n : 0] = 0;
  return cap_buf;
}

/* The captured text must be exactly the expected lines: each line starts with
 * "slotmalloc: " then one of the kinds allowed, then the address. */
enum { R_DOUBLE = 1, R_INVALID = 2, R_REALLOC = 4 };
static void expect_reports(const char *text, int min_lines, int max_lines, int kinds, const void *addr) {
  if (!text) return;
  int lines = 0;
  const char *s = text;
  while (*s) {
    const char *e = strchr(s, '\n');
    if (!e) fail("report without newline: '%s'", s);
    char line[256];
    size_t n = (size_t)(e - s) < sizeof line - 1 ? (size_t)(e - s) : sizeof line - 1;
    memcpy(line, s, n);
    line[n] = 0;
    s = e + 1;
    lines++;
    const char *rest;
    int kind = 0;
    if (!strncmp(line, "slotmalloc: double free of 0x", 29)) kind = R_DOUBLE, rest = line + 27;
    else if (!strncmp(line, "slotmalloc: invalid free of 0x", 30)) kind = R_INVALID, rest = line + 28;
    else if (!strncmp(line, "slotmalloc: invalid realloc of 0x", 33)) kind = R_REALLOC, rest = line + 31;
    else fail("unexpected stderr line: '%s'", line);
    if (!(kind & kinds)) fail("report of the wrong kind: '%s' (expected kinds mask %d)", line, kinds);
    if (addr) {
      char want[40];
      snprintf(want, sizeof want, "%p", addr);
      size_t wl = strlen(want);
      if (strncmp(rest, want, wl) || (rest[wl] != 0 && rest[wl] != ' '))
        fail("report names the wrong address: '%s' (expected %s)", line, want);
    }
  }
  if (lines < min_lines || lines > max_lines)
    fail("expected %d..%d report lines, got %d: '%s'", min_lines, max_lines, lines, text);
}

/* ---- the model ---------------------------------------------------------------------- */

#define MAXO 320        /* live objects */
#define MAXA 20         /* user arenas (struct still referenced) */
#define NSTALE 64       /* stale handles remembered */
#define FULL_FILL 65536 /* objects up to this size are filled whole */
#define LIVE_BUDGET ((size_t)160 << 20)
#define SWEEP_EVERY 16

enum { OPEN, CLOSED, MERGED };

typedef struct {
  uint8_t *p;
  size_t req, usable, align;
  uint64_t id;
  int arena; /* model arena index */
  sm_handle_t h;
} obj_t;

typedef struct {
  bool used, root;
  sm_arena_t *a;
  int parent; /* model index, -1 for none (closed, merged, or a root) */
  int refs, state, owner;
  size_t limit;
} marena_t;

static obj_t obj[MAXO];
static int nobj;
static marena_t ar[NT + MAXA];
/* The arena plain malloc was last pointed at on each thread (enter, merge): the
 * library's smi_tls_cur, except that the library may have gone back to the
 * root by itself once that arena closed (the model does not guess when). */
static int cur[NT];
static sm_handle_t stale[NSTALE];
static int nstale;
static uint64_t next_id = 1;
static size_t live_bytes;
static uint32_t class_edge[96];
static int nthreads = NT; /* threads in use by this input */

static inline uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}
static inline uint64_t pat_word(uint64_t id, size_t word) { return mix(id * 0x9E3779B97F4A7C15ULL + word); }
static inline uint8_t pat(uint64_t id, size_t off) { return (uint8_t)(pat_word(id, off >> 3) >> ((off & 7) * 8)); }

static void fill_range(uint8_t *p, uint64_t id, size_t lo, size_t hi) {
  size_t off = lo;
  for (; off < hi && (off & 7); off++) p[off] = pat(id, off);
  for (; off + 8 <= hi; off += 8) {
    uint64_t w = pat_word(id, off >> 3);
    memcpy(p + off, &w, 8);
  }
  for (; off < hi; off++) p[off] = pat(id, off);
}

/* First bad offset in [lo,hi), or SIZE_MAX. zero: expect zeros instead. */
static size_t check_range(const uint8_t *p, uint64_t id, size_t lo, size_t hi, bool zero) {
  size_t off = lo;
  for (; off < hi && (off & 7); off++)
    if (p[off] != (zero ? 0 : pat(id, off))) return off;
  for (; off + 8 <= hi; off += 8) {
    uint64_t w, want = zero ? 0 : pat_word(id, off >> 3);
    memcpy(&w, p + off, 8);
    if (w != want) break;
  }
  for (; off < hi; off++)
    if (p[off] != (zero ? 0 : pat(id, off))) return off;
  return SIZE_MAX;
}

/* The regions of an object that carry its pattern: all of it up to FULL_FILL,
 * else its first and last 4 KiB and 64 bytes at every 64 KiB. */
typedef void (*region_fn)(uint8_t *p, uint64_t id, size_t lo, size_t hi, void *ctx);
static void for_regions(size_t req, size_t limit, region_fn fn, uint8_t *p, uint64_t id, void *ctx) {
  if (limit > req) limit = req;
#define REGION(lo, hi)                                  \
  do {                                                  \
    size_t l_ = (lo), h_ = (hi) < limit ? (hi) : limit; \
    if (l_ < h_) fn(p, id, l_, h_, ctx);                \
  } while (0)
  if (req <= FULL_FILL) {
    REGION(0, req);
    return;
  }
  REGION(0, 4096);
  for (size_t k = 65536; k < req - 4096; k += 65536) REGION(k, k + 64);
  REGION(req - 4096, req);
#undef REGION
}

static void fill_cb(uint8_t *p, uint64_t id, size_t lo, size_t hi, void *ctx) {
  (void)ctx;
  fill_range(p, id, lo, hi);
}

typedef struct {
  const char *what;
  const obj_t *o;
  bool zero;
} check_ctx;

static void check_cb(uint8_t *p, uint64_t id, size_t lo, size_t hi, void *vctx) {
  check_ctx *c = vctx;
  size_t bad = check_range(p, id, lo, hi, c->zero);
  if (bad != SIZE_MAX)
    fail("%s: object id %llu at %p (size %zu, align %zu, arena %d) corrupted at offset %zu: 0x%02x, expected 0x%02x",
         c->what, (unsigned long long)c->o->id, (void *)c->o->p, c->o->req, c->o->align, c->o->arena, bad, p[bad],
         c->zero ? 0 : pat(id, bad));
}

static void fill_obj(obj_t *o) {
  for_regions(o->req, SIZE_MAX, fill_cb, o->p, o->id, NULL);
  if (o->usable > o->req) o->p[o->usable - 1] = pat(o->id, o->usable - 1); /* all of it writable */
}

static void check_content(const obj_t *o, const char *what) {
  check_ctx c = {what, o, false};
  for_regions(o->req, SIZE_MAX, check_cb, o->p, o->id, &c);
  if (o->usable > o->req && o->p[o->usable - 1] != pat(o->id, o->usable - 1))
    fail("%s: object id %llu at %p: last usable byte (offset %zu) changed", what, (unsigned long long)o->id,
         (void *)o->p, o->usable - 1);
}

static bool is_pow2(size_t x) { return x && !(x & (x - 1)); }

static bool effective_open(int i) { return ar[i].used && ar[i].state == OPEN; }
/* Where plain malloc on thread t allocates now. */
static int eff_arena(int t) { return effective_open(cur[t]) ? cur[t] : t; }

static void push_stale(sm_handle_t h) {
  if (!h) return;
  stale[nstale % NSTALE] = h;
  nstale++;
}

/* Full check of one object. */
static void check_obj(const obj_t *o, const char *what) {
  check_content(o, what);
  size_t us = sm_usable_size(o->p);
  CHECK(us == o->usable, "%s: sm_usable_size(%p) = %zu, was %zu (requested %zu)", what, (void *)o->p, us, o->usable,
        o->req);
  CHECK(((uintptr_t)o->p & (o->align - 1)) == 0, "%s: object id %llu at %p not %zu-aligned", what,
        (unsigned long long)o->id, (void *)o->p, o->align);
  void *d = sm_deref(o->h);
  CHECK(d == o->p, "%s: sm_deref(0x%llx) = %p, object id %llu is at %p (size %zu)", what, (unsigned long long)o->h, d,
        (unsigned long long)o->id, (void *)o->p, o->req);
  sm_handle_t h = sm_handle_of(o->p);
  CHECK(h == o->h, "%s: sm_handle_of(%p) = 0x%llx, expected 0x%llx", what, (void *)o->p, (unsigned long long)h,
        (unsigned long long)o->h);
  sm_arena_t *a = sm_arena_of(o->p);
  CHECK(a == ar[o->arena].a, "%s: sm_arena_of(%p) = %p, model arena %d is %p%s", what, (void *)o->p, (void *)a,
        o->arena, (void *)ar[o->arena].a, ar[o->arena].root ? " (a root)" : "");
}

static void sweep(const char *what) {
  for (int i = 0; i < nobj; i++) check_obj(&obj[i], what);
  int n = nstale < NSTALE ? nstale : NSTALE;
  for (int i = 0; i < n; i++) {
    void *d = sm_deref(stale[i]);
    CHECK(d == NULL, "%s: stale handle 0x%llx dereferences to %p", what, (unsigned long long)stale[i], d);
  }
  for (int i = NT; i < NT + MAXA; i++) {
    if (!ar[i].used || ar[i].state != OPEN) continue;
    sm_arena_t *p = sm_arena_parent(ar[i].a);
    CHECK(ar[i].parent >= 0 && p == ar[ar[i].parent].a,
          "%s: sm_arena_parent(arena %d) = %p, model says arena %d (%p)", what, i, (void *)p, ar[i].parent,
          ar[i].parent >= 0 ? (void *)ar[ar[i].parent].a : NULL);
  }
}

__attribute__((unused)) static size_t arena_bytes(int a) {
  size_t s = 0;
  for (int i = 0; i < nobj; i++)
    if (obj[i].arena == a) s += obj[i].usable;
  return s;
}

/* A new live object: no overlap with any other, usable >= requested,
 * alignment, a handle; then filled with its pattern. */
static obj_t *add_obj(void *p, size_t req, size_t align, int arena, bool zeroed, sm_handle_t h, const char *what) {
  CHECK(p != NULL, "%s: NULL object", what);
  if (align < 16 && req >= 16) align = 16;
  if (align == 0) align = 1;
  size_t us = sm_usable_size(p);
  CHECK(us >= req, "%s: usable size %zu < requested %zu at %p", what, us, req, p);
  CHECK(((uintptr_t)p & (align - 1)) == 0, "%s: %p is not %zu-aligned (size %zu)", what, p, align, req);
  uintptr_t lo = (uintptr_t)p, hi = lo + (us ? us : 1);
  for (int i = 0; i < nobj; i++) {
    uintptr_t l2 = (uintptr_t)obj[i].p, h2 = l2 + (obj[i].usable ? obj[i].usable : 1);
    CHECK(hi <= l2 || lo >= h2, "%s: new object %p (usable %zu) overlaps live object id %llu at %p (usable %zu)",
          what, p, us, (unsigned long long)obj[i].id, (void *)obj[i].p, obj[i].usable);
  }
  CHECK(nobj < MAXO, "model full");
  obj_t *o = &obj[nobj++];
  o->p = p;
  o->req = req;
  o->usable = us;
  o->align = align;
  o->id = next_id++;
  o->arena = arena;
  sm_handle_t hh = sm_handle_of(p);
  CHECK(hh != 0, "%s: sm_handle_of(%p) = 0 for a live object", what, p);
  CHECK(!h || h == hh, "%s: handle 0x%llx from the allocation, sm_handle_of says 0x%llx", what, (unsigned long long)h,
        (unsigned long long)hh);
  CHECK(sm_deref(hh) == p, "%s: sm_deref(sm_handle_of(%p)) = %p", what, p, sm_deref(hh));
  o->h = hh;
  sm_arena_t *a = sm_arena_of(p);
  CHECK(a == ar[arena].a, "%s: new object %p is in arena %p, model expects arena %d (%p)", what, p, (void *)a, arena,
        (void *)ar[arena].a);
  if (zeroed) {
    check_ctx c = {what, o, true};
    for_regions(req, SIZE_MAX, check_cb, o->p, 0, &c);
  }
  fill_obj(o);
  live_bytes += us;
  if (ar[arena].limit) {
    size_t sum = arena_bytes(arena);
    CHECK(sum <= ar[arena].limit,
          "%s: arena %d capped at %zu bytes now holds %zu (new object %p, size %zu, usable %zu)", what, arena,
          ar[arena].limit, sum, p, req, us);
  }
  return o;
}

/* The object dies (freed, its arena closed): forget it, remember its handle. */
static void kill_obj(int i) {
  push_stale(obj[i].h);
  live_bytes -= obj[i].usable;
  obj[i] = obj[--nobj];
}

static int find_obj(const void *p) {
  for (int i = 0; i < nobj; i++)
    if (obj[i].p == p) return i;
  return -1;
}

/* ---- the input ---------------------------------------------------------------------- */

static const uint8_t *in_data;
static size_t in_len, in_pos;

static uint8_t u8(void) { return in_pos < in_len ? in_data[in_pos++] : 0; }
static uint16_t u16(void) { return (uint16_t)(u8() | u8() << 8); }

/* A size: class edges (edge-1, edge, edge+1), small, medium, large, several
 * MiB, and huge ones past PTRDIFF_MAX. */
static size_t pick_size(void) {
  uint8_t s = u8();
  switch (s % 12) {
    case 0:
    case 1:
    case 2:
    case 3:
    case 4: {
      uint32_t e = class_edge[u8() % 96];
      return e - 1 + u8() % 3;
    }
    case 5: return u8() % 33;
    case 6: return u16();
    case 7: return ((size_t)256 << 10) + ((size_t)u16() << 3);
    case 8: return (((size_t)(u8() % 10) + 1) << 20) + (size_t)(u8() % 3) * 4096 - 1 + u8() % 3;
    case 9: {
      static const size_t special[] = {0,
                                       1,
                                       15,
                                       16,
                                       17,
                                       262143,
                                       262144,
                                       262145,
                                       (4 << 20) - 65536,
                                       (4 << 20) - 65535,
                                       4 << 20,
                                       (4 << 20) + 1,
                                       65536,
                                       524288,
                                       524289,
                                       4096,
                                       40 << 20,
                                       (33 << 20) + 1}; /* past half the large cache: unmapped when freed */
      return special[u8() % 18];
    }
    case 10: return u8() * 16;
    default: {
      static const size_t huge[] = {(size_t)PTRDIFF_MAX + 1, SIZE_MAX,
                                    SIZE_MAX - 15,           SIZE_MAX - 4095,
                                    (size_t)1 << 63 | 4096,  SIZE_MAX - (1 << 20)};
      return huge[u8() % 6];
    }
  }
}
#define HUGE(n) ((n) > (size_t)PTRDIFF_MAX)
#define SANE(n) ((n) <= ((size_t)48 << 20))

static size_t pick_align(void) {
  uint8_t s = u8();
  switch (s % 8) {
    case 0: return (size_t)1 << (u8() % 5);
    case 1:
    case 2:
    case 3: return (size_t)1 << (u8() % 23);      /* up to 4 MiB */
    case 4: return (size_t)1 << (12 + u8() % 12); /* 4 KiB .. 8 MiB */
    case 5: return (size_t)8 << 20;
    default: {
      static const size_t bad[] = {0, 3, 24, 48, 96, 4097, 65535, SIZE_MAX, (size_t)1 << 63 | 8, 12};
      return bad[u8() % 10];
    }
  }
}

static int pick_thread(void) { return nthreads > 1 ? u8() % nthreads : 0; }

/* A model arena index (root or user, maybe closed); -1 if none. */
static int pick_arena(bool user_only) {
  int ids[NT + MAXA], n = 0;
  for (int i = user_only ? NT : 0; i < NT + MAXA; i++)
    if (ar[i].used && (i >= NT || i < nthreads)) ids[n++] = i;
  uint8_t b = u8();
  return n ? ids[b % n] : -1;
}

static int pick_obj(void) {
  uint8_t b = u8();
  return nobj ? b % nobj : -1;
}

/* Who allocates in arena i: its owner thread (a root: its thread). */
static int owner_of(int i) { return ar[i].root ? i : ar[i].owner; }

/* ---- arena model operations -------------------------------------------------------- */

static bool in_subtree(int x, int top) {
  for (int guard = 0; x >= 0 && guard < 64; guard++, x = ar[x].parent)
    if (x == top) return true;
  return false;
}

/* Closes arena i and its subtree (if open): objects die, parents unlink. */
static void model_close(int i) {
  if (ar[i].root || ar[i].state != OPEN) return;
  for (int j = NT; j < NT + MAXA; j++)
    if (ar[j].used && ar[j].state == OPEN && ar[j].parent == i) model_close(j);
  ar[i].state = CLOSED;
  ar[i].parent = -1;
  for (int k = 0; k < nobj;)
    if (obj[k].arena == i) kill_obj(k);
    else k++;
}

/* Before the struct of arena i is freed, no thread may still have it as its
 * current arena: those threads enter the root. */
static void unenter_others(int i, int except) {
  for (int t = 0; t < nthreads; t++) {
    if (t == except || cur[t] != i) continue;
    call_t c = {.fn = F_ENTER, .ar = NULL};
    call_on(t, &c);
    cur[t] = t;
  }
}

static int new_arena_slot(void) {
  for (int i = NT; i < NT + MAXA; i++)
    if (!ar[i].used) return i;
  return -1;
}

/* ---- operations ---------------------------------------------------------------------- */

static bool may_fail_cap(int arena) { return ar[arena].limit != 0; }

/* Checks the result of an allocation call expected to succeed (sane size)
 * or fail (huge size / bad alignment). Returns true if a new object is there. */
static bool alloc_result(call_t *c, void *p, size_t req, bool bad_args, int want_err, int arena, const char *what) {
  if (bad_args) {
    CHECK(p == NULL, "%s: expected failure (errno %d), got %p", what, want_err, p);
    CHECK(c->err == want_err, "%s: failed with errno %d, expected %d", what, c->err, want_err);
    return false;
  }
  if (!p) {
    CHECK(c->err == ENOMEM, "%s: NULL with errno %d (not ENOMEM)", what, c->err);
    CHECK(may_fail_cap(arena), "%s: unexpected NULL (ENOMEM) for size %zu in arena %d (no cap)", what, req, arena);
    return false;
  }
  return true;
}

static void op_malloc(int kind) {
  int t = pick_thread();
  size_t n = pick_size();
  if (!HUGE(n) && (!SANE(n) || live_bytes + n > LIVE_BUDGET)) return;
  int fn = kind == 0 ? F_MALLOC : kind == 1 ? F_PMALLOC : F_HALLOC;
  snprintf(op_desc, sizeof op_desc, "%s(%zu) on thread %d",
           fn == F_MALLOC    ? "sm_malloc"
           : fn == F_PMALLOC ? "malloc"
                             : "sm_halloc",
           n, t);
  call_t c = {.fn = fn, .a = n};
  int arena = eff_arena(t);
  call_on(t, &c);
  void *p = c.rp;
  if (fn == F_HALLOC) {
    p = sm_deref(c.rh);
    CHECK(!!c.rh == !!p, "sm_halloc returned 0x%llx, sm_deref gives %p", (unsigned long long)c.rh, p);
  }
  if (alloc_result(&c, p, n, HUGE(n), ENOMEM, arena, op_desc)) add_obj(p, n, 1, arena, false, c.rh, op_desc);
}

static void op_calloc(void) {
  int t = pick_thread();
  static const size_t counts[] = {
      0, 1, 2, 3, 7, 16, 100, (size_t)1 << 32, SIZE_MAX, SIZE_MAX / 2 + 1, (size_t)1 << 62, 1000};
  size_t count = counts[u8() % 12], size = pick_size();
  if (u8() & 1) {
    size_t tmp = count;
    count = size;
    size = tmp;
  }
  size_t total;
  bool ovf = __builtin_mul_overflow(count, size, &total) || HUGE(total);
  if (!ovf && (!SANE(total) || live_bytes + total > LIVE_BUDGET)) return;
  bool plain = u8() & 1;
  snprintf(op_desc, sizeof op_desc, "%s(%zu, %zu) on thread %d", plain ? "calloc" : "sm_calloc", count, size, t);
  call_t c = {.fn = plain ? F_PCALLOC : F_CALLOC, .a = count, .b = size};
  int arena = eff_arena(t);
  call_on(t, &c);
  if (alloc_result(&c, c.rp, total, ovf, ENOMEM, arena, op_desc)) add_obj(c.rp, total, 1, arena, true, 0, op_desc);
}

static void op_aligned(void) {
  int t = pick_thread();
  size_t al = pick_align(), n = pick_size();
  uint8_t v = u8() % 7;
  if (!HUGE(n) && (!SANE(n) || live_bytes + n + al > LIVE_BUDGET)) return;
  static const char *const names[] = {
      "sm_aligned_alloc", "aligned_alloc", "sm_posix_memalign", "posix_memalign", "memalign", "valloc", "pvalloc"};
  snprintf(op_desc, sizeof op_desc, "%s(align %zu, size %zu) on thread %d", names[v], al, n, t);
  static const int fns[] = {F_ALIGNED,  F_PALIGNED, F_POSIX_MEMALIGN, F_PPOSIX_MEMALIGN,
                            F_MEMALIGN, F_VALLOC,   F_PVALLOC};
  call_t c = {.fn = fns[v], .a = n, .b = al};
  int arena = eff_arena(t);
  bool bad = false;
  int want = ENOMEM;
  size_t want_align = al, req = n;
  switch (v) {
    case 0:
    case 1:
      if (!is_pow2(al)) bad = true, want = EINVAL;
      break;
    case 2:
    case 3:
      if (!is_pow2(al) || al % sizeof(void *)) bad = true, want = EINVAL;
      break;
    case 4:
      if (al > ((size_t)1 << 62)) bad = true, want = EINVAL;
      else
        for (want_align = 16; want_align < al; want_align <<= 1) {
        }
      break;
    case 5: want_align = 4096; break;
    case 6:
      want_align = 4096;
      if (!HUGE(n)) req = n ? (n + 4095) & ~(size_t)4095 : 4096;
      break;
  }
  if (HUGE(n) && !bad) bad = true, want = ENOMEM;
  if (!bad && want_align > ((size_t)8 << 20)) return;
  if (!bad && (!SANE(n + want_align))) return;
  call_on(t, &c);
  if (v == 2 || v == 3) {
    /* posix_memalign: the error is returned, *out untouched on error, errno kept */
    if (bad) {
      CHECK(c.ri == want, "%s returned %d, expected %d", names[v], c.ri, want);
      CHECK(c.rp == (void *)0x5a5a, "%s changed *out on error", names[v]);
      return;
    }
    if (c.ri != 0) {
      CHECK(c.ri == ENOMEM && may_fail_cap(arena), "%s returned %d (arena %d)", names[v], c.ri, arena);
      CHECK(c.rp == (void *)0x5a5a, "%s changed *out on error", names[v]);
      return;
    }
    add_obj(c.rp, req, want_align, arena, false, 0, op_desc);
    return;
  }
  if (alloc_result(&c, c.rp, req, bad, want, arena, op_desc))
    add_obj(c.rp, req, want_align, arena, false, 0, op_desc);
}

static void op_free(void) {
  int i = pick_obj(), t = pick_thread();
  uint8_t v = u8() % 5;
  if (i < 0) {
    call_t c = {.fn = F_FREE, .p = NULL};
    call_on(t, &c);
    return;
  }
  obj_t o = obj[i];
  static const char *const names[] = {"sm_free", "free", "cfree", "free_sized", "free_aligned_sized"};
  snprintf(op_desc, sizeof op_desc, "%s(%p) of object id %llu (size %zu, arena %d) on thread %d", names[v],
           (void *)o.p, (unsigned long long)o.id, o.req, o.arena, t);
  check_obj(&o, op_desc);
  static const int fns[] = {F_FREE, F_PFREE, F_CFREE, F_FREE_SIZED, F_FREE_ASIZED};
  call_t c = {.fn = fns[v], .p = o.p, .a = o.req, .b = o.align};
  capture_begin();
  call_on(t, &c);
  expect_reports(capture_end(), 0, 0, 0, NULL);
  CHECK(c.err == 4242, "free changed errno to %d", c.err);
  kill_obj(i);
  void *d = sm_deref(o.h);
  CHECK(d == NULL, "handle of the freed object still dereferences to %p", d);
}

static void op_realloc(void) {
  int t = pick_thread();
  int i = u8() % 8 == 0 ? -1 : pick_obj();
  uint8_t v = u8() % 4;
  size_t count = 1, n = pick_size();
  if (v >= 2) {
    static const size_t counts[] = {1, 2, 3, 16, (size_t)1 << 33, SIZE_MAX, 0, 5};
    count = counts[u8() % 8];
  }
  size_t total;
  bool ovf = __builtin_mul_overflow(count, n, &total) || HUGE(total);
  if (!ovf && (!SANE(total) || live_bytes + total > LIVE_BUDGET)) return;
  obj_t o = {0};
  if (i >= 0) o = obj[i];
  static const char *const names[] = {"sm_realloc", "realloc", "sm_reallocarray", "reallocarray"};
  static const int fns[] = {F_REALLOC, F_PREALLOC, F_REALLOCARRAY, F_PREALLOCARRAY};
  snprintf(op_desc, sizeof op_desc, "%s(%p (id %llu, size %zu, arena %d), %zu x %zu) on thread %d", names[v],
           (void *)o.p, (unsigned long long)o.id, o.req, o.arena, count, n, t);
  if (i >= 0) check_obj(&o, op_desc);
  call_t c = {.fn = fns[v], .p = o.p, .a = v >= 2 ? count : n, .b = n};
  int arena = eff_arena(t);
  capture_begin();
  call_on(t, &c);
  expect_reports(capture_end(), 0, 0, 0, NULL);
  if (ovf) {
    CHECK(c.rp == NULL && c.err == ENOMEM, "expected NULL/ENOMEM, got %p errno %d", c.rp, c.err);
    if (i >= 0) check_obj(&o, op_desc);
    return;
  }
  if (i < 0) { /* realloc(NULL, n) is malloc */
    if (alloc_result(&c, c.rp, total, false, 0, arena, op_desc)) add_obj(c.rp, total, 1, arena, false, 0, op_desc);
    return;
  }
  if (total == 0) { /* frees, returns NULL */
    CHECK(c.rp == NULL, "realloc(p, 0) returned %p", c.rp);
    kill_obj(i);
    CHECK(sm_deref(o.h) == NULL, "handle of the object realloc'd to 0 still valid");
    return;
  }
  if (!c.rp) {
    CHECK(c.err == ENOMEM && may_fail_cap(arena), "unexpected NULL (errno %d) in arena %d", c.err, arena);
    check_obj(&o, op_desc); /* untouched */
    return;
  }
  if (c.rp == o.p) {
    /* in place: the same object, same arena and handle; the size may change */
    obj[i].req = total;
    size_t us = sm_usable_size(c.rp);
    CHECK(us >= total, "in-place realloc: usable %zu < %zu", us, total);
    live_bytes += us - o.usable;
    obj[i].usable = us;
    check_ctx cc = {op_desc, &o, false};
    for_regions(o.req, total, check_cb, o.p, o.id, &cc);
    CHECK(sm_deref(o.h) == o.p, "in-place realloc: handle no longer dereferences to the object");
    fill_obj(&obj[i]);
    return;
  }
  /* moved: the old object is gone, the prefix copied */
  kill_obj(i);
  CHECK(sm_deref(o.h) == NULL, "realloc moved the object to %p; the old handle still dereferences to %p", c.rp,
        sm_deref(o.h));
  check_ctx cc = {op_desc, &o, false};
  for_regions(o.req, total, check_cb, c.rp, o.id, &cc);
  /* README: a large object resized by the OS (mremap, even when its pages
   * move) stays in its arena; a copy is made where malloc would. */
  bool was_large = o.usable > 262144 || o.align > 65536; /* a segment of its own */
  if (was_large && total > 262144 && sm_arena_of(c.rp) == ar[o.arena].a) arena = o.arena;
  add_obj(c.rp, total, 1, arena, false, 0, op_desc);
}

static void op_usable(void) {
  int i = pick_obj();
  if (i < 0) {
    CHECK(sm_usable_size(NULL) == 0, "sm_usable_size(NULL) != 0");
    return;
  }
  snprintf(op_desc, sizeof op_desc, "usable size of object id %llu", (unsigned long long)obj[i].id);
  size_t a = sm_usable_size(obj[i].p), b = fz_malloc_usable_size(obj[i].p);
  CHECK(a == b && a == obj[i].usable, "usable sizes %zu / %zu, model %zu", a, b, obj[i].usable);
  check_obj(&obj[i], op_desc);
}

static void op_arena_new(void) {
  int t = pick_thread();
  int slot = new_arena_slot();
  if (slot < 0) return;
  int parent = u8() % 3 == 0 ? -1 : pick_arena(false);
  if (parent >= 0 && ar[parent].root && parent != t && (u8() & 1)) parent = -1;
  snprintf(op_desc, sizeof op_desc, "sm_arena_new(arena %d) on thread %d", parent, t);
  call_t c = {.fn = F_ANEW, .ar = parent >= 0 ? ar[parent].a : NULL};
  call_on(t, &c);
  int p = parent >= 0 ? parent : t;
  if (ar[p].state != OPEN) {
    CHECK(c.ra == NULL && c.err == EINVAL, "sm_arena_new under a closed arena gave %p, errno %d", (void *)c.ra,
          c.err);
    return;
  }
  CHECK(c.ra != NULL, "sm_arena_new failed (errno %d)", c.err);
  for (int i = 0; i < NT + MAXA; i++)
    CHECK(!ar[i].used || ar[i].a != c.ra, "sm_arena_new returned the struct of live arena %d", i);
  ar[slot] = (marena_t){.used = true, .a = c.ra, .parent = p, .refs = 1, .state = OPEN, .owner = t};
  CHECK(sm_arena_parent(c.ra) == ar[p].a, "sm_arena_parent of the new arena is %p, expected %p",
        (void *)sm_arena_parent(c.ra), (void *)ar[p].a);
}

static void op_arena_alloc(void) {
  int a = pick_arena(u8() % 4 != 0);
  if (a < 0) return;
  int t = owner_of(a);
  if (ar[a].root && t >= nthreads) return;
  uint8_t v = u8() % 4;
  size_t n = pick_size(), al = 16, count = 1;
  if (v == 1) {
    static const size_t counts[] = {1, 2, 3, 16, (size_t)1 << 33, SIZE_MAX, 0, 5};
    count = counts[u8() % 8];
  }
  if (v == 2) al = pick_align();
  size_t total;
  bool ovf = __builtin_mul_overflow(count, n, &total) || HUGE(total);
  if (!ovf && (!SANE(total + (v == 2 ? al : 0)) || live_bytes + total > LIVE_BUDGET)) return;
  static const char *const names[] = {"sm_arena_malloc", "sm_arena_calloc", "sm_arena_aligned_alloc",
                                      "sm_arena_halloc"};
  snprintf(op_desc, sizeof op_desc, "%s(arena %d, %zu x %zu, align %zu) on thread %d", names[v], a, count, n, al, t);
  static const int fns[] = {F_AMALLOC, F_ACALLOC, F_AALIGNED, F_AHALLOC};
  call_t c = {.fn = fns[v], .ar = ar[a].a, .a = v == 1 ? count : n, .b = v == 1 ? n : al};
  call_on(t, &c);
  void *p = c.rp;
  if (v == 3) p = sm_deref(c.rh);
  /* the argument checks, in the library's order */
  bool mul_ovf = __builtin_mul_overflow(count, n, &total), closed = !ar[a].root && ar[a].state != OPEN;
  bool bad = true;
  int want = EINVAL;
  if (v == 1 && mul_ovf) want = ENOMEM;
  else if (v == 2 && !is_pow2(al)) want = EINVAL;
  else if (closed) want = EINVAL;
  else if (ovf) want = ENOMEM;
  else bad = false;
  if (v == 3 && bad) {
    CHECK(c.rh == 0, "sm_arena_halloc: expected failure, got handle 0x%llx", (unsigned long long)c.rh);
    return;
  }
  if (alloc_result(&c, p, total, bad, want, a, op_desc))
    add_obj(p, total, v == 2 ? al : 1, a, v == 1, v == 3 ? c.rh : 0, op_desc);
}

static void op_close(void) {
  int a = pick_arena(u8() % 8 != 0);
  if (a < 0) return;
  int t = pick_thread();
  snprintf(op_desc, sizeof op_desc, "sm_arena_close(arena %d%s) on thread %d", a, ar[a].root ? ", a root" : "", t);
  call_t c = {.fn = F_CLOSE, .ar = ar[a].a};
  capture_begin();
  call_on(t, &c);
  expect_reports(capture_end(), 0, 0, 0, NULL);
  if (cur[t] == a) cur[t] = t;
  model_close(a);
}

static void op_retain_release(void) {
  int a = pick_arena(u8() % 8 != 0);
  if (a < 0) return;
  int t = pick_thread();
  bool rel = u8() & 1;
  snprintf(op_desc, sizeof op_desc, "sm_arena_%s(arena %d, refs %d) on thread %d", rel ? "release" : "retain", a,
           ar[a].refs, t);
  if (!rel) {
    call_t c = {.fn = F_RETAIN, .ar = ar[a].a};
    call_on(t, &c);
    if (!ar[a].root) ar[a].refs++;
    return;
  }
  if (!ar[a].root && ar[a].refs == 1) unenter_others(a, t);
  call_t c = {.fn = F_RELEASE, .ar = ar[a].a};
  capture_begin();
  call_on(t, &c);
  expect_reports(capture_end(), 0, 0, 0, NULL);
  if (ar[a].root) return;
  if (--ar[a].refs == 0) {
    if (cur[t] == a) cur[t] = t;
    model_close(a);
    ar[a].used = false; /* the struct is gone: never touched again */
    for (int j = NT; j < NT + MAXA; j++)
      CHECK(!ar[j].used || ar[j].parent != a, "released arena %d still a parent of %d", a, j);
  }
}

static void op_promote(void) {
  int i = pick_obj();
  if (i < 0) return;
  obj_t o = obj[i];
  int a = o.arena, parent = ar[a].root ? -1 : ar[a].parent;
  int t = pick_thread();
  int dest = a;
  if (!ar[a].root) {
    CHECK(parent >= 0, "model: open arena %d without parent", a);
    if (ar[parent].root) dest = t;
    else dest = parent, t = ar[parent].owner;
  }
  if (live_bytes + o.usable > LIVE_BUDGET) return;
  snprintf(op_desc, sizeof op_desc, "sm_arena_promote(%p: id %llu, size %zu, align %zu, arena %d -> %d) on thread %d",
           (void *)o.p, (unsigned long long)o.id, o.req, o.align, a, dest, t);
  check_obj(&o, op_desc);
  call_t c = {.fn = F_PROMOTE, .p = o.p};
  call_on(t, &c);
  if (ar[a].root) {
    CHECK(c.rp == o.p, "promote of a root arena's object returned %p", c.rp);
    check_obj(&o, op_desc);
    return;
  }
  if (!c.rp) {
    CHECK(c.err == ENOMEM && may_fail_cap(dest), "promote failed with errno %d (destination arena %d, no cap)", c.err,
          dest);
    check_obj(&o, op_desc);
    return;
  }
  kill_obj(i);
  CHECK(sm_deref(o.h) == NULL, "after promote the old handle still dereferences to %p", sm_deref(o.h));
  check_ctx cc = {op_desc, &o, false};
  for_regions(o.req, SIZE_MAX, check_cb, c.rp, o.id, &cc);
  size_t align = o.align;
  add_obj(c.rp, o.req, align, dest, false, 0, op_desc);
}

static void op_steal(void) {
  int a = pick_arena(u8() % 8 != 0), np = pick_arena(false);
  if (a < 0 || np < 0) return;
  int t = pick_thread();
  snprintf(op_desc, sizeof op_desc, "sm_arena_steal(arena %d, new parent %d) on thread %d", a, np, t);
  call_t c = {.fn = F_STEAL, .ar = ar[a].a, .ar2 = ar[np].a};
  call_on(t, &c);
  bool bad = ar[a].root || ar[a].state != OPEN || ar[np].state != OPEN || in_subtree(np, a);
  CHECK(c.ri == (bad ? EINVAL : 0), "returned %d, expected %d", c.ri, bad ? EINVAL : 0);
  if (!bad) ar[a].parent = np;
}

static void op_merge(void) {
  int dst = pick_arena(u8() % 4 != 0), src = pick_arena(u8() % 8 != 0);
  if (dst < 0 || src < 0) return;
  int t = pick_thread();
  snprintf(op_desc, sizeof op_desc, "sm_arena_merge(dst %d, src %d) on thread %d", dst, src, t);
  call_t c = {.fn = F_MERGE, .ar = ar[dst].a, .ar2 = ar[src].a};
  call_on(t, &c);
  bool bad = dst == src || ar[src].root || ar[dst].state != OPEN || ar[src].state != OPEN || in_subtree(dst, src);
  CHECK(c.ri == (bad ? EINVAL : 0), "returned %d, expected %d", c.ri, bad ? EINVAL : 0);
  if (bad) return;
  for (int k = 0; k < nobj; k++)
    if (obj[k].arena == src) obj[k].arena = dst;
  for (int j = NT; j < NT + MAXA; j++)
    if (ar[j].used && ar[j].parent == src) ar[j].parent = dst;
  ar[src].state = MERGED;
  ar[src].parent = -1;
  if (cur[t] == src) {
    cur[t] = dst;
    if (owner_of(dst) != t) { /* the thread rules: t must not allocate in another thread's arena */
      call_t e = {.fn = F_ENTER, .ar = NULL};
      call_on(t, &e);
      cur[t] = t;
    }
  }
}

static void op_enter(void) {
  int t = pick_thread();
  int a = u8() % 3 == 0 ? -1 : pick_arena(true);
  if (a >= 0 && ar[a].owner != t) t = ar[a].owner;
  snprintf(op_desc, sizeof op_desc, "sm_arena_enter(arena %d) on thread %d", a, t);
  call_t c = {.fn = F_ENTER, .ar = a >= 0 ? ar[a].a : NULL};
  call_on(t, &c);
  sm_arena_t *want = cur[t] == t ? NULL : ar[cur[t]].a;
  CHECK(c.ra == want || (c.ra == NULL && !effective_open(cur[t])), "returned %p, expected %p (arena %d)",
        (void *)c.ra, (void *)want, cur[t]);
  cur[t] = a >= 0 && ar[a].state == OPEN ? a : t;
}

static void op_set_limit(void) {
  int a = pick_arena(u8() % 8 != 0);
  if (a < 0) return;
  static const size_t limits[] = {0, 1, 16, 100, 4096, 10000, 65536, 100000, 1 << 20, 5 << 20, 64 << 20, 256};
  size_t lim = limits[u8() % 12];
  int t = pick_thread();
  snprintf(op_desc, sizeof op_desc, "sm_arena_set_limit(arena %d, %zu) on thread %d", a, lim, t);
  call_t c = {.fn = F_SETLIMIT, .ar = ar[a].a, .a = lim};
  call_on(t, &c);
  bool bad = ar[a].root || ar[a].state != OPEN;
  CHECK(c.ri == (bad ? EINVAL : 0), "returned %d, expected %d", c.ri, bad ? EINVAL : 0);
  if (!bad) ar[a].limit = lim;
}

static void op_hfree(void) {
  int t = pick_thread();
  uint8_t v = u8() % 4;
  int i = pick_obj();
  call_t c = {.fn = F_HFREE};
  if (v == 0 && i >= 0) { /* a live handle */
    obj_t o = obj[i];
    snprintf(op_desc, sizeof op_desc, "sm_hfree(0x%llx: id %llu at %p, arena %d) on thread %d",
             (unsigned long long)o.h, (unsigned long long)o.id, (void *)o.p, o.arena, t);
    check_obj(&o, op_desc);
    c.h = o.h;
    capture_begin();
    call_on(t, &c);
    expect_reports(capture_end(), 0, 0, 0, NULL);
    CHECK(c.ri == 0, "sm_hfree of a live handle returned %d", c.ri);
    kill_obj(i);
    CHECK(sm_deref(o.h) == NULL, "handle still valid after sm_hfree");
    return;
  }
  if (v == 1 && i >= 0) { /* a live handle with one bit changed */
    unsigned bit = u8() % 64;
    c.h = obj[i].h ^ ((uint64_t)1 << bit);
    snprintf(op_desc, sizeof op_desc, "sm_hfree(handle of id %llu with bit %u flipped) on thread %d",
             (unsigned long long)obj[i].id, bit, t);
    CHECK(sm_deref(c.h) == NULL, "a handle with one bit changed dereferences to %p", sm_deref(c.h));
  } else if (v == 2 && nstale) {
    c.h = stale[u8() % (nstale < NSTALE ? nstale : NSTALE)];
    snprintf(op_desc, sizeof op_desc, "sm_hfree(stale 0x%llx) on thread %d", (unsigned long long)c.h, t);
  } else {
    static const sm_handle_t forged[] = {
        0, 1, 2, 3, UINT64_MAX, 0x8000000000000001ULL, 0x0000100000000001ULL, 0x7ULL << 44};
    c.h = forged[u8() % 8];
    snprintf(op_desc, sizeof op_desc, "sm_hfree(forged 0x%llx) on thread %d", (unsigned long long)c.h, t);
    CHECK(c.h == 0 || sm_deref(c.h) == NULL || find_obj(sm_deref(c.h)) >= 0, "forged handle names an unknown object");
    if (c.h && sm_deref(c.h)) return;
  }
  capture_begin();
  call_on(t, &c);
  expect_reports(capture_end(), 0, 0, 0, NULL);
  CHECK(c.ri == ESTALE, "returned %d, expected ESTALE", c.ri);
  sweep(op_desc); /* nothing else changed */
}

static void op_collect(void) {
  int t = pick_thread();
  uint8_t v = u8() % 4;
  call_t c = {.fn = v == 3 ? F_TRIM : F_COLLECT, .a = v == 0 ? SIZE_MAX : (size_t)v * 3};
  snprintf(op_desc, sizeof op_desc, "%s on thread %d", v == 3 ? "malloc_trim" : "sm_collect", t);
  call_on(t, &c);
  sweep(op_desc);
}

/* Deliberate misuse: must be reported (one line) and change nothing else. */
static char global_buf[256];
static void op_misuse(void) {
  int t = pick_thread();
  uint8_t v = u8() % 9;
  int i = pick_obj();
  call_t c = {.fn = u8() & 1 ? F_PFREE : F_FREE};
  switch (v) {
    case 0: { /* double free */
      if (i < 0) return;
      obj_t o = obj[i];
      snprintf(op_desc, sizeof op_desc, "double free of id %llu at %p (size %zu, arena %d) on thread %d",
               (unsigned long long)o.id, (void *)o.p, o.req, o.arena, t);
      check_obj(&o, op_desc);
      c.p = o.p;
      capture_begin();
      call_on(t, &c);
      expect_reports(capture_end(), 0, 0, 0, NULL);
      kill_obj(i);
      capture_begin();
      call_on(t, &c);
      /* a large object (a segment of its own: large size or alignment past
       * 64 KiB) may be unmapped already: then it is not ours any more */
      bool large = o.usable > 262144 || o.align > 65536;
      expect_reports(capture_end(), 1, 1, large ? R_DOUBLE | R_INVALID : R_DOUBLE, o.p);
      CHECK(c.err == 4242, "free changed errno");
      break;
    }
    case 1: { /* interior pointer */
      if (i < 0 || obj[i].usable < 2) return;
      obj_t o = obj[i];
      size_t off = 1 + u16() % (o.usable - 1);
      if (u8() & 1) off = (off + 15) & ~(size_t)15;
      if (off >= o.usable) off = o.usable - 1;
      uint8_t *p = o.p + off;
      snprintf(op_desc, sizeof op_desc, "free of interior %p (id %llu at %p + %zu, usable %zu) on thread %d",
               (void *)p, (unsigned long long)o.id, (void *)o.p, off, o.usable, t);
      c.p = p;
      capture_begin();
      call_on(t, &c);
      expect_reports(capture_end(), 1, 1, R_INVALID, p);
      check_obj(&obj[i], op_desc);
      break;
    }
    case 2:
    case 3:
    case 4: { /* stack, global, foreign heap */
      char stack_buf[64];
      void *heap = malloc(64); /* libc's (or the sanitizer's) malloc */
      void *p = v == 2 ? (void *)(stack_buf + 16) : v == 3 ? (void *)(global_buf + 32) : heap;
      snprintf(op_desc, sizeof op_desc, "free of a %s address %p on thread %d",
               v == 2   ? "stack"
               : v == 3 ? "global"
                        : "foreign heap",
               p, t);
      c.p = p;
      capture_begin();
      call_on(t, &c);
      expect_reports(capture_end(), 1, 1, R_INVALID, p);
      free(heap);
      break;
    }
    case 5: { /* realloc of a freed pointer, or of an interior one */
      if (i < 0) return;
      obj_t o = obj[i];
      bool interior = u8() & 1 && o.usable >= 32;
      uint8_t *p = interior ? o.p + 16 : o.p;
      snprintf(
          op_desc, sizeof op_desc, "realloc of %s pointer %p (id %llu, size %zu, usable %zu, align %zu) on thread %d",
          interior ? "an interior" : "a freed", (void *)p, (unsigned long long)o.id, o.req, o.usable, o.align, t);
      if (!interior) {
        c.p = o.p;
        call_on(t, &c);
        kill_obj(i);
      }
      call_t r = {.fn = u8() & 1 ? F_PREALLOC : F_REALLOC, .p = p, .a = 1 + u8()};
      capture_begin();
      call_on(t, &r);
      expect_reports(capture_end(), 1, 1, R_REALLOC | (interior ? 0 : R_DOUBLE | (o.usable > 262144 ? R_INVALID : 0)),
                     p);
      CHECK(r.rp == NULL, "realloc of a bad pointer returned %p", r.rp);
      if (interior) check_obj(&obj[i], op_desc);
      break;
    }
    case 6: { /* free of an object of a closed arena */
      int a = pick_arena(true);
      if (a < 0 || ar[a].state != OPEN) return;
      int k;
      for (k = 0; k < nobj && obj[k].arena != a; k++) {
      }
      if (k == nobj) return;
      obj_t o = obj[k];
      snprintf(op_desc, sizeof op_desc, "free of id %llu at %p after its arena %d was closed, on thread %d",
               (unsigned long long)o.id, (void *)o.p, a, t);
      call_t cl = {.fn = F_CLOSE, .ar = ar[a].a};
      call_on(t, &cl);
      if (cur[t] == a) cur[t] = t;
      model_close(a);
      c.p = o.p;
      capture_begin();
      call_on(t, &c);
      expect_reports(capture_end(), 1, 1, R_DOUBLE | R_INVALID, o.p);
      break;
    }
    case 7: { /* free of the slot just after a live small object, if the model has nothing there */
      if (i < 0 || obj[i].usable > 4096) return;
      uint8_t *p = obj[i].p + obj[i].usable;
      for (int k = 0; k < nobj; k++)
        if (p + 1 > obj[k].p && p < obj[k].p + obj[k].usable + 1) return;
      if (!sm_usable_size(obj[i].p)) return;
      if (sm_handle_of(p)) fail("%p is live for slotmalloc but not in the model", (void *)p);
      snprintf(op_desc, sizeof op_desc, "free of the free slot %p after id %llu on thread %d", (void *)p,
               (unsigned long long)obj[i].id, t);
      c.p = p;
      capture_begin();
      call_on(t, &c);
      expect_reports(capture_end(), 1, 1, R_DOUBLE | R_INVALID, p);
      break;
    }
    case 8: { /* the root arena cannot be closed; roots ignore retain/release */
      int r = t;
      snprintf(op_desc, sizeof op_desc, "close/retain/release of root arena %d on thread %d", r, t);
      call_t cl = {.fn = F_CLOSE + (u8() % 3), .ar = ar[r].a};
      call_on(t, &cl);
      break;
    }
  }
  sweep(op_desc);
}

/* ---- threads only: true races ------------------------------------------------------ */
#if NT > 1
/* One thread closes an arena while another frees (or hfrees) its objects. */
static void op_race_close(void) {
  if (nthreads < 2) return;
  int a = pick_arena(true);
  if (a < 0 || ar[a].state != OPEN) return;
  int closer = pick_thread(), freer = pick_thread();
  if (closer == freer) freer = (closer + 1) % nthreads;
  bool by_handle = u8() & 1;
  void *list[16];
  sm_handle_t hl[16];
  int res[16], n = 0;
  for (int k = 0; k < nobj && n < 16; k++)
    if (in_subtree(obj[k].arena, a)) {
      list[n] = obj[k].p;
      hl[n++] = obj[k].h;
    }
  snprintf(op_desc, sizeof op_desc, "race: thread %d closes arena %d while thread %d %s %d of its objects", closer, a,
           freer, by_handle ? "hfrees" : "frees", n);
  call_t cc = {.fn = F_CLOSE, .ar = ar[a].a};
  call_t fc = {
      .fn = by_handle ? F_HFREELIST : F_FREELIST, .list = list, .hlist = hl, .results = res, .n = n, .a = u8()};
  capture_begin();
  call_parallel(2, (int[]){freer, closer}, (call_t *[]){&fc, &cc});
  expect_reports(capture_end(), 0, by_handle ? 0 : n, R_DOUBLE | R_INVALID, NULL);
  if (by_handle)
    for (int k = 0; k < n; k++) CHECK(res[k] == 0 || res[k] == ESTALE, "sm_hfree returned %d", res[k]);
  if (cur[closer] == a) cur[closer] = closer;
  model_close(a);
  sweep(op_desc);
}

/* Two threads free disjoint sets of objects while a third allocates. */
static void op_race_free(void) {
  if (nthreads < 3) return;
  int alloc_t = pick_thread();
  int f1 = (alloc_t + 1) % nthreads, f2 = (alloc_t + 2) % nthreads;
  void *l1[16], *l2[16], *al[16];
  size_t sizes[16];
  int n1 = 0, n2 = 0, na = u8() % 17;
  obj_t dead[32];
  int nd = 0;
  for (int k = 0; k < na; k++) {
    size_t s = u8() % 2 ? class_edge[u8() % 40] : u8();
    sizes[k] = s;
  }
  uint32_t mask = (uint32_t)u16() | (uint32_t)u16() << 16;
  for (int k = nobj - 1; k >= 0 && nd < 32; k--) {
    if (!(mask >> (k % 32) & 1)) continue;
    if (nd & 1) {
      if (n2 < 16) l2[n2++] = obj[k].p, dead[nd++] = obj[k], kill_obj(k);
    } else if (n1 < 16) {
      l1[n1++] = obj[k].p, dead[nd++] = obj[k], kill_obj(k);
    }
  }
  int arena = eff_arena(alloc_t);
  if (ar[arena].limit) arena = -1; /* keep it simple: no caps here */
  if (arena < 0) na = 0;
  snprintf(op_desc, sizeof op_desc, "race: threads %d and %d free %d and %d objects while thread %d allocates %d", f1,
           f2, n1, n2, alloc_t, na);
  call_t c1 = {.fn = F_FREELIST, .list = l1, .n = n1, .a = 0};
  call_t c2 = {.fn = F_FREELIST, .list = l2, .n = n2, .a = 1};
  call_t c3 = {.fn = F_MALLOCLIST, .list = al, .sizes = sizes, .n = na};
  capture_begin();
  call_parallel(3, (int[]){f1, f2, alloc_t}, (call_t *[]){&c1, &c2, &c3});
  expect_reports(capture_end(), 0, 0, 0, NULL);
  for (int k = 0; k < nd; k++)
    CHECK(sm_deref(dead[k].h) == NULL, "object id %llu freed in the race: its handle still dereferences",
          (unsigned long long)dead[k].id);
  for (int k = 0; k < na; k++) add_obj(al[k], sizes[k], 1, arena, false, 0, op_desc);
  sweep(op_desc);
}
#endif

/* ---- the target -------------------------------------------------------------------- */

static void init_once(void) {
  static bool done;
  if (done) return;
  done = true;
  setenv("SLOTMALLOC_ABORT_ON_ERROR", "0", 1); /* before the library's first heap set-up */
  for (int i = 0; i < 8; i++) class_edge[i] = 16u * (i + 1);
  for (int b = 7, k = 8; b <= 17; b++)
    for (int s = 0; s < 8; s++) class_edge[k++] = (1u << b) + (s + 1) * (1u << (b - 3));
  trace = getenv("FUZZ_TRACE") && strcmp(getenv("FUZZ_TRACE"), "0");
  cap_enabled = !getenv("FUZZ_NO_CAPTURE") || !strcmp(getenv("FUZZ_NO_CAPTURE"), "0");
  if (cap_enabled) {
    char path[256];
    const char *dir = getenv("FUZZ_CAPTURE_DIR");
    snprintf(path, sizeof path, "%s/slotmalloc-fuzz-stderr.%d", dir ? dir : "/tmp", (int)getpid());
    cap_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (cap_fd < 0) cap_enabled = false;
  }
  calls_start();
  for (int t = 0; t < NT; t++) {
    call_t c = {.fn = F_ROOT};
    call_on(t, &c);
    if (!c.ra) abort();
    ar[t] = (marena_t){.used = true, .root = true, .a = c.ra, .parent = -1, .refs = 1, .state = OPEN, .owner = t};
    cur[t] = t;
  }
}

static struct timespec t_start;
static void print_count(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  double s = (double)(now.tv_sec - t_start.tv_sec) + (double)(now.tv_nsec - t_start.tv_nsec) / 1e9;
  fprintf(stderr, "slotmalloc-fuzz: %llu operations in %.1f s (%.0f ops/s), threads %d\n", op_total, s,
          s > 0 ? (double)op_total / s : 0.0, NT);
  if (cap_fd >= 0) {
    char path[256];
    const char *dir = getenv("FUZZ_CAPTURE_DIR");
    snprintf(path, sizeof path, "%s/slotmalloc-fuzz-stderr.%d", dir ? dir : "/tmp", (int)getpid());
    unlink(path);
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  clock_gettime(CLOCK_MONOTONIC, &t_start);
  init_once();
  atexit(print_count);
  return 0;
}

/* End of an input: every arena released, every object freed, every thread
 * back in its root, so inputs do not depend on each other (the library's
 * internal state carries over, as in a long-running program). */
static void reset_model(void) {
  snprintf(op_desc, sizeof op_desc, "end of input clean-up");
  sweep(op_desc);
  for (int t = 0; t < nthreads; t++) {
    call_t c = {.fn = F_ENTER, .ar = NULL};
    call_on(t, &c);
    cur[t] = t;
  }
  for (int i = NT; i < NT + MAXA; i++) {
    if (!ar[i].used) continue;
    while (ar[i].refs > 0) {
      call_t c = {.fn = F_RELEASE, .ar = ar[i].a};
      call_on(0, &c);
      ar[i].refs--;
    }
    model_close(i);
    ar[i].used = false;
  }
  while (nobj) {
    call_t c = {.fn = F_FREE, .p = obj[nobj - 1].p};
    capture_begin();
    call_on(0, &c);
    expect_reports(capture_end(), 0, 0, 0, NULL);
    kill_obj(nobj - 1);
  }
  sweep(op_desc);
  nstale = 0;
  live_bytes = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  init_once();
  in_data = data;
  in_len = size;
  in_pos = 0;
  op_index = 0;
  nthreads = NT > 1 ? 1 + u8() % NT : 1; /* the first byte: how many threads this input uses */
  while (in_pos < in_len && op_index < 4000) {
    op_index++;
    op_total++;
    uint8_t op = u8();
    snprintf(op_desc, sizeof op_desc, "opcode %u", op);
    switch (op % 32) {
      case 0:
      case 1:
      case 2: op_malloc(0); break;
      case 3:
      case 4: op_malloc(1); break;
      case 5: op_malloc(2); break;
      case 6: op_calloc(); break;
      case 7:
      case 8: op_aligned(); break;
      case 9:
      case 10:
      case 11: op_free(); break;
      case 12:
      case 13: op_realloc(); break;
      case 14: op_usable(); break;
      case 15:
      case 16: op_arena_new(); break;
      case 17:
      case 18:
      case 19: op_arena_alloc(); break;
      case 20: op_close(); break;
      case 21: op_retain_release(); break;
      case 22: op_promote(); break;
      case 23: op_steal(); break;
      case 24: op_merge(); break;
      case 25: op_enter(); break;
      case 26: op_set_limit(); break;
      case 27: op_hfree(); break;
      case 28: op_collect(); break;
      case 29: op_misuse(); break;
#if NT > 1
      case 30: op_race_close(); break;
      case 31: op_race_free(); break;
#else
      case 30:
      case 31: op_malloc(op & 1); break;
#endif
    }
    if (trace) fprintf(stderr, "op #%lu: %s\n", op_index, op_desc);
    if (op_index % SWEEP_EVERY == 0) sweep(op_desc);
  }
  reset_model();
  return 0;
}

#ifdef FUZZ_REPLAY_MAIN
/* Replay: runs each file (or each file of each directory) through the target. */
static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  static uint8_t buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  uint8_t *copy = malloc(n ? n : 1);
  memcpy(copy, buf, n);
  LLVMFuzzerTestOneInput(copy, n);
  free(copy);
  return 0;
}

int main(int argc, char **argv) {
  LLVMFuzzerInitialize(&argc, &argv);
  int files = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "replay: cannot read %s\n", argv[i]);
      return 1;
    }
    if (S_ISDIR(st.st_mode)) {
      struct dirent **names;
      int n = scandir(argv[i], &names, NULL, alphasort);
      for (int k = 0; k < n; k++) {
        if (names[k]->d_name[0] != '.') {
          char path[4096];
          snprintf(path, sizeof path, "%s/%s", argv[i], names[k]->d_name);
          if (run_file(path) == 0) files++;
        }
        free(names[k]);
      }
      free(names);
    } else if (run_file(argv[i]) == 0) {
      files++;
    }
  }
  fprintf(stderr, "replay: %d inputs\n", files);
  return 0;
}
#endif
