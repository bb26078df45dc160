/* test_preload.c: real, unmodified programs from Debian packages run twice on
 * a non-trivial workload, once plain (glibc malloc) and once with
 * LD_PRELOAD=libslotmalloc.so; both must exit 0 with byte-identical stdout,
 * and the preloaded run must print nothing about slotmalloc on stderr.
 * A program that is not installed is skipped.
 *
 * SM_SO_PATH (the shared library) comes from tests/CMakeLists.txt.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#ifndef SM_SO_PATH
#error "SM_SO_PATH must name libslotmalloc.so"
#endif

#define RUN_TIMEOUT 150.0

/* ---- helpers ------------------------------------------------------------------ */

/* The path of an installed program: /usr/bin and /bin first (the Debian
 * package's), then $PATH. NULL if missing. */
static const char *find_prog(const char *name) {
  static __thread char buf[8][PATH_MAX];
  static __thread int slot;
  char *out = buf[slot++ % 8];
  const char *dirs[] = {"/usr/bin", "/bin"};
  for (int i = 0; i < 2; i++) {
    snprintf(out, PATH_MAX, "%s/%s", dirs[i], name);
    if (access(out, X_OK) == 0) return out;
  }
  const char *path = getenv("PATH");
  if (!path) return NULL;
  char *copy = strdup(path), *save = NULL;
  for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    snprintf(out, PATH_MAX, "%s/%s", d, name);
    if (access(out, X_OK) == 0) {
      free(copy);
      return out;
    }
  }
  free(copy);
  return NULL;
}

static const char *need_prog(const char *name) {
  const char *p = find_prog(name);
  if (!p) cr_skip_test("%s is not installed", name);
  return p;
}

/* Temporary directories of the running test, removed by its .fini (which
 * Criterion runs also when an assertion failed). */
static char *tmpdirs[4];
static int ntmpdirs;

static char *make_tmpdir(void) {
  char tmpl[] = "/tmp/sm_preload_XXXXXX";
  char *d = mkdtemp(tmpl);
  cr_assert_not_null(d, "mkdtemp failed: %s", strerror(errno));
  cr_assert_lt(ntmpdirs, 4);
  return tmpdirs[ntmpdirs++] = strdup(d);
}

static void write_file(const char *dir, const char *name, const char *text, size_t len) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f, "cannot write %s", path);
  cr_assert_eq(fwrite(text, 1, len, f), len);
  fclose(f);
}

static void rm_rf(const char *dir) {
  const char *rm = find_prog("rm");
  if (!rm || strncmp(dir, "/tmp/sm_preload_", 16) != 0) return;
  char *argv[] = {(char *)rm, "-rf", (char *)dir, NULL};
  tu_proc_t r;
  if (tu_run(argv, NULL, NULL, NULL, 60, &r) == 0) tu_proc_free(&r);
}

static void cleanup_tmpdirs(void) {
  for (int i = 0; i < ntmpdirs; i++) {
    rm_rf(tmpdirs[i]);
    free(tmpdirs[i]);
  }
  ntmpdirs = 0;
}

/* Runs argv with env vars `set` added, plain (no LD_PRELOAD) or preloaded. */
static void run_one(char *const argv[], const char *const *set, int preload, const char *cwd, const char *stdin_path,
                    tu_proc_t *r) {
  const char *unset[] = {"LD_PRELOAD", "SLOTMALLOC_STATS", "SLOTMALLOC_VERBOSE", "SLOTMALLOC_ABORT_ON_ERROR", NULL};
  const char *all[16];
  int n = 0;
  for (; set && set[n] && n < 14; n++) all[n] = set[n];
  if (preload) all[n++] = "LD_PRELOAD=" SM_SO_PATH;
  all[n] = NULL;
  char **env = tu_env_make(unset, all);
  int rc = tu_run(argv, env, cwd, stdin_path, RUN_TIMEOUT, r);
  free(env);
  cr_assert_eq(rc, 0, "could not start %s", argv[0]);
}

/* Runs the workload plain and preloaded (each in its own cwd when cwd_a/cwd_b
 * differ) and compares: both exit 0, same stdout, stdout at least min_out bytes,
 * and no "slotmalloc" on the preloaded run's stderr. */
static void compare_runs(const char *what, char *const argv[], const char *const *set, const char *cwd_a,
                         const char *cwd_b, const char *stdin_path, size_t min_out) {
  cr_assert_eq(access(SM_SO_PATH, R_OK), 0, "the library %s is missing", SM_SO_PATH);
  tu_proc_t plain, pre;
  run_one(argv, set, 0, cwd_a, stdin_path, &plain);
  cr_assert(!plain.timed_out && WIFEXITED(plain.status) && WEXITSTATUS(plain.status) == 0,
            "%s without slotmalloc failed (%s): the test itself is broken. stderr:\n%s", what, tu_status_str(&plain),
            plain.err);
  cr_assert_geq(plain.out_len, min_out, "%s printed only %zu bytes: workload too small?\n%s", what, plain.out_len,
                plain.out);
  run_one(argv, set, 1, cwd_b, stdin_path, &pre);
  cr_assert(!pre.timed_out, "%s under LD_PRELOAD hung (killed after %.0f s)", what, RUN_TIMEOUT);
  cr_assert(WIFEXITED(pre.status) && WEXITSTATUS(pre.status) == 0,
            "%s under LD_PRELOAD=libslotmalloc.so failed (%s). stderr:\n%.4000s", what, tu_status_str(&pre), pre.err);
  if (pre.out_len != plain.out_len || memcmp(pre.out, plain.out, plain.out_len) != 0) {
    size_t i = 0;
    while (i < pre.out_len && i < plain.out_len && pre.out[i] == plain.out[i]) i++;
    size_t from = i > 200 ? i - 200 : 0;
    cr_assert_fail("%s: stdout differs under LD_PRELOAD at byte %zu (lengths %zu plain, %zu preloaded)\n"
                   "plain:     ...%.400s\npreloaded: ...%.400s",
                   what, i, plain.out_len, pre.out_len, plain.out + from, pre.out + from);
  }
  cr_assert_null(strstr(pre.err, "slotmalloc"), "%s under LD_PRELOAD wrote about slotmalloc on stderr:\n%.2000s",
                 what, pre.err);
  tu_proc_free(&plain);
  tu_proc_free(&pre);
}

/* ---- python3 ----------------------------------------------------------------------- */
static const char PY_SCRIPT[] =
    "import hashlib, json, random, re, threading\n"
    "random.seed(12345)\n"
    "d = {}\n"
    "for i in range(200000):\n"
    "    k = 'key%07d_%x' % (i, random.getrandbits(32))\n"
    "    d[k] = [i, str(i * i), {'v': random.random(), 'w': 'x' * (i % 50)}]\n"
    "items = sorted(d.items(), key=lambda kv: (kv[1][1], kv[0]))\n"
    "s = json.dumps(items[:60000])\n"
    "back = json.loads(s)\n"
    "assert back == [[k, v] for k, v in items[:60000]]\n"
    "print(len(d), len(s), hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest())\n"
    "def work(n, out):\n"
    "    acc = []\n"
    "    for j in range(30000):\n"
    "        acc.append(('y' * (j % 300)) + str(n * j))\n"
    "        if j % 1000 == 999:\n"
    "            del acc[::2]\n"
    "    out[n] = hashlib.md5(''.join(acc).encode()).hexdigest()\n"
    "out = {}\n"
    "ts = [threading.Thread(target=work, args=(n, out)) for n in range(4)]\n"
    "for t in ts: t.start()\n"
    "for t in ts: t.join()\n"
    "print(sorted(out.items()))\n"
    "words = re.findall(r'key\\d+_[0-9a-f]+', s)\n"
    "print(len(words), sum(len(w) for w in set(words)))\n"
    "for k, v in items[:20]: print(k, v[0], v[1])\n"
    "del d, items, back\n"
    "print('done')\n";

/* python3 (PYTHONMALLOC=malloc, so every object goes through malloc): a dict
 * of 200k entries, a sort, a JSON round trip, hashes, 4 threads. */
Test(preload, python3, .timeout = 400) {
  const char *py = need_prog("python3");
  char *argv[] = {(char *)py, "-c", (char *)PY_SCRIPT, NULL};
  const char *set[] = {"PYTHONMALLOC=malloc", "PYTHONHASHSEED=0", "PYTHONDONTWRITEBYTECODE=1", NULL};
  compare_runs("python3", argv, set, "/", "/", NULL, 400);
}

/* ---- sqlite3 ------------------------------------------------------------------------ */
static const char SQL_SCRIPT[] =
    "PRAGMA cache_size = -2000;\n"
    "CREATE TABLE t(id INTEGER PRIMARY KEY, grp INTEGER, name TEXT, val REAL, b BLOB);\n"
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000)\n"
    "  INSERT INTO t(grp, name, val, b)\n"
    "  SELECT x % 97, printf('name-%06d-%s', (x * 7919) % 50000, hex(x * x)), (x * 31 % 1000) / 7.0,\n"
    "         zeroblob(x % 200) FROM c;\n"
    "CREATE INDEX t_name ON t(name);\n"
    "CREATE INDEX t_grp_val ON t(grp, val);\n"
    "SELECT grp, count(*), sum(val), min(name), max(name) FROM t GROUP BY grp ORDER BY grp;\n"
    "SELECT name, val FROM t ORDER BY name DESC LIMIT 50;\n"
    "SELECT count(DISTINCT name), total(length(b)) FROM t;\n"
    "SELECT a.grp, count(*), max(b.name) FROM t a JOIN t b ON a.grp = b.grp\n"
    "  WHERE a.id < 2000 AND b.id < 2000 GROUP BY a.grp ORDER BY 2 DESC, 1 LIMIT 10;\n"
    "SELECT length(group_concat(name, ',')) FROM (SELECT name FROM t ORDER BY val, name LIMIT 5000);\n"
    "UPDATE t SET name = upper(name) || '-u' WHERE id % 3 = 0;\n"
    "DELETE FROM t WHERE id % 5 = 0;\n"
    "VACUUM;\n"
    "SELECT count(*), sum(length(name)), sum(grp) FROM t;\n"
    "SELECT grp, group_concat(id) FROM (SELECT grp, id FROM t WHERE id < 600 ORDER BY id)\n"
    "  GROUP BY grp ORDER BY grp LIMIT 20;\n"
    "SELECT name FROM t WHERE name LIKE 'NAME-0001%' ORDER BY name;\n"
    "PRAGMA integrity_check;\n";

/* Runs the sqlite3 job (script from a file, database in each run's own
 * folder) plain and preloaded, with the environment set, and compares. */
static void sqlite3_job(const char *what, const char *const *set) {
  const char *sq = need_prog("sqlite3");
  char *a = make_tmpdir(), *b = make_tmpdir();
  write_file(a, "script.sql", SQL_SCRIPT, sizeof SQL_SCRIPT - 1);
  char script[PATH_MAX];
  snprintf(script, sizeof script, "%s/script.sql", a);
  char *argv[] = {(char *)sq, "-batch", "test.db", NULL};
  compare_runs(what, argv, set, a, b, script, 2000);
}

/* sqlite3: 50k rows inserted through a recursive CTE into a file database,
 * indexes, GROUP BY / ORDER BY / JOIN queries, UPDATE, DELETE, VACUUM. */
Test(preload, sqlite3, .timeout = 400, .fini = cleanup_tmpdirs) { sqlite3_job("sqlite3", NULL); }

/* The same sqlite3 job with the options at their edges (NUMA-local segments,
 * no purge delay, no large-object cache): the same output. */
Test(preload, sqlite3_with_options, .timeout = 400, .fini = cleanup_tmpdirs) {
  const char *set[] = {"SLOTMALLOC_NUMA=1", "SLOTMALLOC_PURGE_DELAY_MS=0", "SLOTMALLOC_LARGE_CACHE_MB=0", NULL};
  sqlite3_job("sqlite3 (options)", set);
}

/* ---- git ---------------------------------------------------------------------------- */
static const char GIT_SCRIPT[] =
    "set -e\n"
    "export HOME=\"$PWD\" GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=Tester GIT_AUTHOR_EMAIL=t@example.invalid\n"
    "export GIT_COMMITTER_NAME=Tester GIT_COMMITTER_EMAIL=t@example.invalid LC_ALL=C TZ=UTC\n"
    "git init -q -b main repo\n"
    "cd repo\n"
    "for c in 1 2 3 4 5 6; do\n"
    "  export GIT_AUTHOR_DATE=\"2024-01-0${c}T12:00:00Z\" GIT_COMMITTER_DATE=\"2024-01-0${c}T12:00:00Z\"\n"
    "  n=0\n"
    "  while [ $n -lt 300 ]; do\n"
    "    if [ $c -eq 1 ] || [ $((n % (c + 1))) -eq 0 ]; then\n"
    "      mkdir -p d$((n % 12))\n"
    "      l=0\n"
    "      while [ $l -lt 30 ]; do\n"
    "        printf 'file %d line %d commit %d %d\\n' $n $l $c $((n * l + c))\n"
    "        l=$((l + 1))\n"
    "      done > d$((n % 12))/f$n.txt\n"
    "    fi\n"
    "    n=$((n + 1))\n"
    "  done\n"
    "  if [ $c -eq 4 ]; then rm -rf d3; fi\n"
    "  git add -A\n"
    "  git commit -q -m \"commit $c\"\n"
    "done\n"
    "git log --stat\n"
    "git gc -q\n"
    "git count-objects -v | grep -E '^(count|in-pack|packs)'\n"
    "git fsck --full --no-progress\n"
    "git rev-list --objects --all | sort\n"
    "git diff --stat HEAD~4 HEAD | tail -n 3\n"
    "git log -p --format='%H %s' -n 2 -- d1 | head -n 400\n"
    "git blame -s d2/f2.txt\n"
    "git grep -c 'commit 5' | head -n 50\n"
    "git archive --format=tar HEAD | cksum\n";

/* git: init, 6 commits over 300 files (then deletions), log --stat, gc,
 * fsck, rev-list, diff, blame, grep, archive. Dates and names are fixed, so
 * every hash is the same in both runs. */
Test(preload, git, .timeout = 400, .fini = cleanup_tmpdirs) {
  const char *git = need_prog("git");
  (void)git;
  const char *sh = need_prog("sh");
  char *a = make_tmpdir(), *b = make_tmpdir();
  char *argv[] = {(char *)sh, "-c", (char *)GIT_SCRIPT, NULL};
  compare_runs("git", argv, NULL, a, b, NULL, 20000);
}

/* ---- gcc ---------------------------------------------------------------------------- */
/* A C file with enough in it to keep the optimiser busy. */
static char *gen_c_source(size_t *len) {
  size_t cap = 1 << 20, n = 0;
  char *s = malloc(cap);
  n += (size_t)snprintf(s + n, cap - n,
                        "#include <stddef.h>\n#include <string.h>\n"
                        "struct node { struct node *next; long key; double w[4]; };\n");
  for (int f = 0; f < 120; f++)
    n += (size_t)snprintf(
        s + n, cap - n,
        "double f%d(const double *a, const double *b, size_t n) {\n"
        "  double acc = %d.5;\n"
        "  for (size_t i = 0; i < n; i++) acc += a[i] * b[(i * %d) %% n] + (double)(i ^ %d);\n"
        "  return acc;\n}\n"
        "long g%d(struct node *p, long k) {\n"
        "  long s = 0;\n"
        "  for (; p; p = p->next) if (p->key %% %d == k) s += p->key * %d; else s ^= (long)p->w[%d];\n"
        "  return s;\n}\n",
        f, f, f % 7 + 1, f * 3, f, f % 5 + 2, f + 1, f % 4);
  n += (size_t)snprintf(s + n, cap - n, "int dispatch(int op, int x) {\n  switch (op) {\n");
  for (int c = 0; c < 300; c++)
    n += (size_t)snprintf(s + n, cap - n, "  case %d: return x * %d + %d;\n", c * 7, c + 3, c % 11);
  n += (size_t)snprintf(s + n, cap - n, "  default: return -1;\n  }\n}\n");
  *len = n;
  return s;
}

/* gcc -O2: the assembly (on stdout) and the object file's checksum are the
 * same with and without slotmalloc (the driver, cc1 and as all preloaded). */
Test(preload, gcc, .timeout = 400, .fini = cleanup_tmpdirs) {
  const char *gcc = need_prog("gcc");
  const char *sh = need_prog("sh");
  char *dir = make_tmpdir();
  size_t len;
  char *src = gen_c_source(&len);
  write_file(dir, "work.c", src, len);
  free(src);
  /* the same cwd for both runs: the object's debug info names it */
  char *argv_s[] = {(char *)gcc, "-O2", "-frandom-seed=1", "-S", "-o", "-", "work.c", NULL};
  compare_runs("gcc -S", argv_s, NULL, dir, dir, NULL, 10000);
  char *argv_c[] = {(char *)sh, "-c",
                    "gcc -O2 -g -frandom-seed=1 -c work.c -o work.o && cksum < work.o && "
                    "gcc -O2 -frandom-seed=1 -pipe -c work.c -o work2.o && cksum < work2.o",
                    NULL};
  compare_runs("gcc -c", argv_c, NULL, dir, dir, NULL, 10);
}

/* ---- coreutils sort ----------------------------------------------------------------------- */
/* sort (2 threads, a small buffer so it spills and merges): 300k lines. */
Test(preload, sort, .timeout = 400, .fini = cleanup_tmpdirs) {
  const char *sort = need_prog("sort");
  char *dir = make_tmpdir();
  size_t cap = 300000 * 40, n = 0;
  char *text = malloc(cap);
  tu_rng_t r = tu_rng(9);
  for (int i = 0; i < 300000; i++)
    n += (size_t)snprintf(text + n, cap - n, "%08llx %d %s\n", (unsigned long long)(tu_rng_next(&r) & 0xffffffffu),
                          i % 1000, (i % 3) ? "alpha" : "omega-beta");
  write_file(dir, "in.txt", text, n);
  free(text);
  char *argv[] = {(char *)sort, "--parallel=2", "-S", "2M", "-T", dir, "-k2,2n", "-k1,1", "in.txt", NULL};
  const char *set[] = {"LC_ALL=C", NULL};
  compare_runs("sort", argv, set, dir, dir, NULL, 1000000);
}

/* ---- the preload is real ---------------------------------------------------------------- */
/* With SLOTMALLOC_STATS=1 and LD_PRELOAD, a program's stderr gets slotmalloc's
 * statistics block at exit (first line "slotmalloc stats..."); without the
 * preload it does not: the program really allocated through slotmalloc. */
static void check_stats_block(const char *what, char *const argv[]) {
  cr_assert_eq(access(SM_SO_PATH, R_OK), 0, "the library %s is missing", SM_SO_PATH);
  const char *set[] = {"SLOTMALLOC_STATS=1", "PYTHONMALLOC=malloc", NULL};
  tu_proc_t plain, pre;
  run_one(argv, set, 0, "/", NULL, &plain);
  run_one(argv, set, 1, "/", NULL, &pre);
  cr_assert(WIFEXITED(plain.status) && WEXITSTATUS(plain.status) == 0, "%s failed plain", what);
  cr_assert(WIFEXITED(pre.status) && WEXITSTATUS(pre.status) == 0, "%s failed under LD_PRELOAD (%s): %s", what,
            tu_status_str(&pre), pre.err);
  cr_assert_null(strstr(plain.err, "slotmalloc stats"), "%s printed slotmalloc stats without the preload", what);
  int found = strncmp(pre.err, "slotmalloc stats", 16) == 0 || strstr(pre.err, "\nslotmalloc stats") != NULL;
  cr_assert(found,
            "%s with LD_PRELOAD and SLOTMALLOC_STATS=1: no line starting \"slotmalloc stats\" on stderr:\n%.2000s",
            what, pre.err);
  cr_assert_eq(plain.out_len, pre.out_len, "%s: stdout differs", what);
  tu_proc_free(&plain);
  tu_proc_free(&pre);
}

/* bash, python3 and sqlite3 print slotmalloc's statistics when preloaded with
 * SLOTMALLOC_STATS=1. (Not coreutils, which close stderr themselves at exit,
 * nor dash, which leaves through _exit.) */
Test(preload, stats_prove_preload, .timeout = 120) {
  const char *sh = need_prog("bash");
  char *a1[] = {(char *)sh, "-c", "i=0; while [ $i -lt 2000 ]; do v=\"$v$i\"; i=$((i+1)); done; echo ${#v}", NULL};
  check_stats_block("bash", a1);
  const char *py = find_prog("python3");
  if (py) {
    char *a2[] = {(char *)py, "-c", "print(sum(len(str(i)) for i in range(100000)))", NULL};
    check_stats_block("python3", a2);
  }
  const char *sq = find_prog("sqlite3");
  if (sq) {
    char *a3[] = {(char *)sq, ":memory:",
                  "select count(*) from (with recursive c(x) as (select 1 union all "
                  "select x+1 from c where x<1000) select x from c);",
                  NULL};
    check_stats_block("sqlite3", a3);
  }
}

/* SLOTMALLOC_VERBOSE=1 prints the options in force once, at start-up, then the
 * statistics at exit; SLOTMALLOC_VERBOSE=2 also reports every segment mapped. */
Test(preload, verbose_levels, .timeout = 120) {
  const char *sh = need_prog("bash");
  char *argv[] = {(char *)sh, "-c", "i=0; while [ $i -lt 3000 ]; do v=\"$v$i\"; i=$((i+1)); done; echo ${#v}", NULL};
  const char *v1[] = {"SLOTMALLOC_VERBOSE=1", NULL};
  const char *v2[] = {"SLOTMALLOC_VERBOSE=2", NULL};
  tu_proc_t one, two;
  run_one(argv, v1, 1, "/", NULL, &one);
  run_one(argv, v2, 1, "/", NULL, &two);
  cr_assert(WIFEXITED(one.status) && WEXITSTATUS(one.status) == 0, "bash failed: %s", one.err);
  const char *opt = strstr(one.err, "slotmalloc: options ABORT_ON_ERROR=1 STATS=off ");
  cr_assert_not_null(opt, "no options line with SLOTMALLOC_VERBOSE=1:\n%.2000s", one.err);
  cr_assert_null(strstr(opt + 1, "slotmalloc: options"), "the options line was printed twice");
  cr_assert_not_null(strstr(one.err, "slotmalloc stats (process)"), "no statistics at exit:\n%.2000s", one.err);
  cr_assert_null(strstr(one.err, "new segment"), "level 1 reported segments");
  cr_assert_not_null(strstr(two.err, "slotmalloc: new segment 0x"), "level 2 reported no segment:\n%.2000s", two.err);
  tu_proc_free(&one);
  tu_proc_free(&two);
}

/* ---- the static build ------------------------------------------------------------------- */
#ifdef SM_STATIC_PROG
/* static_prog (linked with libslotmalloc.a, no LD_PRELOAD) exits 0, and with
 * SLOTMALLOC_STATS=1 prints slotmalloc's statistics block at exit (and without
 * it does not): the static library's allocator is the one in use. */
Test(preload, static_prog_uses_slotmalloc, .timeout = 120) {
  char *argv[] = {SM_STATIC_PROG, NULL};
  const char *stats[] = {"SLOTMALLOC_STATS=1", NULL};
  tu_proc_t plain, with;
  run_one(argv, NULL, 0, "/", NULL, &plain);
  run_one(argv, stats, 0, "/", NULL, &with);
  cr_assert(WIFEXITED(plain.status) && WEXITSTATUS(plain.status) == 0, "static_prog failed (%s): %s",
            tu_status_str(&plain), plain.err);
  cr_assert_not_null(strstr(plain.out, "static_prog: ok"));
  cr_assert_null(strstr(plain.err, "slotmalloc stats"), "stats printed without SLOTMALLOC_STATS");
  cr_assert(WIFEXITED(with.status) && WEXITSTATUS(with.status) == 0,
            "static_prog with SLOTMALLOC_STATS=1 failed (%s)", tu_status_str(&with));
  int found = strncmp(with.err, "slotmalloc stats", 16) == 0 || strstr(with.err, "\nslotmalloc stats") != NULL;
  cr_assert(found, "static_prog with SLOTMALLOC_STATS=1: no line starting \"slotmalloc stats\" on stderr:\n%.2000s",
            with.err);
  tu_proc_free(&plain);
  tu_proc_free(&with);
}
#endif
