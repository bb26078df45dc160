/* test_hardened.c: the hardened build's checks (-DSLOTMALLOC_HARDENED=ON; this
 * file is then compiled with SM_HARDENED=1), and the default build's behaviour
 * in the same situations (unchanged: no report, no abort).
 *
 * Each attack runs in a child process: this executable re-executed with
 * SM_HD_CASE=<case> (a constructor runs the case before Criterion's main). The
 * child prints "ADDR <pointer>" (the object the report must name) and then
 * does the bad thing; still alive afterwards, it prints "SURVIVED" and exits 0.
 * The parent checks, in the hardened build: killed by SIGABRT (SIGSEGV for a
 * guard page), stderr the one report line naming ADDR; in the default build,
 * for the cases it survives: exit 0 and no report. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/membarrier.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "slotmalloc.h"
#include "testutil.h"

#ifdef SM_HARDENED
#define HARDENED 1
#else
#define HARDENED 0
#endif

/* ==== the child side ======================================================= */

static void say_addr(const void *p) {
  printf("ADDR %p\n", p);
  fflush(stdout);
}

/* A write one byte past the request, then free. The byte written differs from
 * the one there (a write of the canary's own byte, a chance of 1 in 256 for a
 * fixed value, changes nothing to detect). */
static void case_overflow_free(void) {
  char *p = malloc(tu_hide(24));
  say_addr(p);
  memset(p, 'A', tu_hide(24));
  volatile char *past = (char *)tu_opaque(p) + tu_hide(24);
  *past = (char)~*past;
  free(tu_opaque(p));
}

/* A write past the request, then realloc. */
static void case_overflow_realloc(void) {
  char *p = malloc(tu_hide(100));
  say_addr(p);
  memset(p, 'B', tu_hide(103));
  p = realloc(tu_opaque(p), tu_hide(4000));
  free(p);
}

/* A freed slot of class 64, out of the quarantine: it is its block's next to
 * hand out. In the hardened build, the frees go onto the block's pending
 * list (v[5] first); when the freelist runs dry, all but the newest four
 * (v[5] to v[2]) go onto it: the allocations before hand out v[1], then
 * v[0] comes next. (The default build hands out v[5] next.) */
static char *freed_head(void) {
  char *v[6];
  for (int i = 0; i < 6; i++) v[i] = malloc(tu_hide(56));
  for (int i = 0; i < 6; i++) free(v[i]);
  if (!HARDENED) return v[5];
  for (int k = 0; k < 100000; k++) {
    char *q = malloc(tu_hide(56)); /* kept: the freelist drains */
    for (int i = 2; i < 6; i++)
      if (q == v[i]) {
        printf("QUARANTINE BROKEN\n"); /* a slot of the newest four handed out */
        fflush(stdout);
        _exit(4);
      }
    if (q == v[1]) return v[0];
  }
  printf("NOT FOUND\n");
  fflush(stdout);
  _exit(5);
}

/* A write into a freed slot's link (its first word), as a dangling pointer
 * would; two allocations then follow the link. */
static void case_uaf_link(void) {
  uint64_t *p = (uint64_t *)freed_head();
  p[0] ^= 0x4141414141414140u;
  void *a = malloc(tu_hide(56)); /* p itself: its own words are intact */
  say_addr(a);
  void *b = malloc(tu_hide(56)); /* where the link points */
  free(a);
  free(b);
}

/* A forged link: the address of a fake free slot on the stack, written raw
 * (the attacker does not know the block's key). */
static void case_forged_link(void) {
  static _Alignas(64) char fake[256];
  void **p = (void **)freed_head();
  p[0] = fake;
  p[1] = fake + 64;
  say_addr(p);
  void *a = malloc(tu_hide(56)); /* p: its gen word is the fake's, not its own */
  void *b = malloc(tu_hide(56));
  printf("GOT %p %p\n", a, b);
}

/* A write into a freed slot past its link: its zero word in the hardened
 * build (the default build's second word points at the generation, which
 * its next malloc writes through: there, past both words). */
static void case_uaf_write(void) {
  char *p = freed_head();
  say_addr(p);
  p[HARDENED ? 12 : 20] = 'Z';
  void *a = malloc(tu_hide(56)); /* p again */
  free(a);
}

/* Two threads free one object at the same moment, many times: one of each
 * pair of frees is a double free, whichever thread's lands second. */
static pthread_barrier_t race_bar;
static void *volatile race_obj;
static void *race_thread(void *arg) {
  (void)arg;
  for (;;) {
    pthread_barrier_wait(&race_bar);
    free(race_obj);
    pthread_barrier_wait(&race_bar);
  }
  return NULL;
}
static void case_race_double_free(void) {
  pthread_barrier_init(&race_bar, NULL, 2);
  pthread_t t;
  pthread_create(&t, NULL, race_thread, NULL);
  void *first = malloc(tu_hide(48));
  say_addr(first);
  race_obj = first;
  for (int i = 0; i < 1000; i++) {
    pthread_barrier_wait(&race_bar);
    free(race_obj);
    pthread_barrier_wait(&race_bar);
    race_obj = malloc(tu_hide(48));
    if (race_obj != first) {
      printf("MOVED\n"); /* the report names the first object; stop the race */
      fflush(stdout);
      _exit(3);
    }
  }
}

/* A remote free (another thread's), then a write into the freed slot's link
 * while it waits on the owner's remote list; the owner collects it. */
static void *remote_free_thread(void *p) {
  free(p);
  return NULL;
}
static void case_uaf_remote(void) {
  void *v[8];
  for (int i = 0; i < 8; i++) v[i] = malloc(tu_hide(56));
  pthread_t t;
  pthread_create(&t, NULL, remote_free_thread, v[3]);
  pthread_join(t, NULL); /* its exit flushes its batch onto the block's remote list */
  ((uint64_t *)v[3])[0] ^= 0x4141414141414140u;
  say_addr(v[3]);
  for (int i = 0; i < 100000; i++) (void)malloc(tu_hide(56)); /* collects the remote list */
}

/* The same, a write into the second word (the zero word) of the slot waiting
 * on the remote list: the collect puts the list on the freelist as it is, and
 * the pop reports the slot where it would hand it out again. */
static void case_uaf_remote_zero(void) {
  void *v[8];
  for (int i = 0; i < 8; i++) v[i] = malloc(tu_hide(56));
  pthread_t t;
  pthread_create(&t, NULL, remote_free_thread, v[3]);
  pthread_join(t, NULL);
  ((char *)v[3])[12] = 'Z';
  say_addr(v[3]);
  for (int i = 0; i < 100000; i++) (void)malloc(tu_hide(56));
}

/* A write just past a block's slots: the guard page at the block's end. */
static void case_block_guard(void) {
  char *p = malloc(tu_hide(100));
  say_addr(p);
  volatile char *g = (char *)(((uintptr_t)p & ~(uintptr_t)0xffff) | 0xf000); /* a 64 KiB block's last page */
  *g = 1;
}

/* Writes just past and just before a large object. */
static void case_large_guard_after(void) {
  char *p = malloc(tu_hide(300000));
  say_addr(p);
  volatile char *g = p + sm_usable_size(p);
  *g = 1;
}
static void case_large_guard_before(void) {
  char *p = malloc(tu_hide(300000));
  say_addr(p);
  volatile char *g = (char *)tu_opaque(p) - 1;
  *g = 1;
}

/* A cached large object taken again for a bigger request: its mapping grown
 * (in place, or moved when blocked is set: a page mapped right after the
 * cached mapping stops it growing there), or for a much smaller one: its
 * tail given back. The object returned, all of it written. */
static char *large_resized(size_t first, size_t then, bool blocked) {
  char *old = malloc(tu_hide(first));
  size_t room = sm_usable_size(old);
  free(old);
  if (blocked) { /* past the old trailing guard page (hardened) or the mapping's end */
    char *end = (char *)(((uintptr_t)old + room + 4095) & ~(uintptr_t)4095) + (HARDENED ? 4096 : 0);
    void *q = mmap(end, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (q != end && q != MAP_FAILED) munmap(q, 4096);
  }
  char *p = malloc(tu_hide(then));
  memset(p, 'L', sm_usable_size(p));
  return p;
}
static void case_large_moved_guard_after(void) {
  char *p = large_resized(1 << 20, 3 << 20, true);
  say_addr(p);
  volatile char *g = p + sm_usable_size(p);
  *g = 1;
}
static void case_large_moved_guard_before(void) {
  char *p = large_resized(1 << 20, 3 << 20, true);
  say_addr(p);
  volatile char *g = (char *)tu_opaque(p) - 1;
  *g = 1;
}
static void case_large_shrunk_guard_after(void) {
  char *p = large_resized(8 << 20, 1 << 20, false);
  say_addr(p);
  volatile char *g = p + sm_usable_size(p);
  *g = 1;
}

/* A large object grown by realloc, and one shrunk by it. */
static char *large_reallocated(size_t first, size_t then) {
  char *p = malloc(tu_hide(first));
  memset(p, 'R', first);
  return realloc(tu_opaque(p), tu_hide(then));
}
static void case_large_realloc_guard_after(void) {
  char *p = large_reallocated(300000, 3 << 20);
  say_addr(p);
  volatile char *g = p + sm_usable_size(p);
  *g = 1;
}
static void case_large_realloc_shrunk_guard_after(void) {
  char *p = large_reallocated(8 << 20, 300000);
  say_addr(p);
  volatile char *g = p + sm_usable_size(p);
  *g = 1;
}

typedef struct {
  const char *name;
  void (*fn)(void);
} hd_case_t;
static const hd_case_t cases[] = {
    {"overflow_free", case_overflow_free},
    {"overflow_realloc", case_overflow_realloc},
    {"uaf_link", case_uaf_link},
    {"forged_link", case_forged_link},
    {"uaf_write", case_uaf_write},
    {"race_double_free", case_race_double_free},
    {"uaf_remote", case_uaf_remote},
    {"uaf_remote_zero", case_uaf_remote_zero},
    {"block_guard", case_block_guard},
    {"large_guard_after", case_large_guard_after},
    {"large_guard_before", case_large_guard_before},
    {"large_moved_guard_after", case_large_moved_guard_after},
    {"large_moved_guard_before", case_large_moved_guard_before},
    {"large_shrunk_guard_after", case_large_shrunk_guard_after},
    {"large_realloc_guard_after", case_large_realloc_guard_after},
    {"large_realloc_shrunk_guard_after", case_large_realloc_shrunk_guard_after},
};

__attribute__((constructor)) static void hd_child_main(void) {
  const char *name = getenv("SM_HD_CASE");
  if (!name) return;
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  printf("START\n");
  fflush(stdout);
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    if (strcmp(cases[i].name, name) == 0) {
      cases[i].fn();
      printf("SURVIVED\n");
      fflush(stdout);
      _exit(0);
    }
  }
  fprintf(stderr, "hardened child: unknown case %s\n", name);
  _exit(100);
}

/* ==== the parent side ====================================================== */

static void run_case_env(const char *name, const char *extra, tu_proc_t *r) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  cr_assert_gt(n, 0, "readlink /proc/self/exe failed");
  self[n] = 0;
  char var[128];
  snprintf(var, sizeof var, "SM_HD_CASE=%s", name);
  const char *unset[] = {"SM_HD_CASE", "SLOTMALLOC_ABORT_ON_ERROR", NULL};
  const char *set[] = {var, extra, NULL};
  char **env = tu_env_make(unset, set);
  char *argv[] = {self, NULL};
  cr_assert_eq(tu_run(argv, env, NULL, NULL, 60, r), 0, "could not run the child");
  free(env);
}

static void run_case(const char *name, tu_proc_t *r) { run_case_env(name, NULL, r); }

static const char *addr_of(const tu_proc_t *r, char *buf, size_t size) {
  const char *a = strstr(r->out, "ADDR ");
  cr_assert_not_null(a, "the child printed no ADDR: stdout '%s', stderr '%s'", r->out, r->err);
  a += 5;
  size_t k = 0;
  while (a[k] && a[k] != '\n' && k + 1 < size) {
    buf[k] = a[k];
    k++;
  }
  buf[k] = 0;
  return buf;
}

/* The hardened build: killed by SIGABRT with exactly one line, the report
 * "slotmalloc: <what><ADDR><rest>". */
static void expect_report(const char *name, const char *what, const char *rest) {
  tu_proc_t r;
  run_case(name, &r);
  char addr[64], want[256];
  addr_of(&r, addr, sizeof addr);
  snprintf(want, sizeof want, "slotmalloc: %s%s%s\n", what, addr, rest);
  cr_assert(!r.timed_out && WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT,
            "%s: %s, not killed by SIGABRT; stdout '%s', stderr '%s'", name, tu_status_str(&r), r.out, r.err);
  cr_assert_str_eq(r.err, want, "%s: stderr is '%s', want '%s'", name, r.err, want);
}

/* A report that names another address than ADDR (the bad link's) */
static void expect_list_report(const char *name) {
  tu_proc_t r;
  run_case(name, &r);
  cr_assert(!r.timed_out && WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT,
            "%s: %s, not killed by SIGABRT; stdout '%s', stderr '%s'", name, tu_status_str(&r), r.out, r.err);
  cr_assert(strncmp(r.err, "slotmalloc: corrupted free list in block 0x", 43) == 0 && strstr(r.err, " (slot 0x") &&
                strchr(r.err, '\n') == r.err + strlen(r.err) - 1,
            "%s: stderr is '%s', want one line 'slotmalloc: corrupted free list in block 0x... (slot 0x...)'", name,
            r.err);
}

static void expect_signal(const char *name, int sig) {
  tu_proc_t r;
  run_case(name, &r);
  cr_assert(!r.timed_out && WIFSIGNALED(r.status) && WTERMSIG(r.status) == sig, "%s: %s, want signal %d; stderr '%s'",
            name, tu_status_str(&r), sig, r.err);
  cr_assert(strstr(r.out, "ADDR ") && !strstr(r.out, "SURVIVED"), "%s: stdout '%s'", name, r.out);
}

/* The default build: the child goes on, nothing reported. */
static void expect_survival(const char *name) {
  tu_proc_t r;
  run_case(name, &r);
  cr_assert(!r.timed_out && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "%s: %s; stdout '%s', stderr '%s'",
            name, tu_status_str(&r), r.out, r.err);
  cr_assert(strstr(r.out, "SURVIVED"), "%s: stdout '%s'", name, r.out);
  cr_assert_str_eq(r.err, "", "%s: stderr '%s'", name, r.err);
}

Test(hardened, overflow_past_the_request_at_free) {
  if (HARDENED) expect_report("overflow_free", "heap overflow past the end of ", " (24 bytes asked)");
  else expect_survival("overflow_free"); /* the slot has room: nothing is checked */
}

Test(hardened, overflow_past_the_request_at_realloc) {
  if (HARDENED) expect_report("overflow_realloc", "heap overflow past the end of ", " (100 bytes asked)");
  else expect_survival("overflow_realloc");
}

Test(hardened, write_into_a_freed_slots_link) {
  if (!HARDENED) return; /* the default build follows the link */
  expect_list_report("uaf_link");
}

Test(hardened, forged_link) {
  if (!HARDENED) return; /* the default build hands out the fake */
  tu_proc_t r;
  run_case("forged_link", &r);
  char addr[64], want[256];
  addr_of(&r, addr, sizeof addr);
  cr_assert(!strstr(r.out, "GOT"), "the fake slot was handed out: '%s'", r.out);
  /* p's own gen word is the fake's: p is refused where it is popped */
  expect_list_report("forged_link");
  snprintf(want, sizeof want, " (slot %s)\n", addr);
  cr_assert(strstr(r.err, want), "the report names slot %s: '%s'", addr, r.err);
}

Test(hardened, write_after_free) {
  if (HARDENED) expect_report("uaf_write", "write after free to ", "");
  else expect_survival("uaf_write");
}

Test(hardened, double_free_through_a_race) {
  if (!HARDENED) return; /* the default build's owner frees with a plain store: a race may go unseen */
  expect_report("race_double_free", "double free of ", " (size 64)");
}

Test(hardened, write_into_a_remote_freed_slots_link) {
  if (!HARDENED) return;
  expect_list_report("uaf_remote");
}

Test(hardened, write_after_free_into_a_remote_freed_slot) {
  if (!HARDENED) return; /* the default build's second word points at the generation */
  expect_report("uaf_remote_zero", "write after free to ", "");
}

Test(hardened, guard_page_at_a_blocks_end) {
  if (HARDENED) expect_signal("block_guard", SIGSEGV);
  else expect_survival("block_guard"); /* slots, or the next block's */
}

Test(hardened, guard_pages_around_a_large_object) {
  if (!HARDENED) return; /* the default build maps the next page or not: either */
  expect_signal("large_guard_after", SIGSEGV);
  expect_signal("large_guard_before", SIGSEGV);
}

/* A cached large object is taken again, grown or shrunk, not unmapped for a
 * new mapping (the hardened build once unmapped one too small or more than 4
 * times too big: the large workload of the perf harness ran x1.5 the default
 * build's CPU time, faulting in new pages), and keeps its guard pages. */
Test(hardened, cached_large_object_grown_in_place_moved_and_shrunk) {
  struct {
    size_t first, then;
    bool blocked;
  } steps[] = {{1 << 20, 3 << 20, false}, {1 << 20, 3 << 20, true}, {8 << 20, 1 << 20, false}};
  for (size_t k = 0; k < sizeof steps / sizeof *steps; k++) {
    sm_stats_t s0, s1;
    free(malloc(tu_hide(64))); /* (the thread's heap set up before the counts) */
    malloc_trim(0);            /* the cache emptied: the last step's object goes */
    sm_arena_stats(NULL, &s0);
    char *p = large_resized(steps[k].first, steps[k].then, steps[k].blocked);
    sm_arena_stats(NULL, &s1);
    cr_assert_eq(s1.large_mapped, s0.large_mapped + 1, "step %zu: %zu large mappings made, not 1", k,
                 s1.large_mapped - s0.large_mapped);
    cr_assert_geq(sm_usable_size(p), steps[k].then);
    cr_assert_eq(p[steps[k].then - 1], 'L');
    free(p);
  }
  if (!HARDENED) return;
  expect_signal("large_moved_guard_after", SIGSEGV);
  expect_signal("large_moved_guard_before", SIGSEGV);
  expect_signal("large_shrunk_guard_after", SIGSEGV);
}

/* realloc of a large object resizes its mapping (the hardened build once
 * copied it into a new one: the perf harness's realloc workload, whose
 * strings grow by small appends to 256 KiB, copied them at each step), and
 * the guard pages are there anew. */
Test(hardened, large_realloc_resizes_the_mapping) {
  size_t sizes[][2] = {{300000, 3 << 20}, {8 << 20, 300000}};
  for (size_t k = 0; k < 2; k++) {
    sm_stats_t s0, s1;
    free(malloc(tu_hide(64)));
    malloc_trim(0);
    sm_arena_stats(NULL, &s0);
    char *p = large_reallocated(sizes[k][0], sizes[k][1]);
    sm_arena_stats(NULL, &s1);
    cr_assert_eq(s1.large_mapped, s0.large_mapped + 1, "step %zu: %zu large mappings made, not 1", k,
                 s1.large_mapped - s0.large_mapped);
    size_t keep = sizes[k][0] < sizes[k][1] ? sizes[k][0] : sizes[k][1];
    for (size_t i = 0; i < keep; i += 4093) cr_assert_eq(p[i], 'R', "byte %zu", i);
    cr_assert_eq(p[keep - 1], 'R');
    cr_assert_geq(sm_usable_size(p), sizes[k][1]);
    memset(p, 'S', sizes[k][1]);
    free(p);
  }
  if (!HARDENED) return;
  expect_signal("large_realloc_guard_after", SIGSEGV);
  expect_signal("large_realloc_shrunk_guard_after", SIGSEGV);
}

/* In-process: what the program sees does not change. */
Test(hardened, usable_size_and_realloc_in_place) {
  char *p = malloc(tu_hide(100));
  size_t u = sm_usable_size(p);
  if (HARDENED) cr_assert_eq(u, 100, "the usable size is the request: %zu", u);
  else cr_assert_geq(u, 100);
  memset(p, 7, u); /* all of it is the program's */
  char *q = realloc(p, tu_hide(90));
  cr_assert_eq(q, p, "a shrink stays in place");
  memset(q, 8, 90);
  q = realloc(q, tu_hide(104)); /* within the slot (112), past the old canary */
  memset(q, 9, 104);
  free(q);
  void *c = calloc(tu_hide(3), tu_hide(40));
  for (int i = 0; i < 120; i++) cr_assert_eq(((char *)c)[i], 0);
  free(c);
  for (size_t n = 1009; n <= 1024; n++) { /* past the direct bins' reach in the hardened build (n + 8 > 1024) */
    char *v[3];
    for (int k = 0; k < 3; k++) {
      v[k] = malloc(tu_hide(n));
      cr_assert_not_null(v[k]);
      if (HARDENED) cr_assert_eq(sm_usable_size(v[k]), n, "usable size of %zu: %zu", n, sm_usable_size(v[k]));
      memset(v[k], 3, n);
    }
    for (int k = 0; k < 3; k++) free(v[k]);
  }
  void *a = aligned_alloc(256, tu_hide(256));
  cr_assert_eq((uintptr_t)a % 256, 0);
  memset(a, 1, 256);
  free(a);
}

/* A fresh block's slots: shuffled in the hardened build, in address order in
 * the default one. */
Test(hardened, fresh_slots_order) {
  sm_arena_t *ar = sm_arena_new(NULL);
  cr_assert_not_null(ar);
  uintptr_t prev = 0;
  int ascending = 0;
  for (int i = 0; i < 64; i++) {
    uintptr_t u = (uintptr_t)sm_arena_malloc(ar, tu_hide(200));
    ascending += u > prev;
    prev = u;
  }
  if (HARDENED) cr_assert_lt(ascending, 48, "%d of 64 in address order", ascending);
  else cr_assert_eq(ascending, 64, "%d of 64 in address order", ascending);
  tu_arena_drop(ar);
}

/* Freed slots have their first 16 bytes overwritten (the link, encoded, and
 * a zero word), and wait in the quarantine before their reuse: the newest
 * four freed slots of a block are not handed out while it has other free
 * slots, whatever the calls in between. */
Test(hardened, freed_slots_overwritten_and_quarantined) {
  if (!HARDENED) return;
  char *p = malloc(tu_hide(200));
  memset(p, 0x5a, 200);
  free(p);
  /* the link as a word (one of its random key's bytes may read 0x5a: 7 in
   * 256 runs did, byte by byte), then the zero word */
  uint64_t link;
  memcpy(&link, tu_opaque(p), 8);
  cr_assert_neq(link, 0x5a5a5a5a5a5a5a5aull, "the link word of a freed slot");
  for (int i = 8; i < 16; i++) cr_assert_eq(((volatile char *)p)[i], 0, "byte %d of a freed slot", i);
  void *q = malloc(tu_hide(200));
  cr_assert_neq(q, p, "a freed slot is not handed out at once");
  free(q);
  /* pairs, and batches of 1 to 9 objects freed in both orders: the last four
   * freed are never among the next objects */
  void *last[4] = {0}, *batch[9];
  for (int round = 0; round < 3000; round++) {
    int n = 1 + round % 9;
    for (int k = 0; k < n; k++) {
      batch[k] = malloc(tu_hide(40));
      for (int j = 0; j < 4; j++)
        cr_assert_neq(batch[k], last[j], "round %d: a slot of the last four freed handed out again", round);
    }
    for (int k = 0; k < n; k++) {
      void *f = batch[round & 1 ? k : n - 1 - k];
      free(f);
      memmove(last + 1, last, 3 * sizeof *last);
      last[0] = f;
    }
  }
}

/* A block with no fresh slots left hands out a short pending list whole (the
 * quarantine's only exception); the cut's memory of a short list
 * (smi_hd_head_t.short_at, the list's head) must not outlive that: a slot
 * handed out so and freed again heads a new list, and the four newest of
 * that list still wait. In a thread of its own (fresh blocks of a class of
 * 600-byte requests, 64 KiB blocks): one block filled, a second filled to its
 * last slot (still current, its freelist empty, nothing left to cut). */
static void *refilled_head_thread(void *arg) {
  int *res = arg;
  enum { MAX = 256 };
  static void *v[2 * MAX];
  int n = 0;
  uintptr_t first = (uintptr_t)(v[n++] = malloc(tu_hide(600))) >> 16;
  while (n < MAX && ((uintptr_t)(v[n] = malloc(tu_hide(600))) >> 16) == first) n++;
  int per = n; /* the first block's slots; v[n] opened the second block */
  if (per < 16 || per >= MAX) {
    res[0] = 1;
    return NULL;
  }
  void **w = v + per; /* the second block's: per of them fill it */
  for (int k = 1; k < per; k++) w[k] = malloc(tu_hide(600));
  for (int k = 0; k < per; k++)
    if (((uintptr_t)w[k] >> 16) != ((uintptr_t)w[0] >> 16)) {
      res[0] = 2;
      return NULL;
    }
  free(w[0]); /* a short list: handed out whole, nothing else left */
  void *x = malloc(tu_hide(600));
  if (x != w[0]) {
    res[0] = 3;
    return NULL;
  }
  for (int k = 1; k <= 5; k++) free(w[k]);
  free(x); /* pending: x, w[5], w[4], w[3], w[2], w[1] */
  void *y = malloc(tu_hide(600));
  res[1] = y == x || y == w[5] || y == w[4] || y == w[3];
  res[2] = y == w[2];
  free(y);
  for (int k = 0; k < per; k++) free(v[k]);
  for (int k = 6; k < per; k++) free(w[k]);
  return NULL;
}
Test(hardened, a_short_list_handed_out_whole_leaves_no_memory_of_it) {
  if (!HARDENED) return;
  int res[3] = {0};
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, refilled_head_thread, res), 0);
  pthread_join(t, NULL);
  cr_assert_eq(res[0], 0, "the blocks were not as expected (case %d)", res[0]);
  cr_assert_eq(res[1], 0, "a slot of the four newest freed was handed out");
  cr_assert_eq(res[2], 1, "the older pending slots come first, newest first");
}

/* The owner's free in the hardened build stores its generation in a
 * restartable sequence: the kernel sends it to its abort handler (the
 * compare-and-swap) at a signal, a preemption or another thread's
 * membarrier(PRIVATE_EXPEDITED_RSEQ). Many of each while one thread frees: a
 * wrong abort signature or descriptor kills the process (SIGSEGV), a lost or
 * doubled generation step makes a later free report. */
static volatile int mb_stop;
static void *membarrier_loop(void *arg) {
  long *n = arg;
  while (!mb_stop)
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0, 0) == 0) ++*n;
  return NULL;
}
static void on_usr1(int sig) { (void)sig; }
Test(hardened, owner_frees_restarted_by_membarrier_and_signals) {
  /* registered by the hardened library at its first block; again here, harmless */
  syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0);
  signal(SIGUSR1, on_usr1);
  long barriers = 0;
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, membarrier_loop, &barriers), 0);
  void *keep[8];
  for (int k = 0; k < 8; k++) keep[k] = malloc(tu_hide(40));
  for (long i = 0; i < 2000000; i++) {
    void *p = malloc(tu_hide(40));
    cr_assert_not_null(p);
    free(p);
    if ((i & 65535) == 0) raise(SIGUSR1);
  }
  mb_stop = 1;
  pthread_join(t, NULL);
  for (int k = 0; k < 8; k++) {
    cr_assert_not_null(sm_arena_of(keep[k]), "object %d no longer live", k);
    free(keep[k]);
    cr_assert_null(sm_arena_of(keep[k]), "object %d still live after its free", k);
  }
  cr_log_info("%ld membarriers", barriers);
}

/* SLOTMALLOC_ABORT_ON_ERROR=0: the same one line, and the program goes on (a
 * bad free list dropped, never followed). */
static void expect_report_and_survival(const char *name, const char *start) {
  tu_proc_t r;
  run_case_env(name, "SLOTMALLOC_ABORT_ON_ERROR=0", &r);
  cr_assert(!r.timed_out && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0 && strstr(r.out, "SURVIVED"),
            "%s: %s; stdout '%s', stderr '%s'", name, tu_status_str(&r), r.out, r.err);
  cr_assert(strncmp(r.err, start, strlen(start)) == 0 && strchr(r.err, '\n') == r.err + strlen(r.err) - 1,
            "%s: stderr is '%s', want one line starting '%s'", name, r.err, start);
}

Test(hardened, reports_without_abort) {
  if (!HARDENED) return;
  expect_report_and_survival("overflow_free", "slotmalloc: heap overflow past the end of 0x");
  expect_report_and_survival("overflow_realloc", "slotmalloc: heap overflow past the end of 0x");
  expect_report_and_survival("uaf_link", "slotmalloc: corrupted free list in block 0x");
  expect_report_and_survival("uaf_write", "slotmalloc: write after free to 0x");
  expect_report_and_survival("uaf_remote", "slotmalloc: corrupted free list in block 0x");
  expect_report_and_survival("uaf_remote_zero", "slotmalloc: write after free to 0x");
}
