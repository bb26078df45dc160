/* oom_prog.c: the workload of test_oom_sweep, run with the OS layer's calls
 * refused (slots/os.c compiled with SMI_OS_FAULTS, linked before
 * libslotmalloc.a: tests/CMakeLists.txt). The faults come from the
 * environment, SMI_OS_FAULTS=mask,mode,nth,seed (slots/os.h), armed from the
 * first call of the library, the tables it reserves at load included.
 *
 *   oom_prog mix    one thread: malloc, calloc, realloc growing and shrinking
 *                   (small to large and back), posix_memalign and aligned_alloc
 *                   up to 8 MiB alignments, large objects, handles and sm_deref,
 *                   an arena with a byte cap and a child arena entered for
 *                   plain malloc, objects promoted out of an entered arena,
 *                   threads that allocate and exit (their objects freed here),
 *                   malloc_trim and sm_collect, a fork whose child checks every
 *                   object, goes on with the mix and frees all
 *   oom_prog twin   the same mix (without threads that exit) on two threads at once
 *                   (its forks while the other thread allocates)
 *   oom_prog grow   large objects grown by realloc to 4 MiB, in place or moved
 *   oom_prog epochs a large object reused from the cache until its id's epochs
 *                   are used up, when no fresh id can be had (faults of its own)
 *
 * Checks: a call that failed returned NULL (posix_memalign: ENOMEM) with errno
 * ENOMEM; a failed realloc left the old object as it was; every object holds
 * its pattern until its free (handles: sm_deref finds it); calloc's memory is
 * zero. Then the faults stop (smi_os_faults_set), every live object is checked,
 * and the mix runs again with every call served (OOM_PROG_LIMITED=1, under a
 * real limit set from outside: calls may fail there too); then all is freed. The debug
 * build's invariant checks run on the slow paths all along (a violation aborts).
 * Prints "oom_prog: calls C refused R nulls N debug D" (the OS calls of the armed
 * kinds, how many were refused, the allocation calls that failed, whether the
 * checks are built) and exits 0; a failed check prints one line on stderr and
 * exits 1. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/wait.h>

#include "testutil.h"

#define SMI_OS_FAULTS 1
#include "slots/os.h"

bool smi_check_enabled(void); /* alloc/check.c: whether the debug checks are built */

static atomic_int failed;

/* Prints the first failure (any thread) on stderr; returns 1. */
static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
  if (atomic_exchange(&failed, 1)) return 1;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
  buf[n++] = '\n';
  if (write(2, buf, (size_t)n) < 0) return 1;
  return 1;
}

/* ---- patterns: testutil.h's, written and read a word at a time (its memcpy
 * is a call per word here: the tests build with -fno-builtin) ---- */
static void fill(void *p, size_t n, uint64_t seed) {
  unsigned char *c = p;
  size_t k = 0;
  for (; (k + 1) * 8 <= n; k++) {
    uint64_t w = tu_pattern_word(seed, k);
    __builtin_memcpy(c + k * 8, &w, 8);
  }
  uint64_t w = tu_pattern_word(seed, k);
  for (size_t i = 0; k * 8 + i < n; i++) c[k * 8 + i] = ((unsigned char *)&w)[i];
}
/* SIZE_MAX, or the first byte of p[0..n) that is not the pattern (a word's). */
static size_t check(const void *p, size_t n, uint64_t seed) {
  const unsigned char *c = p;
  size_t k = 0;
  for (; (k + 1) * 8 <= n; k++) {
    uint64_t w;
    __builtin_memcpy(&w, c + k * 8, 8);
    if (w != tu_pattern_word(seed, k)) return k * 8;
  }
  uint64_t w = tu_pattern_word(seed, k);
  for (size_t i = 0; k * 8 + i < n; i++)
    if (c[k * 8 + i] != ((unsigned char *)&w)[i]) return k * 8 + i;
  return SIZE_MAX;
}
static bool all_zero(const void *p, size_t n) {
  const unsigned char *c = p;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    __builtin_memcpy(&w, c + i, 8);
    if (w) return false;
  }
  for (; i < n; i++)
    if (c[i]) return false;
  return true;
}

/* ---- the objects a workload holds (in its own arrays: the library is malloc) ---- */
#define MAXOBJ 256
typedef struct {
  void *p;
  size_t size;
  uint64_t seed;
  sm_handle_t h; /* handle objects: the handle it was made with */
} obj_t;

typedef struct {
  obj_t o[MAXOBJ];
  size_t n;
  uint64_t next_seed;
  tu_rng_t rng;
  long nulls; /* calls that failed, as they may */
  int strict; /* 1: every call must succeed (the faults are off) */
  const char *who;
} book_t;

static void book_init(book_t *b, uint64_t seed, const char *who) {
  memset(b, 0, sizeof *b);
  b->rng = tu_rng(seed);
  b->next_seed = seed * 1000003u + 1;
  b->who = who;
}

/* A NULL (or posix_memalign's ENOMEM): allowed with errno ENOMEM, unless strict. */
static int refused(book_t *b, const char *what, size_t size, int err) {
  if (err != ENOMEM)
    return fail("%s: %s(%zu) failed with errno %d (%s), not ENOMEM", b->who, what, size, err, strerror(err));
  if (b->strict) return fail("%s: %s(%zu) failed after the faults stopped", b->who, what, size);
  b->nulls++;
  return 0;
}

static int check_obj(book_t *b, const obj_t *o, const char *when) {
  size_t off = check(o->p, o->size, o->seed);
  if (off != SIZE_MAX)
    return fail("%s: object %p of %zu bytes: byte %zu lost its pattern (%s)", b->who, o->p, o->size, off, when);
  if (o->h && sm_deref(o->h) != o->p)
    return fail("%s: sm_deref of the handle of %p gives %p (%s)", b->who, o->p, sm_deref(o->h), when);
  return 0;
}

static void add(book_t *b, void *p, size_t size, sm_handle_t h) {
  obj_t *o = &b->o[b->n++];
  o->p = p;
  o->size = size;
  o->seed = b->next_seed++;
  o->h = h;
  fill(p, size, o->seed);
}

/* realloc of o to ns bytes: a refusal leaves o as it was (ENOMEM, its
 * pattern kept); a success keeps the common bytes and refills the object. */
static int realloc_obj(book_t *b, obj_t *o, size_t ns) {
  errno = 0;
  void *q = realloc(o->p, ns);
  if (!q) return refused(b, "realloc", ns, errno) || check_obj(b, o, "after a failed realloc");
  size_t keep = ns < o->size ? ns : o->size;
  size_t off = check(q, keep, o->seed);
  if (off != SIZE_MAX)
    return fail("%s: realloc %zu -> %zu bytes lost byte %zu of the object", b->who, o->size, ns, off);
  o->p = q;
  o->size = ns;
  fill(q, ns, o->seed);
  return 0;
}

static int drop(book_t *b, size_t i) {
  obj_t *o = &b->o[i];
  if (check_obj(b, o, "before its free")) return 1;
  if (o->h) {
    int rc = sm_hfree(o->h);
    if (rc) return fail("%s: sm_hfree of a live handle returned %d", b->who, rc);
  } else {
    free(o->p);
  }
  b->o[i] = b->o[--b->n];
  return 0;
}

static const size_t sizes[] = {8, 24, 100, 500, 1000, 3000, 8000, 20000, 70000, 200000, 600 * 1024, 2 * 1024 * 1024};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static size_t pick_size(book_t *b) {
  /* one in 8 past 200 KB: a large object (most are in slot blocks) */
  size_t s =
      sizes[tu_rng_next(&b->rng) % 8 ? tu_rng_next(&b->rng) % (NSIZES - 2) : NSIZES - 2 + tu_rng_next(&b->rng) % 2];
  return s + tu_rng_next(&b->rng) % (s / 4 + 1);
}

/* One step of the mix: a new object of some kind, a realloc, or a free. */
static int step(book_t *b) {
  unsigned r = (unsigned)(tu_rng_next(&b->rng) % 16);
  if (b->n >= MAXOBJ - 1 || (b->n > 24 && r < 4)) return drop(b, tu_rng_next(&b->rng) % b->n);
  size_t size = pick_size(b);
  errno = 0;
  if (r < 6) {
    void *p = malloc(size);
    if (!p) return refused(b, "malloc", size, errno);
    add(b, p, size, 0);
  } else if (r < 8) {
    void *p = calloc(1, size);
    if (!p) return refused(b, "calloc", size, errno);
    if (!all_zero(p, size)) return fail("%s: calloc(%zu) gave memory that is not zero", b->who, size);
    add(b, p, size, 0);
  } else if (r < 11 && b->n) {
    /* realloc: growing or shrinking, small to large and back */
    obj_t *o = &b->o[tu_rng_next(&b->rng) % b->n];
    if (o->h) return 0;
    size_t ns = r == 8 ? o->size / 3 + 1 : r == 9 ? o->size * 3 + 100 : size;
    if (ns > 2500 * KiB) ns = o->size / 5 + 1;
    return realloc_obj(b, o, ns);
  } else if (r < 13) {
    static const size_t aligns[] = {64, 4096, 65536, 1 << 20, 4 << 20, 8 << 20};
    size_t al = aligns[tu_rng_next(&b->rng) % 6];
    size_t as = r == 11 || al > 64 * KiB ? size % 5000 + 1 : size;
    void *p = NULL;
    if (r == 11) {
      int rc = posix_memalign(&p, al, as);
      if (rc) return refused(b, "posix_memalign", as, rc);
    } else {
      as = (as + al - 1) & ~(al - 1);
      p = aligned_alloc(al, as);
      if (!p) return refused(b, "aligned_alloc", as, errno);
    }
    if ((uintptr_t)p & (al - 1)) return fail("%s: %p is not aligned to %zu", b->who, p, al);
    add(b, p, as, 0);
  } else if (r < 15) {
    sm_handle_t h = sm_halloc(size);
    if (!h) return refused(b, "sm_halloc", size, errno);
    void *p = sm_deref(h);
    if (!p) return fail("%s: sm_deref of a new handle is NULL", b->who);
    add(b, p, size, h);
  } else {
    if (tu_rng_next(&b->rng) % 4 == 0) malloc_trim(0);
    else sm_collect(4);
  }
  return 0;
}

/* An arena with a byte cap: objects until the cap refuses (ENOMEM), a child
 * arena entered for plain malloc, then closed. */
static int arena_round(book_t *b) {
  errno = 0;
  sm_arena_t *a = sm_arena_new(NULL);
  if (!a) return refused(b, "sm_arena_new", 0, errno);
  const size_t cap = 768 * 1024;
  if (sm_arena_set_limit(a, cap) != 0) return fail("%s: sm_arena_set_limit failed", b->who);
  book_t local;
  book_init(&local, b->next_seed++, b->who);
  local.strict = b->strict;
  size_t live = 0;
  for (int i = 0; i < 60 && local.n < MAXOBJ; i++) {
    size_t size = i % 7 == 6 ? 300 * 1024 : 100 + (size_t)i * 97 % 9000;
    errno = 0;
    void *p = i % 3 == 0 ? sm_arena_calloc(a, 1, size) : sm_arena_malloc(a, size);
    if (!p) {
      if (errno != ENOMEM) return fail("%s: sm_arena_malloc(%zu) failed with errno %d", b->who, size, errno);
      if (live + size <= cap / 2 && b->strict)
        return fail("%s: the arena refused %zu bytes with %zu of %zu live", b->who, size, live, cap);
      if (live + size <= cap) b->nulls++; /* (past the cap: refused as it must be) */
      continue;
    }
    if (i % 3 == 0 && !all_zero(p, size)) return fail("%s: sm_arena_calloc memory is not zero", b->who);
    live += sm_usable_size(p);
    add(&local, p, size, 0);
  }
  sm_arena_t *c = sm_arena_new(a);
  if (c) {
    sm_arena_t *was = sm_arena_enter(c);
    for (int i = 0; i < 20; i++) {
      size_t size = 50 + (size_t)i * 311;
      errno = 0;
      void *p = malloc(size);
      if (!p) {
        if (errno != ENOMEM) return fail("%s: malloc in an arena failed with errno %d", b->who, errno);
        b->nulls++;
        continue;
      }
      if (local.n < MAXOBJ) add(&local, p, size, 0);
    }
    sm_arena_enter(was);
  } else if (errno != ENOMEM) {
    return fail("%s: sm_arena_new of a child failed with errno %d", b->who, errno);
  }
  for (size_t i = 0; i < local.n; i++)
    if (check_obj(b, &local.o[i], "in a capped arena")) return 1;
  if (c) tu_arena_drop(c);
  tu_arena_drop(a);
  sm_collect(SIZE_MAX);
  return 0;
}

/* Objects of an arena entered for plain malloc promoted into the thread's
 * root arena (a copy there, then the old one freed): a promote that fails
 * returns NULL with ENOMEM and leaves the object where it was. */
static int promote_round(book_t *b) {
  errno = 0;
  sm_arena_t *d = sm_arena_new(NULL);
  if (!d) return refused(b, "sm_arena_new", 0, errno);
  sm_arena_t *was = sm_arena_enter(d);
  for (int i = 0; i < 8 && b->n < MAXOBJ; i++) {
    size_t size = i == 3 ? 300 * KiB : 40 + (size_t)i * 1500;
    errno = 0;
    void *p = malloc(size);
    if (!p) {
      if (refused(b, "malloc", size, errno)) return 1;
      continue;
    }
    add(b, p, size, 0);
    obj_t *o = &b->o[b->n - 1];
    errno = 0;
    void *q = sm_arena_promote(p);
    if (!q) {
      if (refused(b, "sm_arena_promote", size, errno) || check_obj(b, o, "after a failed promote")) return 1;
      if (sm_arena_of(p) != d) return fail("%s: a failed promote moved the object out of its arena", b->who);
      b->n--; /* (it dies with its arena) */
      continue;
    }
    size_t off = check(q, size, o->seed);
    if (off != SIZE_MAX) return fail("%s: sm_arena_promote lost byte %zu of %zu", b->who, off, size);
    o->p = q;
  }
  sm_arena_enter(was);
  tu_arena_drop(d);
  return 0;
}

/* A thread that allocates, frees some, hands the rest over and exits. */
typedef struct {
  book_t book;
  int rc;
} thread_arg_t;

static void *thread_main(void *v) {
  thread_arg_t *t = v;
  for (int i = 0; i < 60 && !t->rc; i++) t->rc = step(&t->book);
  return NULL;
}

static int thread_round(book_t *b) {
  static thread_arg_t t; /* (one at a time per book: see run_book) */
  book_init(&t.book, b->next_seed++, b->who);
  t.book.strict = b->strict;
  t.rc = 0;
  pthread_t th;
  if (pthread_create(&th, NULL, thread_main, &t) != 0) return 0; /* (its stack: not ours to give) */
  pthread_join(th, NULL);
  b->nulls += t.book.nulls;
  if (t.rc) return 1;
  /* its objects, freed by this thread (remote frees into an exited thread's blocks) */
  while (t.book.n)
    if (drop(&t.book, t.book.n - 1)) return 1;
  return 0;
}

static int free_all(book_t *b);

/* A fork with the faults going on (in twin, while the other thread
 * allocates): the child finds every object of the book whole, goes on with
 * the mix (the faults inherited) and frees all; the parent waits for it. */
static int fork_round(book_t *b) {
  pid_t pid = fork();
  if (pid < 0) return 0; /* (refused: the process's own limits, not ours) */
  if (pid == 0) {
    b->who = "the fork child";
    for (size_t i = 0; i < b->n; i++)
      if (check_obj(b, &b->o[i], "in the fork child")) _exit(1);
    for (int i = 0; i < 30; i++)
      if (step(b)) _exit(1);
    _exit(free_all(b) ? 1 : 0);
  }
  int st = 0;
  if (waitpid(pid, &st, 0) != pid) return fail("%s: waitpid of the fork child failed", b->who);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    return fail("%s: the fork child ended with %s %d", b->who, WIFEXITED(st) ? "status" : "signal",
                WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
  return 0;
}

static int run_book(book_t *b, int steps, bool threads) {
  for (int i = 0; i < steps; i++) {
    if (step(b)) return 1;
    if (i % 50 == 25 && arena_round(b)) return 1;
    if (i % 50 == 40 && promote_round(b)) return 1;
    if (threads && i % 100 == 60 && thread_round(b)) return 1;
    if (i % 100 == 80 && fork_round(b)) return 1;
  }
  return 0;
}

static int free_all(book_t *b) {
  while (b->n)
    if (drop(b, b->n - 1)) return 1;
  return 0;
}

static void *twin_main(void *v) {
  book_t *b = v;
  long rc = run_book(b, 150, false);
  return (void *)rc;
}

/* Large objects grown by realloc, a quarter and a page at a time, from 64 KB
 * to 4 MiB and back, five at once with a neighbour mapped between (in place
 * where the pages after one are free, else moved), one of them aligned to
 * 8 MiB and one to 1 MiB (moved, they keep it), and checked each time. */
static int grow(book_t *b) {
  for (int i = 0; i < 10; i++) {
    size_t size = 64 * KiB + (size_t)i * 4096, align = i == 4 ? 8 * MiB : i == 6 ? MiB : 0;
    errno = 0;
    void *p = NULL;
    if (align) errno = posix_memalign(&p, align, size);
    else p = malloc(size);
    if (!p) {
      if (refused(b, "malloc", size, errno)) return 1;
      continue;
    }
    add(b, p, size, 0);
  }
  for (int round = 0; round < 16; round++) {
    for (size_t i = 0; i < b->n; i += 2) {
      obj_t *o = &b->o[i];
      size_t ns = round < 14 ? o->size + o->size / 4 + 4096 : o->size / 6 + 1;
      if (realloc_obj(b, o, ns)) return 1;
    }
  }
  return 0;
}

uint32_t smi_segment_ids_used(void); /* slots/segment.c: the next fresh id */

/* A large object freed and taken again from the large-object cache until its
 * id's epochs (17 bits) are used up; the next reuse needs a fresh id, which
 * the OS refuses (the id table's next page is not made writable): the object
 * must not come back under the tag of its last life, whose handle is stale. */
static int epochs(void) {
  const size_t size = 1 * MiB;
  const unsigned last = (1u << 17) - 2; /* SMI_EPOCH_LIMIT - 1 */
  void *p = malloc(size);
  sm_handle_t h = p ? sm_handle_of(p) : 0;
  for (long i = 0; p && ((h >> 9) & 0x1ffff) != last && i < 400000; i++) {
    free(p);
    p = malloc(size);
    h = p ? sm_handle_of(p) : 0;
  }
  if (!p || ((h >> 9) & 0x1ffff) != last)
    return fail("epochs: no large object reached epoch %u (handle %#llx)", last, (unsigned long long)h);
  /* the next fresh id at the start of a page of the id table (128 ids a page) */
  static void *keep[256];
  size_t n = 0;
  while (smi_segment_ids_used() % 128 != 0 && n < 256) {
    keep[n] = malloc(size + n * 4096);
    if (!keep[n++]) return fail("epochs: malloc failed");
  }
  free(p);
  smi_os_faults_set(SMI_FAULT_MPROTECT, SMI_FAULT_FROM, 1, 0);
  void *q = malloc(size);
  smi_os_faults_set(0, SMI_FAULT_OFF, 0, 0);
  if (q && sm_deref(h) != NULL)
    return fail("epochs: the stale handle %#llx of a freed large object names the object malloc returned next (%p)",
                (unsigned long long)h, q);
  if (q && sm_handle_of(q) == h) return fail("epochs: a new object has the handle of a freed one");
  free(q);
  while (n) free(keep[--n]);
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "epochs") == 0) {
    if (epochs()) return 1;
    printf("oom_prog: calls 0 refused 0 nulls 0 debug %d\n", (int)smi_check_enabled());
    return 0;
  }
  bool twin = argc > 1 && strcmp(argv[1], "twin") == 0, grows = argc > 1 && strcmp(argv[1], "grow") == 0;
  if (argc < 2 || (!twin && !grows && strcmp(argv[1], "mix") != 0)) {
    fprintf(stderr, "usage: SMI_OS_FAULTS=mask,mode,nth,seed oom_prog mix|twin|grow\n");
    return 2;
  }
  static book_t books[2];
  book_init(&books[0], 1, "thread 1");
  book_init(&books[1], 2, "thread 2");
  int rc = 0;
  if (grows) {
    rc = grow(&books[0]);
  } else if (twin) {
    pthread_t th;
    bool started = pthread_create(&th, NULL, twin_main, &books[1]) == 0;
    rc = run_book(&books[0], 150, false);
    void *res = NULL;
    if (started) pthread_join(th, &res);
    rc |= res != NULL;
  } else {
    rc = run_book(&books[0], 200, true);
  }
  unsigned long long calls = smi_os_faults_calls(), refusals = smi_os_faults_failed();
  long nulls = books[0].nulls + books[1].nulls;
  smi_os_faults_set(0, SMI_FAULT_OFF, 0, 0);
  if (rc) return 1;
  /* the faults stopped: what is live holds, and every call is served again */
  for (int k = 0; k < 2; k++)
    for (size_t i = 0; i < books[k].n; i++)
      if (check_obj(&books[k], &books[k].o[i], "after the faults")) return 1;
  book_t again;
  book_init(&again, 3, "after the faults");
  again.strict = !getenv("OOM_PROG_LIMITED"); /* (under a real limit, set from outside: no call must succeed) */
  if (run_book(&again, 100, true) || free_all(&again)) return 1;
  if (free_all(&books[0]) || free_all(&books[1])) return 1;
  malloc_trim(0);
  printf("oom_prog: calls %llu refused %llu nulls %ld debug %d\n", calls, refusals, nulls, (int)smi_check_enabled());
  return 0;
}
