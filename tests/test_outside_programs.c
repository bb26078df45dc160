/* test_outside_programs.c: real programs under LD_PRELOAD of slotmalloc,
 * their output compared with glibc's malloc (helper R2). Programs the first
 * round (test_edge_*, test_preload) did not run, each with a workload that
 * allocates heavily: python3 (dict/list/bytes churn, a multiprocessing pool),
 * perl (regular expressions), awk on a large input, make -j2, xz and zstd
 * with two threads, node, sqlite3, gdb, java (a JVM), rustc, cmake (configure
 * and build) and ssh-keygen. Each command runs in /bin/sh with
 * and without LD_PRELOAD (every process of the pipeline preloaded); both must
 * exit 0 and print the same. A program that is not installed is skipped. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static int installed(const char *name) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
  return system(cmd) == 0;
}

static char tmpdir[64];

static void run(const char *shell_cmd, int preload, tu_proc_t *r) {
  char *argv[] = {"/bin/sh", "-c", (char *)shell_cmd, NULL};
  const char *unset[] = {"LD_PRELOAD", "SLOTMALLOC_STATS", NULL};
  const char *set[] = {"LD_PRELOAD=" SM_SO_PATH, NULL};
  char **env = tu_env_make(unset, preload ? set : NULL);
  cr_assert_eq(tu_run(argv, env, tmpdir, NULL, 120, r), 0);
  free(env);
  cr_assert(!r->timed_out && WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0, "%s (%s): %s\n%s\n%s", shell_cmd,
            preload ? "slotmalloc" : "glibc", tu_status_str(r), r->out, r->err);
}

/* The command under glibc, then under slotmalloc: the same stdout. */
static void same_output(const char *program, const char *shell_cmd) {
  if (!installed(program)) cr_skip_test("%s is not installed", program);
  snprintf(tmpdir, sizeof tmpdir, "/tmp/sm_outside_prog.XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
  tu_proc_t g, s;
  run(shell_cmd, 0, &g);
  run(shell_cmd, 1, &s);
  cr_assert_gt(g.out_len, 0, "%s printed nothing", program);
  cr_assert_str_eq(s.out, g.out, "%s: output under slotmalloc differs from glibc's", program);
  tu_proc_free(&g);
  tu_proc_free(&s);
  char rm[128];
  snprintf(rm, sizeof rm, "rm -rf %s", tmpdir);
  (void)!system(rm);
}

Test(outside_programs, python3_churn_and_multiprocessing_pool, .timeout = 180) {
  same_output("python3", "python3 -c '\n"
                         "import multiprocessing as mp, hashlib\n"
                         "def work(n):\n"
                         "    d = {}\n"
                         "    for i in range(60000):\n"
                         "        d[str(i * n)] = [bytes(i % 300), (i, str(i))]\n"
                         "        if i % 3 == 0: d.pop(str((i // 2) * n), None)\n"
                         "    return len(d), sum(len(v[0]) for v in d.values())\n"
                         "if __name__ == \"__main__\":\n"
                         "    print(work(1))\n"
                         "    with mp.Pool(2) as p: print(p.map(work, range(2, 6)))\n"
                         "    b = b\"\".join(bytes([i % 256]) * (i % 1000) for i in range(5000))\n"
                         "    print(hashlib.sha256(b).hexdigest(), len(b))\n"
                         "'");
}

Test(outside_programs, perl_regular_expressions, .timeout = 120) {
  same_output("perl", "perl -e '\n"
                      "my %h; my $s = join(\",\", map { \"w$_=\" . ($_ * 7 % 1000) } 1 .. 100000);\n"
                      "while ($s =~ /w(\\d+)=(\\d+)/g) { $h{$2} .= $1 if $1 % 3 }\n"
                      "my @k = sort { $a <=> $b } keys %h; my $t = 0; $t += length($h{$_}) for @k;\n"
                      "(my $r = $s) =~ s/(\\d+)/<$1>/g;\n"
                      "print scalar(@k), \" $t \", length($r), \"\\n\";'");
}

Test(outside_programs, awk_on_a_large_input, .timeout = 120) {
  same_output("awk", "seq 1 300000 | awk '{ a[$1 % 5000] = a[$1 % 5000] substr($1, 1, 2); n += length($1) }\n"
                     "END { t = 0; for (k in a) t += length(a[k]); print n, t, length(a) }'");
}

Test(outside_programs, make_with_two_jobs, .timeout = 120) {
  same_output("make",
              "for i in $(seq 1 40); do printf 'f%d.txt:\\n\\tseq 1 %d > $@\\n' $i $((i * 500)); done > "
              "Makefile && printf 'all: %s\\n\\tcat $^ | wc -l\\n' \"$(seq -f 'f%g.txt' 1 40 | tr '\\n' ' ')\" "
              ">> Makefile && make -s -j2 all");
}

Test(outside_programs, xz_and_zstd_with_two_threads, .timeout = 120) {
  if (!installed("zstd")) cr_skip_test("zstd is not installed");
  same_output("xz", "seq 1 400000 > in && xz -T2 -2 --block-size=256KiB -c in > in.xz && xz -d -c in.xz | cksum && "
                    "zstd -q -T2 -3 -B262144 -c in > in.zst && zstd -q -d -c in.zst | cksum && cksum < in.xz");
}

Test(outside_programs, node_allocation_workload, .timeout = 120) {
  same_output("node", "node -e '\n"
                      "const m = new Map(); let t = 0;\n"
                      "for (let i = 0; i < 300000; i++) { m.set(\"k\" + (i % 50000), { a: new Array(i % 40).fill(i), "
                      "s: \"x\".repeat(i % 100) }); }\n"
                      "for (const [k, v] of m) t += v.a.length + v.s.length;\n"
                      "const b = []; for (let i = 0; i < 200; i++) b.push(Buffer.alloc(100000, i));\n"
                      "console.log(m.size, t, b.reduce((s, x) => s + x[99999], 0));'");
}

Test(outside_programs, sqlite3_group_by, .timeout = 120) {
  same_output("sqlite3", "sqlite3 :memory: \"create table t(a integer, b text);\n"
                         "with recursive c(x) as (select 1 union all select x + 1 from c where x < 100000)\n"
                         "insert into t select x % 997, hex(randomblob(0)) || x from c;\n"
                         "create index i on t(b);\n"
                         "select count(*), count(distinct a), sum(length(b)) from t;\n"
                         "select a, count(*) from t group by a order by a limit 3;\"");
}

Test(outside_programs, gdb_batch_on_a_program, .timeout = 120) {
  same_output("gdb", "gdb -nx -batch -ex 'break abort' -ex run -ex 'info breakpoints' --args /bin/ls / 2>&1 "
                     "| grep -c -e 'exited normally' -e 'breakpoint already hit'; true");
}

Test(outside_programs, java_hash_map, .timeout = 120) {
  same_output(
      "java",
      "printf '%s\\n' 'public class A { public static void main(String[] a) {' "
      "'java.util.HashMap<Integer, String> m = new java.util.HashMap<>();' "
      "'for (int i = 0; i < 200000; i++) m.put(i, \"v\" + i);' "
      "'long t = 0; for (String v : m.values()) t += v.length(); System.out.println(m.size() + \" \" + t); } }' "
      "> A.java && java A.java");
}

Test(outside_programs, rustc_builds_and_runs_a_program, .timeout = 120) {
  same_output("rustc",
              "printf '%s\\n' 'fn main() { let v: Vec<String> = (0..100000).map(|i| i.to_string()).collect();' "
              "'println!(\"{}\", v.iter().map(|s| s.len()).sum::<usize>()); }' > h.rs && rustc -O h.rs -o h && ./h");
}

Test(outside_programs, cmake_configures_and_builds, .timeout = 120) {
  same_output("cmake",
              "printf 'cmake_minimum_required(VERSION 3.10)\\nproject(p C)\\nadd_executable(p p.c)\\n' > "
              "CMakeLists.txt && echo 'int main(void) { return 0; }' > p.c && cmake -S . -B b > /dev/null && "
              "cmake --build b > /dev/null && ./b/p && echo built");
}

Test(outside_programs, ssh_keygen_makes_a_key, .timeout = 120) {
  same_output("ssh-keygen",
              "rm -f k k.pub && ssh-keygen -q -t ed25519 -N '' -f k && ssh-keygen -l -f k.pub | wc -w && "
              "ssh-keygen -y -f k | cut -d' ' -f1,2 > y && cut -d' ' -f1,2 k.pub | cmp - y && echo same");
}
