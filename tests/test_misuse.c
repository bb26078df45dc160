/* test_misuse.c: death tests for double frees and invalid frees/reallocs.
 *
 * Each bad call runs in a child process: this same executable re-executed with
 * SM_MISUSE_CASE=<case> in its environment (options such as
 * SLOTMALLOC_ABORT_ON_ERROR are read at start-up, so the child must be a new
 * process image). A constructor below runs the case before Criterion's main:
 *   1. allocates "witness" objects filled with patterns,
 *   2. prints "ADDR <the pointer it will pass, as %p>" on stdout,
 *   3. makes the bad call,
 *   4. (still alive: report-and-ignore mode) checks every witness, allocates a
 *      little more, prints "SURVIVED" and exits 0.
 * The parent checks:
 *   default mode:                    killed by SIGABRT, stderr exactly one line
 *                                    "slotmalloc: <kind> of <ADDR>..."
 *   SLOTMALLOC_ABORT_ON_ERROR=0:     the same line, exit 0, "SURVIVED"
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "slotmalloc.h"
#include "testutil.h"

/* ==== the child side ======================================================= */

enum { MAXW = 128 };
static struct {
  void *p;
  size_t n;
  uint64_t seed;
} witness[MAXW];
static int nwitness;

static void witness_add(void *p, size_t n) {
  if (nwitness == MAXW) abort();
  uint64_t seed = 0x5eed0000u + (uint64_t)nwitness;
  tu_fill(p, n, seed);
  witness[nwitness].p = p;
  witness[nwitness].n = n;
  witness[nwitness].seed = seed;
  nwitness++;
}

/* Live objects of many sizes, before and after the bad pointer's own. */
static void make_witnesses(int count) {
  static const size_t sizes[] = {16, 48, 64, 100, 1000, 5000, 40000, 300000, 2 * MiB};
  for (int i = 0; i < count; i++) {
    size_t n = sizes[i % (sizeof sizes / sizeof *sizes)];
    void *p = malloc(n);
    if (!p) abort();
    witness_add(p, n);
  }
}

static void announce(const void *p) {
  printf("ADDR %p\n", p);
  fflush(stdout);
}

static int g_global[64]; /* a global: not from the allocator */

/* --- double frees --- */
/* A slot freed twice: once the report is made (report-and-ignore mode), it
 * must read free, as before the second free (free's fast path changes its
 * generation before it knows, and puts it back). */
static void *freed_twice;
static void dbl(size_t n, int use_sm) {
  make_witnesses(8);
  void *p = use_sm ? sm_malloc(n) : malloc(n);
  make_witnesses(8);
  (use_sm ? sm_free : free)(p);
  announce(p);
  (use_sm ? sm_free : free)(tu_opaque(p));
  freed_twice = p;
}
static void case_double_free_16(void) { dbl(16, 0); }
static void case_double_free_48(void) { dbl(48, 0); }
static void case_double_free_1000(void) { dbl(1000, 0); }
static void case_double_free_20000(void) { dbl(20000, 0); }
static void case_double_free_200000(void) { dbl(200000, 0); }
static void case_double_free_large(void) { dbl(6 * MiB, 0); }
static void case_sm_double_free(void) { dbl(48, 1); }

/* double free with other allocations between the two frees */
static void case_double_free_after_allocs(void) {
  static const size_t other[] = {200, 1000, 5000, 300000};
  void *p = malloc(48);
  free(p);
  for (int i = 0; i < 20; i++) { /* none in 48's size class: p's slot stays free */
    void *w = malloc(other[i % 4]);
    if (!w || w == p) abort();
    witness_add(w, other[i % 4]);
  }
  announce(p);
  free(tu_opaque(p));
}

/* an object allocated by a thread that has exited, freed twice by another */
static void *alloc_in_thread(void *arg) {
  (void)arg;
  return malloc(72);
}
static void case_double_free_exited_thread(void) {
  pthread_t t;
  void *p;
  if (pthread_create(&t, NULL, alloc_in_thread, NULL) != 0) abort();
  pthread_join(t, &p);
  make_witnesses(8);
  free(p);
  announce(p);
  free(tu_opaque(p));
}

/* an object freed twice by a thread that does not own its block, while the
 * first free still waits in that thread's batch of remote frees */
static void *free_twice_in_thread(void *p) {
  free(p);
  announce(p);
  free(tu_opaque(p));
  return NULL;
}
static void case_double_free_remote_batched(void) {
  make_witnesses(8);
  void *q[8];
  for (int i = 0; i < 8; i++) q[i] = malloc(48); /* the batch holds a few frees before p's */
  void *p = malloc(48);
  make_witnesses(8);
  pthread_t t;
  for (int i = 0; i < 8; i++) free(q[i]); /* local frees */
  if (pthread_create(&t, NULL, free_twice_in_thread, p) != 0) abort();
  pthread_join(t, NULL);
}

/* an object of a closed arena: its slot is no longer live */
static void case_free_closed_arena(void) {
  sm_arena_t *a = sm_arena_new(NULL);
  if (!a) abort();
  void *p = sm_arena_malloc(a, 64);
  void *q = sm_arena_malloc(a, 64);
  if (!p || !q) abort();
  make_witnesses(8);
  sm_arena_close(a);
  announce(p);
  free(tu_opaque(p));
  sm_arena_release(a);
}
/* the same after the closed arena's memory was handed back (sm_collect) */
static void case_free_closed_arena_collected(void) {
  make_witnesses(8); /* before: an allocation after the close could reuse p's slot */
  sm_arena_t *a = sm_arena_new(NULL);
  if (!a) abort();
  void *p = sm_arena_malloc(a, 64);
  if (!p) abort();
  sm_arena_close(a);
  sm_arena_release(a);
  sm_collect(SIZE_MAX);
  announce(p);
  free(tu_opaque(p));
}

/* --- invalid frees: pointers slotmalloc did not hand out --- */
static void case_invalid_free_interior(void) {
  char *p = malloc(64);
  witness_add(p, 64); /* p stays live and must stay intact */
  make_witnesses(8);
  announce(p + 16);
  free(tu_opaque(p + 16));
}
static void case_invalid_free_interior_odd(void) {
  char *p = malloc(200);
  witness_add(p, 200);
  make_witnesses(8);
  announce(p + 1);
  free(tu_opaque(p + 1));
}
static void case_invalid_free_large_interior(void) {
  char *p = malloc(4 * MiB);
  witness_add(p, 4 * MiB);
  make_witnesses(8);
  announce(p + 4096);
  free(tu_opaque(p + 4096));
}
static void case_invalid_free_stack(void) {
  char buf[128];
  memset(buf, 1, sizeof buf);
  make_witnesses(8);
  announce(buf);
  free(tu_opaque(buf));
  if (buf[0] != 1 || buf[127] != 1) abort(); /* the stack was not written to */
}
static void case_invalid_free_global(void) {
  make_witnesses(8);
  announce(g_global);
  free(tu_opaque(g_global));
}
static void case_invalid_free_mmap(void) {
  char *m = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) abort();
  memset(m, 7, 1 << 16);
  make_witnesses(8);
  announce(m + 4096);
  free(tu_opaque(m + 4096));
  for (int i = 0; i < 1 << 16; i++)
    if (m[i] != 7) abort(); /* the foreign mapping was not written to */
}
static void case_invalid_free_wild(void) {
  make_witnesses(8);
  void *w = (void *)(uintptr_t)0x10000; /* unmapped: checking it must not fault */
  announce(w);
  free(tu_opaque(w));
}
static void case_sm_invalid_free_interior(void) {
  char *p = sm_malloc(64);
  witness_add(p, 64);
  make_witnesses(8);
  announce(p + 32);
  sm_free(tu_opaque(p + 32));
}

/* a slot start of a fresh block that was never handed out: not an object, so
 * an invalid free (not a double free); freed from another arena's thread
 * (the remote path) and from the thread allocating there (the local path) */
static void unused_slot(int local) {
  sm_arena_t *a = sm_arena_new(NULL); /* its own fresh blocks */
  if (!a) abort();
  sm_arena_t *prev = local ? sm_arena_enter(a) : NULL;
  char *p = local ? malloc(16) : sm_arena_malloc(a, 16);
  if (!p) abort();
  witness_add(p, 16);
  make_witnesses(8);
#ifdef SM_HARDENED
  /* p's class is 32 there (the canary's 8 bytes), and a fresh page's slots go
   * out shuffled: 50 slots on may be a witness; a page further on, none went out */
  char *unused = p + 4096 + 16 * 50;
#else
  char *unused = p + 16 * 50;
#endif
  announce(unused);
  free(tu_opaque(unused));
  if (local) sm_arena_enter(prev);
}
/* a double free of a slot whose generation wrapped and came back to its first
 * value (slot 0 starts at 0; 256 reuses later it reads 0 again): still a
 * double free, not "never handed out" */
static void case_double_free_after_wrap(void) {
  sm_arena_t *a = sm_arena_new(NULL);
  if (!a) abort();
  sm_arena_t *prev = sm_arena_enter(a); /* local frees: the slot comes back each time */
  make_witnesses(8);
  void *p = NULL;
  for (int r = 0; r < 128; r++) { /* 2 generations a reuse: 256 */
    p = malloc(48);
    if (!p) abort();
    free(p);
  }
  announce(p);
  free(tu_opaque(p));
  sm_arena_enter(prev);
}
/* the last multiple of the slot size in a small block (64 KiB, aligned): past
 * the last slot, where the block keeps its generation table; freed by the
 * thread that allocates there (free's fast path, which has no bound check) */
static void block_tail(size_t size) {
  sm_arena_t *a = sm_arena_new(NULL);
  if (!a) abort();
  sm_arena_t *prev = sm_arena_enter(a);
  char *p = malloc(size);
  if (!p) abort();
  witness_add(p, size);
  make_witnesses(8);
  uintptr_t end = ((uintptr_t)p | 0xffff) + 1;
  char *tail = p + (end - 1 - (uintptr_t)p) / size * size;
  announce(tail);
  free(tu_opaque(tail));
  sm_arena_enter(prev);
}
static void case_invalid_free_block_tail_16(void) { block_tail(16); }
static void case_invalid_free_block_tail_48(void) { block_tail(48); }
/* a double free of a medium object after malloc_trim tidied its block (the
 * free slots past the last used one dropped, bump lowered below them) */
static void case_double_free_after_trim(void) {
  void *p[40];
  for (int i = 0; i < 40; i++)
    if (!(p[i] = malloc(8000))) abort();
  for (int i = 20; i < 40; i++) free(p[i]);
  malloc_trim(0);
  make_witnesses(8);
  announce(p[38]);
  free(tu_opaque(p[38]));
}
static void case_invalid_free_unused_slot(void) { unused_slot(0); }
static void case_invalid_free_unused_slot_local(void) { unused_slot(1); }

/* --- invalid reallocs --- */
static void case_invalid_realloc_interior(void) {
  char *p = malloc(64);
  witness_add(p, 64);
  make_witnesses(8);
  announce(p + 16);
  void *r = realloc(tu_opaque(p + 16), 100);
  (void)r;
}
static void case_invalid_realloc_stack(void) {
  char buf[64];
  memset(buf, 2, sizeof buf);
  make_witnesses(8);
  announce(buf);
  void *r = realloc(tu_opaque(buf), 10);
  (void)r;
}
static void case_invalid_realloc_global(void) {
  make_witnesses(8);
  announce(g_global);
  void *r = realloc(tu_opaque(g_global), 1000);
  (void)r;
}
static void case_invalid_realloc_mmap(void) {
  char *m = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) abort();
  make_witnesses(8);
  announce(m);
  void *r = realloc(tu_opaque(m), 100000);
  (void)r;
}
static void case_realloc_freed(void) {
  void *p = malloc(48);
  make_witnesses(8);
  free(p);
  announce(p);
  void *r = realloc(tu_opaque(p), 100);
  (void)r;
}

typedef struct {
  const char *name;
  void (*fn)(void);
  const char *kind;     /* the expected message: "double free", ... */
  const char *alt_kind; /* another acceptable message, or NULL */
} misuse_case_t;

static const misuse_case_t CASES[] = {
    {"double_free_16", case_double_free_16, "double free", NULL},
    {"double_free_48", case_double_free_48, "double free", NULL},
    {"double_free_1000", case_double_free_1000, "double free", NULL},
    {"double_free_20000", case_double_free_20000, "double free", NULL},
    {"double_free_200000", case_double_free_200000, "double free", NULL},
    /* a freed large object may be unmapped: then it is simply not ours */
    {"double_free_large", case_double_free_large, "double free", "invalid free"},
    {"sm_double_free", case_sm_double_free, "double free", NULL},
    {"double_free_after_allocs", case_double_free_after_allocs, "double free", NULL},
    {"double_free_exited_thread", case_double_free_exited_thread, "double free", NULL},
    {"double_free_remote_batched", case_double_free_remote_batched, "double free", NULL},
    {"free_closed_arena", case_free_closed_arena, "double free", NULL},
    /* after sm_collect the arena's blocks may be gone: "not ours" is fine too */
    {"free_closed_arena_collected", case_free_closed_arena_collected, "double free", "invalid free"},
    {"invalid_free_interior", case_invalid_free_interior, "invalid free", NULL},
    {"invalid_free_interior_odd", case_invalid_free_interior_odd, "invalid free", NULL},
    {"invalid_free_large_interior", case_invalid_free_large_interior, "invalid free", NULL},
    {"invalid_free_stack", case_invalid_free_stack, "invalid free", NULL},
    {"invalid_free_global", case_invalid_free_global, "invalid free", NULL},
    {"invalid_free_mmap", case_invalid_free_mmap, "invalid free", NULL},
    {"invalid_free_wild", case_invalid_free_wild, "invalid free", NULL},
    {"sm_invalid_free_interior", case_sm_invalid_free_interior, "invalid free", NULL},
    {"double_free_after_wrap", case_double_free_after_wrap, "double free", NULL},
    {"invalid_free_unused_slot", case_invalid_free_unused_slot, "invalid free", NULL},
    {"invalid_free_unused_slot_local", case_invalid_free_unused_slot_local, "invalid free", NULL},
    {"double_free_after_trim", case_double_free_after_trim, "double free", NULL},
    {"invalid_free_block_tail_16", case_invalid_free_block_tail_16, "invalid free", NULL},
    {"invalid_free_block_tail_48", case_invalid_free_block_tail_48, "invalid free", NULL},
    {"invalid_realloc_interior", case_invalid_realloc_interior, "invalid realloc", NULL},
    {"invalid_realloc_stack", case_invalid_realloc_stack, "invalid realloc", NULL},
    {"invalid_realloc_global", case_invalid_realloc_global, "invalid realloc", NULL},
    {"invalid_realloc_mmap", case_invalid_realloc_mmap, "invalid realloc", NULL},
    /* a freed pointer is not a live object: either wording is fine */
    {"realloc_freed", case_realloc_freed, "invalid realloc", "double free"},
};
enum { NCASES = sizeof CASES / sizeof *CASES };

static const misuse_case_t *find_case(const char *name) {
  for (int i = 0; i < NCASES; i++)
    if (strcmp(CASES[i].name, name) == 0) return &CASES[i];
  return NULL;
}

/* Runs in every process of this executable, before Criterion's main: in a
 * child started by run_case, runs the case and exits. */
__attribute__((constructor)) static void misuse_child_main(void) {
  const char *name = getenv("SM_MISUSE_CASE");
  if (!name) return;
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  const misuse_case_t *c = find_case(name);
  if (!c) {
    fprintf(stderr, "misuse child: unknown case %s\n", name);
    _exit(100);
  }
  printf("START\n"); /* stdout's buffer is allocated now, not between the frees */
  fflush(stdout);
  c->fn();
  /* still running: report-and-ignore mode */
  if (freed_twice && sm_handle_of(freed_twice) != 0) {
    printf("LIVE the slot freed twice reads live\n");
    fflush(stdout);
    _exit(103);
  }
  for (int i = 0; i < nwitness; i++) {
    size_t off = tu_check(witness[i].p, witness[i].n, witness[i].seed);
    if (off != SIZE_MAX) {
      printf("CLOBBERED witness %d (%p, %zu bytes) at offset %zu\n", i, witness[i].p, witness[i].n, off);
      fflush(stdout);
      _exit(101);
    }
  }
  for (int i = 0; i < 1000; i++) {
    void *p = malloc((size_t)(i % 200) * 8 + 1);
    if (!p) _exit(102);
    memset(p, 3, 1);
    free(p);
  }
  for (int i = 0; i < nwitness; i++) free(witness[i].p);
  printf("SURVIVED\n");
  fflush(stdout);
  _exit(0);
}

/* ==== the parent side ========================================================= */

typedef enum { MODE_DEFAULT, MODE_ABORT_1, MODE_REPORT } mode_t_;

static void run_case(const char *name, mode_t_ mode, tu_proc_t *r) {
  static char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  cr_assert_gt(n, 0, "readlink /proc/self/exe failed");
  self[n] = 0;
  char casevar[128];
  snprintf(casevar, sizeof casevar, "SM_MISUSE_CASE=%s", name);
  const char *set[3] = {casevar, NULL, NULL};
  if (mode == MODE_REPORT) set[1] = "SLOTMALLOC_ABORT_ON_ERROR=0";
  if (mode == MODE_ABORT_1) set[1] = "SLOTMALLOC_ABORT_ON_ERROR=1";
  const char *unset[] = {"SLOTMALLOC_ABORT_ON_ERROR", "SLOTMALLOC_STATS", "SLOTMALLOC_VERBOSE", NULL};
  char **env = tu_env_make(unset, set);
  char *argv[] = {self, NULL};
  cr_assert_eq(tu_run(argv, env, NULL, NULL, 60, r), 0, "could not start the child");
  free(env);
}

/* Checks that stderr is exactly one line "slotmalloc: <kind> of <addr>..." with
 * addr the one the child announced; kind may be c->kind or c->alt_kind. */
static void check_message(const misuse_case_t *c, const tu_proc_t *r) {
  const char *a = strstr(r->out, "ADDR ");
  cr_assert_not_null(a, "[%s] the child did not reach the bad call (stdout: \"%s\", stderr: \"%s\", %s)", c->name,
                     r->out, r->err, tu_status_str(r));
  char addr[64];
  cr_assert_eq(sscanf(a, "ADDR %63s", addr), 1);
  size_t len = r->err_len;
  cr_assert_gt(len, 0, "[%s] nothing on stderr (%s)", c->name, tu_status_str(r));
  cr_assert_eq(r->err[len - 1], '\n', "[%s] stderr does not end with a newline: \"%s\"", c->name, r->err);
  cr_assert_null(memchr(r->err, '\n', len - 1), "[%s] stderr has more than one line: \"%s\"", c->name, r->err);
  const char *kinds[2] = {c->kind, c->alt_kind};
  int ok = 0;
  for (int k = 0; k < 2 && !ok; k++) {
    if (!kinds[k]) continue;
    char want[160];
    int wl = snprintf(want, sizeof want, "slotmalloc: %s of %s", kinds[k], addr);
    if (strncmp(r->err, want, (size_t)wl) == 0) {
      char next = r->err[wl];
      ok = !((next >= '0' && next <= '9') || (next >= 'a' && next <= 'f') || (next >= 'A' && next <= 'F'));
    }
  }
  cr_assert(ok, "[%s] stderr is \"%.*s\", want a line starting \"slotmalloc: %s of %s\"%s%s", c->name, (int)len - 1,
            r->err, c->kind, addr, c->alt_kind ? " or with " : "", c->alt_kind ? c->alt_kind : "");
}

static void expect_abort(const char *name, mode_t_ mode) {
  const misuse_case_t *c = find_case(name);
  cr_assert_not_null(c);
  tu_proc_t r;
  run_case(name, mode, &r);
  cr_assert(!r.timed_out, "[%s] the child hung (killed after 60 s)", name);
  cr_assert(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT,
            "[%s] want death by SIGABRT, got %s; stdout \"%s\" stderr \"%s\"", name, tu_status_str(&r), r.out, r.err);
  cr_assert_null(strstr(r.out, "SURVIVED"), "[%s] the child survived", name);
  check_message(c, &r);
  tu_proc_free(&r);
}

static void expect_report(const char *name) {
  const misuse_case_t *c = find_case(name);
  cr_assert_not_null(c);
  tu_proc_t r;
  run_case(name, MODE_REPORT, &r);
  cr_assert(!r.timed_out, "[%s] the child hung (killed after 60 s)", name);
  cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
            "[%s] SLOTMALLOC_ABORT_ON_ERROR=0: want exit 0, got %s (101: a live object was clobbered, 103: the slot "
            "freed twice reads live, 102: malloc "
            "failed afterwards); stdout \"%s\" stderr \"%s\"",
            name, tu_status_str(&r), r.out, r.err);
  cr_assert_not_null(strstr(r.out, "SURVIVED"), "[%s] no SURVIVED line: \"%s\"", name, r.out);
  check_message(c, &r);
  tu_proc_free(&r);
}

/* For each case: in default mode the child aborts with the exact message; with
 * SLOTMALLOC_ABORT_ON_ERROR=0 it prints the message, goes on, and every other
 * live object is intact. */
#define MISUSE_TESTS(NAME)                                                       \
  Test(misuse_abort, NAME, .timeout = 90) { expect_abort(#NAME, MODE_DEFAULT); } \
  Test(misuse_report, NAME, .timeout = 90) { expect_report(#NAME); }

MISUSE_TESTS(double_free_16)
MISUSE_TESTS(double_free_48)
MISUSE_TESTS(double_free_1000)
MISUSE_TESTS(double_free_20000)
MISUSE_TESTS(double_free_200000)
MISUSE_TESTS(double_free_large)
MISUSE_TESTS(sm_double_free)
MISUSE_TESTS(double_free_after_allocs)
MISUSE_TESTS(double_free_exited_thread)
MISUSE_TESTS(double_free_remote_batched)
MISUSE_TESTS(free_closed_arena)
MISUSE_TESTS(free_closed_arena_collected)
MISUSE_TESTS(invalid_free_interior)
MISUSE_TESTS(invalid_free_interior_odd)
MISUSE_TESTS(invalid_free_large_interior)
MISUSE_TESTS(invalid_free_stack)
MISUSE_TESTS(invalid_free_global)
MISUSE_TESTS(invalid_free_mmap)
MISUSE_TESTS(invalid_free_wild)
MISUSE_TESTS(sm_invalid_free_interior)
MISUSE_TESTS(double_free_after_wrap)
MISUSE_TESTS(invalid_free_unused_slot)
MISUSE_TESTS(invalid_free_unused_slot_local)
MISUSE_TESTS(double_free_after_trim)
MISUSE_TESTS(invalid_free_block_tail_16)
MISUSE_TESTS(invalid_free_block_tail_48)
MISUSE_TESTS(invalid_realloc_interior)
MISUSE_TESTS(invalid_realloc_stack)
MISUSE_TESTS(invalid_realloc_global)
MISUSE_TESTS(invalid_realloc_mmap)
MISUSE_TESTS(realloc_freed)

/* SLOTMALLOC_ABORT_ON_ERROR=1 is the same as the default: abort. */
Test(misuse_abort, explicit_abort_option, .timeout = 90) { expect_abort("double_free_48", MODE_ABORT_1); }

/* Every case of the table has its pair of tests above (a guard against a case
 * added to the table and forgotten). */
Test(misuse, table_complete) { cr_assert_eq(NCASES, 31, "update MISUSE_TESTS when adding cases"); }

static void no_core(void) {
  struct rlimit r = {0, 0};
  setrlimit(RLIMIT_CORE, &r);
}

/* In-process, as Criterion sees it: a double free kills the test with SIGABRT. */
Test(misuse_inproc, double_free_aborts, .signal = SIGABRT, .init = no_core) {
  void *p = malloc(40);
  free(p);
  free(tu_opaque(p));
}

/* In-process: freeing an interior pointer kills the test with SIGABRT. */
Test(misuse_inproc, interior_free_aborts, .signal = SIGABRT, .init = no_core) {
  char *p = malloc(40);
  free(tu_opaque(p + 8));
}
