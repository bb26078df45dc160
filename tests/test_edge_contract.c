/* test_edge_contract.c: the malloc contract as a correct program relies on it,
 * at the edges where slotmalloc answered differently from what it promises
 * (README "The malloc interface"): errno after a success, out of memory.
 * Each test names the fault it catches. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "slotmalloc.h"
#include "testutil.h"

/* A call that succeeds must leave errno alone (C: a library function never
 * sets it to 0, and a program may read errno after a sequence of calls that
 * all succeeded, as `errno = 0; ...; if (errno)` code does). */
#define ERRNO_KEPT(call, what, ...)                                                                  \
  do {                                                                                               \
    errno = 4321;                                                                                    \
    void *r_ = (call);                                                                               \
    int e_ = errno;                                                                                  \
    cr_assert_not_null(r_, what, __VA_ARGS__);                                                       \
    cr_assert_eq(e_, 4321, "errno %d (%s) after a successful " what, e_, strerror(e_), __VA_ARGS__); \
    out = r_;                                                                                        \
  } while (0)

/* A large object cached on free and taken again for a bigger request is grown
 * with mremap; when the pages after it are taken, mremap fails with ENOMEM,
 * the object is moved instead, and the call succeeds: errno was left ENOMEM
 * (realloc 1 MiB -> 8 MiB, then malloc of 16 MiB and 64 MiB). */
Test(contract, errno_kept_by_successful_large_calls, .timeout = 60) {
  static const size_t sizes[] = {64 * KiB, 1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB, 64 * MiB};
  const size_t n = sizeof sizes / sizeof *sizes;
  void *out;
  for (int round = 0; round < 3; round++) {
    for (size_t i = 0; i < n; i++) {
      size_t a = tu_hide(sizes[i]), b = tu_hide(sizes[(i + 3) % n]);
      ERRNO_KEPT(malloc(a), "malloc(%zu), round %d", a, round);
      memset(out, 1, a);
      void *p = out;
      ERRNO_KEPT(realloc(p, b), "realloc(%zu -> %zu), round %d", a, b, round);
      free(out);
      ERRNO_KEPT(calloc(1, b), "calloc(1, %zu), round %d", b, round);
      free(out);
      ERRNO_KEPT(aligned_alloc(64 * KiB, a), "aligned_alloc(64 KiB, %zu), round %d", a, round);
      free(out);
    }
  }
}

/* Sets RLIMIT_AS to what the process maps now plus room. */
static void limit_address_space(size_t room) {
  size_t lim = tu_vmsize_bytes() + room;
  struct rlimit rl = {lim, lim};
  cr_assert_eq(setrlimit(RLIMIT_AS, &rl), 0);
}

/* Limits the address space to room bytes past what is mapped now, fills it
 * with objects of size bytes until malloc answers NULL (checked: ENOMEM), then
 * frees them all. */
static void fill_then_free(size_t size, size_t room) {
  size_t cap = 4 * MiB, n = 0;
  void **objs = mmap(NULL, cap * sizeof *objs, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(objs, MAP_FAILED);
  limit_address_space(room);
  for (;;) {
    errno = 0;
    void *p = malloc(size);
    if (!p) {
      cr_assert_eq(errno, ENOMEM, "malloc(%zu) failed with errno %d, not ENOMEM", size, errno);
      break;
    }
    cr_assert_lt(n, cap, "the limit was never reached");
    objs[n++] = p;
  }
  cr_assert_gt(n, 0);
  for (size_t i = 0; i < n; i++) free(objs[i]);
  munmap(objs, cap * sizeof *objs);
}

/* Under an address-space limit, a large request that fails at first and works
 * once the allocator gave back what it held empty (the reclaim before ENOMEM)
 * is a success: errno was left ENOMEM by the first, refused mapping. */
Test(contract, errno_kept_by_large_allocation_after_the_reclaim, .timeout = 60) {
  fill_then_free(100 * KiB, 256 * MiB); /* slots of the largest kinds fill the room */
  void *out;
  for (size_t size = 1 * MiB; size <= 64 * MiB; size *= 4) {
    ERRNO_KEPT(malloc(size), "malloc(%zu) after the fill was freed", size);
    memset(out, 1, size);
    free(out);
  }
}

/* The same for a slot: smi_pool_take maps a new segment, the OS refuses (errno
 * ENOMEM), smi_pool_reclaim gives back the empty segments, the second mapping
 * works: the object is handed out with errno as the caller left it. */
Test(contract, errno_kept_by_slot_allocation_after_the_reclaim, .timeout = 60) {
  fill_then_free(64, 128 * MiB); /* the small kind's segments fill the room */
  void *out;
  static const size_t sizes[] = {10000, 60000, 200000};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    ERRNO_KEPT(malloc(sizes[i]), "malloc(%zu) after the fill was freed", sizes[i]);
    memset(out, 1, sizes[i]);
    free(out);
  }
}

/* MemTotal + SwapTotal from /proc/meminfo, in bytes (0 if unreadable). */
static size_t ram_and_swap(void) {
  FILE *f = fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  size_t total = 0, kib;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "MemTotal: %zu kB", &kib) == 1 || sscanf(line, "SwapTotal: %zu kB", &kib) == 1)
      total += kib * KiB;
  }
  fclose(f);
  return total;
}

/* With the kernel's default overcommit heuristic (vm.overcommit_memory 0) a
 * private writable mapping larger than RAM and swap together is refused, so
 * glibc's malloc answers NULL/ENOMEM and a program can probe for memory, or
 * fail cleanly, as the README promises ("memory the OS refuses give NULL with
 * errno ENOMEM"). Large objects are mapped without MAP_NORESERVE (slots/os.c
 * map_raw), which the heuristic would not check: malloc of 4x the machine's
 * memory returned a pointer, and the program was killed by the OOM killer
 * when it used it. */
Test(contract, request_past_ram_and_swap_is_enomem, .timeout = 60) {
  FILE *f = fopen("/proc/sys/vm/overcommit_memory", "r");
  int mode = -1;
  if (f) {
    if (fscanf(f, "%d", &mode) != 1) mode = -1;
    fclose(f);
  }
  size_t total = ram_and_swap();
  if (mode != 0 || !total || total > ((size_t)1 << 43)) cr_skip_test("overcommit mode %d, %zu bytes", mode, total);
  size_t size = tu_hide(4 * total);
  errno = 0;
  void *p = malloc(size);
  int e = errno;
  free(p); /* never touched */
  cr_assert_null(p, "malloc(%zu) (4x RAM + swap) returned a pointer", size);
  cr_assert_eq(e, ENOMEM);
  errno = 0;
  p = calloc(4, total);
  e = errno;
  free(p);
  cr_assert_null(p, "calloc(4, %zu) returned a pointer", total);
  cr_assert_eq(e, ENOMEM);
  void *q = malloc(100);
  cr_assert_not_null(q);
  errno = 0;
  p = realloc(q, size);
  e = errno;
  cr_assert_null(p, "realloc to %zu returned a pointer", size);
  free(p ? p : q);
  cr_assert_eq(e, ENOMEM);
}

/* ---- set-user-ID programs ---------------------------------------------------- */

/* Whether this process has no_new_privs set (then exec ignores set-user-ID bits). */
static bool no_new_privs(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return false;
  char line[256];
  int v = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "NoNewPrivs: %d", &v) == 1) break;
  fclose(f);
  return v != 0;
}

static bool file_exists(const char *dir, const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return access(path, F_OK) == 0;
}

static void remove_in(const char *dir, const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  unlink(path);
}

/* A program that runs set-user-ID (here: root running a copy of stats_prog
 * owned by nobody, mode 4755; the kernel marks it AT_SECURE) took every
 * SLOTMALLOC_* variable from the caller's environment: SLOTMALLOC_STATS_FILE
 * appended the statistics (with argv[0], the caller's choice, in the first
 * line) and SLOTMALLOC_PROF_FILE truncated and wrote a file at any path the
 * caller named, with the program's privileges, and SLOTMALLOC_ABORT_ON_ERROR=0
 * turned the double-free abort off. glibc ignores its malloc tunables there;
 * so does slotmalloc now (the same copy without the set-user-ID bit, the
 * control, writes both files). Needs root, a file system without nosuid and
 * no no_new_privs: skipped otherwise. */
Test(contract, setuid_program_ignores_the_options, .timeout = 60) {
  if (geteuid() != 0) cr_skip_test("needs root (chown to nobody)");
  if (no_new_privs()) cr_skip_test("no_new_privs is set: set-user-ID bits are ignored");
  char dir[] = "/tmp/sm_suid_XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  cr_assert_eq(chmod(dir, 0777), 0); /* nobody may create files here */
  struct statvfs vfs;
  cr_assert_eq(statvfs(dir, &vfs), 0);
  if (vfs.f_flag & ST_NOSUID) {
    rmdir(dir);
    cr_skip_test("%s is on a nosuid file system", dir);
  }
  char prog[512], stats[512], prof[512];
  snprintf(prog, sizeof prog, "%s/prog", dir);
  snprintf(stats, sizeof stats, "SLOTMALLOC_STATS_FILE=%s/stats.txt", dir);
  snprintf(prof, sizeof prof, "SLOTMALLOC_PROF_FILE=%s/prof.txt", dir);
  { /* a copy of stats_prog */
    int in = open(SM_STATS_PROG, O_RDONLY), out = open(prog, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    cr_assert(in >= 0 && out >= 0);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0) cr_assert_eq(write(out, buf, (size_t)n), n);
    close(in);
    close(out);
  }
  const char *set[] = {"SLOTMALLOC_STATS=1",          stats, "SLOTMALLOC_PROF_SAMPLE=1", prof, "SLOTMALLOC_LEAKS=1",
                       "SLOTMALLOC_ABORT_ON_ERROR=0", NULL};
  char **env = tu_env_without_options(set);
  char *pattern[] = {prog, "pattern", NULL}, *doublefree[] = {prog, "doublefree", NULL};
  tu_proc_t r;

  /* the control: not set-user-ID, the options work */
  cr_assert_eq(tu_run(pattern, env, dir, NULL, 30, &r), 0);
  cr_assert(!r.timed_out && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "control: %s",
            tu_wait_status_str(r.status));
  tu_proc_free(&r);
  cr_assert(file_exists(dir, "stats.txt") && file_exists(dir, "prof.txt"), "control: the options had no effect");
  remove_in(dir, "stats.txt");
  remove_in(dir, "prof.txt");

  if (chown(prog, 65534, 65534) != 0) {
    remove_in(dir, "prog");
    rmdir(dir);
    cr_skip_test("chown to 65534 failed");
  }
  cr_assert_eq(chmod(prog, 04755), 0);
  cr_assert_eq(tu_run(pattern, env, dir, NULL, 30, &r), 0);
  cr_assert(!r.timed_out && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "set-user-ID: %s",
            tu_wait_status_str(r.status));
  tu_proc_free(&r);
  bool wrote_stats = file_exists(dir, "stats.txt"), wrote_prof = file_exists(dir, "prof.txt");
  cr_assert_eq(tu_run(doublefree, env, dir, NULL, 30, &r), 0);
  int st = r.status;
  tu_proc_free(&r);
  remove_in(dir, "stats.txt");
  remove_in(dir, "prof.txt");
  remove_in(dir, "prog");
  rmdir(dir);
  cr_assert(!wrote_stats, "a set-user-ID program appended its statistics to SLOTMALLOC_STATS_FILE");
  cr_assert(!wrote_prof, "a set-user-ID program wrote its heap profile to SLOTMALLOC_PROF_FILE");
  cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT,
            "a set-user-ID program's double free did not abort under SLOTMALLOC_ABORT_ON_ERROR=0: %s",
            tu_wait_status_str(st));
}

/* ---- a data-size limit ---------------------------------------------------------- */

/* Under a data-size limit (ulimit -d, RLIMIT_DATA: private writable mappings,
 * bss included) a program that allocates a few MiB runs with glibc's malloc
 * under 32 MiB. Linked with slotmalloc it could not start under 72 MiB: the
 * library's bss held 72 MiB of tables (the segment map and the id table,
 * 32 MiB each, the pool's per-segment waiting bits, 8 MiB), all counted
 * although untouched, and the loader failed to map the next library (exit
 * 127); with vm.overcommit_memory=2 the same 72 MiB were charged to every
 * process. The two tables are now reserved read-only and made writable a
 * page at a time (slots/os.c smi_os_table_*), the waiting bits live in each
 * segment's header. */
Test(contract, small_heap_runs_under_a_32_mib_data_limit, .timeout = 60) {
  char *argv[] = {"/bin/sh", "-c", "ulimit -d 32768 && exec \"$0\" pattern", SM_STATS_PROG, NULL};
  char **env = tu_env_without_options(NULL);
  tu_proc_t r;
  cr_assert_eq(tu_run(argv, env, NULL, NULL, 30, &r), 0);
  int st = r.status, timed_out = r.timed_out;
  char err[256];
  snprintf(err, sizeof err, "%s", r.err ? r.err : "");
  tu_proc_free(&r);
  cr_assert(!timed_out && WIFEXITED(st) && WEXITSTATUS(st) == 0,
            "stats_prog pattern (about 4 MiB) under ulimit -d 32768: %s; stderr: %s", tu_wait_status_str(st), err);
}

/* ---- arenas the caller may not allocate in ------------------------------------- */

static sm_arena_t *other_root;
static pthread_mutex_t other_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t other_cond = PTHREAD_COND_INITIALIZER;
static int other_phase;

/* Publishes its root arena, then waits until main is done with it. */
static void *root_owner(void *arg) {
  (void)arg;
  void *p = malloc(16);
  pthread_mutex_lock(&other_lock);
  other_root = sm_arena_of(p);
  other_phase = 1;
  pthread_cond_broadcast(&other_cond);
  while (other_phase != 2) pthread_cond_wait(&other_cond, &other_lock);
  pthread_mutex_unlock(&other_lock);
  free(p);
  return NULL;
}

/* sm_arena_malloc and its siblings into another live thread's root arena
 * returned objects: that thread's own malloc takes the same blocks without a
 * lock, and a thread doing both at once crashed within 3 million calls in 5 of
 * 8 runs (SIGSEGV). They are NULL with EINVAL now, as for a closed arena; the
 * calling thread's own root still serves them. */
Test(contract, arena_allocation_in_another_threads_root_is_einval, .timeout = 60) {
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, root_owner, NULL), 0);
  pthread_mutex_lock(&other_lock);
  while (other_phase != 1) pthread_cond_wait(&other_cond, &other_lock);
  pthread_mutex_unlock(&other_lock);
  sm_arena_t *mine = sm_arena_of(malloc(1)); /* (leaked: 1 byte) */
  cr_assert_not_null(other_root);
  cr_assert_neq(other_root, mine);

  errno = 0;
  void *p = sm_arena_malloc(other_root, 100);
  int e = errno;
  free(p);
  cr_assert_null(p, "sm_arena_malloc into another thread's root arena returned an object");
  cr_assert_eq(e, EINVAL);
  errno = 0;
  p = sm_arena_calloc(other_root, 4, 25);
  e = errno;
  free(p);
  cr_assert(!p && e == EINVAL, "sm_arena_calloc: %p, errno %d", p, e);
  errno = 0;
  p = sm_arena_aligned_alloc(other_root, 64, 100);
  e = errno;
  free(p);
  cr_assert(!p && e == EINVAL, "sm_arena_aligned_alloc: %p, errno %d", p, e);
  errno = 0;
  p = sm_arena_malloc(other_root, 1 * MiB); /* a large object */
  e = errno;
  free(p);
  cr_assert(!p && e == EINVAL, "sm_arena_malloc (1 MiB): %p, errno %d", p, e);
  sm_handle_t h = sm_arena_halloc(other_root, 100);
  sm_hfree(h);
  cr_assert_eq(h, 0, "sm_arena_halloc into another thread's root arena returned a handle");

  void *q = sm_arena_malloc(mine, 100); /* the caller's own root */
  cr_assert_not_null(q);
  cr_assert_eq(sm_arena_of(q), mine);
  free(q);

  pthread_mutex_lock(&other_lock);
  other_phase = 2;
  pthread_cond_broadcast(&other_cond);
  pthread_mutex_unlock(&other_lock);
  cr_assert_eq(pthread_join(t, NULL), 0);
}

/* ---- handles across realloc ---------------------------------------------------- */

/* A handle taken before realloc names the object while it stays where it is
 * and is stale once realloc moved it (the old address is free): sm_deref gives
 * the object or NULL, never the old address of a moved one, and sm_hfree of a
 * stale handle is ESTALE and frees nothing. Every kind of move: within a slot,
 * slot to slot, slot to large, a large object grown in place or moved (its
 * pages), shrunk, and large back to a slot. */
Test(contract, handles_across_realloc, .timeout = 60) {
  static const size_t steps[][2] = {{40, 48},
                                    {40, 400},
                                    {1000, 100},
                                    {100 * KiB, 300 * KiB},
                                    {300 * KiB, 310 * KiB},
                                    {300 * KiB, 8 * MiB},
                                    {8 * MiB, 9 * MiB},
                                    {8 * MiB, 1 * MiB},
                                    {1 * MiB, 100},
                                    {3 * MiB, 200 * KiB}};
  for (int round = 0; round < 3; round++) {
    for (size_t k = 0; k < sizeof steps / sizeof *steps; k++) {
      size_t from = steps[k][0], to = steps[k][1];
      void *p = malloc(from);
      cr_assert_not_null(p);
      memset(p, 0x3c, from);
      sm_handle_t h = sm_handle_of(p);
      cr_assert_neq(h, 0);
      void *q = realloc(p, to);
      cr_assert_not_null(q);
      void *d = sm_deref(h);
      if (q == p) {
        cr_assert_eq(d, q, "realloc %zu -> %zu in place: the handle no longer names the object", from, to);
      } else {
        cr_assert_null(d, "realloc %zu -> %zu moved the object: its old handle derefs to %p", from, to, d);
        cr_assert_eq(sm_hfree(h), ESTALE, "realloc %zu -> %zu: sm_hfree of the old handle", from, to);
        cr_assert_eq(sm_handle_of(p), 0, "the old address of a moved object has a handle");
      }
      sm_handle_t hq = sm_handle_of(q);
      cr_assert_neq(hq, 0);
      cr_assert_eq(sm_deref(hq), q);
      size_t keep = from < to ? from : to;
      for (size_t i = 0; i < keep; i += 4093)
        cr_assert_eq(((unsigned char *)q)[i], 0x3c, "realloc %zu -> %zu lost byte %zu", from, to, i);
      cr_assert_eq(sm_hfree(hq), 0);
      cr_assert_null(sm_deref(hq));
      cr_assert_null(sm_deref(h));
    }
  }
}
