#!/usr/bin/env python3
"""Checks of the perf harness itself (ctest perf_harness): python3 perf/test_harness.py BUILD_DIR

The parsers (strace's summary, the RSS samples, the meter's line, --allocator, --program), the reports (a
single run prints no spread; user and system time apart; the redis table), the issue 8 verdicts on made-up
figures, then one small real run of harness.py with a --program, the idle, stress and redis workloads, whose
outputs must hold the system call and waiting-thread tables, the user and system times, the page faults, the
RSS curve, the program's row, and the redis table (or, without redis-server, the note that skipped it).
Exit status 77 (skipped) when BUILD_DIR has no perf programs."""
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harnesslib.allocators import Allocator, custom_allocator  # noqa: E402
from harnesslib.plan import CannotRun, choose_workloads, program_workloads  # noqa: E402
from harnesslib.report_text import render_text  # noqa: E402
from harnesslib.runner import Run, parse_samples, read_meter  # noqa: E402
from harnesslib.stats import Results  # noqa: E402
from harnesslib.syscalls import COUNTED, WAITS, parse_strace_summary  # noqa: E402
from harnesslib.tables import redis_rows  # noqa: E402
from harnesslib import targets  # noqa: E402
from harnesslib.workloads import WORKLOADS, Context  # noqa: E402

BUILD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(os.path.dirname(HERE), "build")

STRACE_OUT = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 99.83    0.044080          31      1412           mprotect
  0.05    0.000022           1        22           sched_yield
  0.09    0.000041           5         8           munmap
  0.08    0.000036           2        15         1 mmap
  0.00    0.000000           0         3           brk
------ ----------- ----------- --------- --------- ----------------
100.00    0.044157          30      1438         1 total
"""


def run(wall, rss, cpu, samples=(), sys=0.0, **fields):
    r = Run(wall=wall, user=cpu - sys, sys=sys, maxrss_kib=rss)
    r.fields = {"malloc": "x", **{k: str(v) for k, v in fields.items()}}
    r.samples = list(samples)
    return r


def workload(name):
    return next(w for w in WORKLOADS if w.name == name)


class Parsers(unittest.TestCase):
    def test_strace_summary(self):
        c = parse_strace_summary(STRACE_OUT)
        self.assertEqual(c, {"mmap": 15, "munmap": 8, "madvise": 0, "mprotect": 1412, "brk": 3, "mremap": 0,
                             "process_madvise": 0})
        w = parse_strace_summary(STRACE_OUT, COUNTED + WAITS)
        self.assertEqual((w["sched_yield"], w["futex"], w["mprotect"]), (22, 0, 1412))

    def test_meter_line(self):
        with tempfile.NamedTemporaryFile("w", suffix=".measure", delete=False) as f:
            f.write("wall=1.5 maxrss_kib=2048 user=0.75 sys=0.25 minflt=4321 majflt=0 wstatus=0\n")
        try:
            r = Run()
            read_meter(f.name, r)
        finally:
            os.unlink(f.name)
        self.assertEqual((r.status, r.wall, r.maxrss_kib, r.user, r.sys, r.minflt), ("ok", 1.5, 2048, 0.75, 0.25, 4321))

    def test_samples(self):
        text = "sample ops=10 ms=-1.5 rss_kib=300\nnoise\nsample ops=20 ms=50.0 rss_kib=200\nworkload=idle x=1\n"
        self.assertEqual(parse_samples(text), [(10, -1.5, 300), (20, 50.0, 200)])

    def test_allocator_option(self):
        a = custom_allocator("mine=/no/such/libmine.so.1", 0)
        self.assertEqual((a.name, a.preload, a.expect), ("mine", "/no/such/libmine.so.1", "libmine.so.1"))
        self.assertFalse(a.available)  # the file is missing: skipped with a note, not run
        self.assertTrue(a.malloc_ok("libmine.so.1"))
        self.assertFalse(a.malloc_ok("libc.so.6"))
        for bad in ("mine", "=/lib.so", "mine="):
            with self.assertRaises(ValueError):
                custom_allocator(bad, 0)

    def test_program_option(self):
        (p,) = program_workloads(['sh1=sh -c "echo a b"'])
        argv, stdin, env = p.args(Context(BUILD, 1.0, 2, False, tempfile.gettempdir()))
        self.assertTrue(argv[0].endswith("sh"))
        self.assertEqual(argv[1:], ["-c", "echo a b"])
        self.assertEqual((p.kind, stdin, env), ("program", None, {}))
        self.assertEqual([w.name for w in choose_workloads(None, [p])], ["sh1"])  # alone: only the programs
        self.assertEqual([w.name for w in choose_workloads("cfrac", [p])], ["cfrac", "sh1"])
        for bad in (["nocommand"], ["cfrac=true"], ["a=true", "a=false"]):
            with self.assertRaises(CannotRun):
                program_workloads(bad)


class Reports(unittest.TestCase):
    def results(self, runs, reps):
        allocs = [Allocator(n, "#000000") for n in ("slotmalloc", "mimalloc", "jemalloc", "tcmalloc")]
        ws = [workload("cfrac"), workload("idle")]
        return Results(allocs, ws, runs, {}, "mimalloc", reps, 2, reps == 1, [])

    def test_one_run_prints_no_spread(self):
        runs = {(w, a): [run(1.0, 1000, 1.0, rss_idle_1s_kib=100)] for w in ("cfrac", "idle")
                for a in ("slotmalloc", "mimalloc", "jemalloc", "tcmalloc")}
        text = render_text(self.results(runs, 1))
        self.assertNotIn("±", text)
        self.assertIn("×1.00", text)

    def test_user_and_system_time_apart(self):
        runs = {("cfrac", a): [run(1.0, 1000, 3.0, sys=s)] for a, s in
                (("slotmalloc", 2.0), ("mimalloc", 0.5), ("jemalloc", 0.5), ("tcmalloc", 0.5))}
        text = render_text(self.results(runs, 1))
        sys_table = text.split("SYSTEM TIME")[1].split("\n\n")[0]
        user_table = text.split("USER TIME")[1].split("\n\n")[0]
        self.assertIn("2.00 ×4.00", sys_table)  # 2 s in the kernel against mimalloc's 0.5
        self.assertIn("1.00 ×0.40", user_table)  # 3 - 2 s of user time against 2.5

    def test_redis_table(self):
        steps = dict(rss_load_kib=102400, rss_flush_kib=51200, rss_sets_kib=20480, rss_idle_kib=10240,
                     rss_purge_kib=10240, used_kib=4096, server_user_s=0.5, server_sys_s=0.25)
        runs = {("redis", "slotmalloc"): [run(1, 110000, 1.0, **dict(steps, malloc="libslotmalloc.so"))],
                ("redis", "mimalloc"): [run(1, 110000, 1.0,
                                            **dict(steps, rss_sets_kib=10240, malloc="libmimalloc.so.2"))]}
        allocs = [Allocator(n, "#000000") for n in ("slotmalloc", "mimalloc")]
        res = Results(allocs, [workload("redis")], runs, {}, "mimalloc", 1, 2, True, [])
        rows = {r[1]: r for r in redis_rows(res)}
        self.assertEqual(rows["slotmalloc"][:9], ["redis", "slotmalloc", "libslotmalloc.so", "100 ×1.00",
                                                  "50.0 ×1.00", "20.0 ×2.00", "10.0 ×1.00", "10.0 ×1.00", "4.0"])
        self.assertEqual(rows["slotmalloc"][9], "0.75 s")
        self.assertEqual(rows["mimalloc"][5], "10.0")  # the baseline shows no ratio
        self.assertIn("REDIS", render_text(res))

    def test_targets(self):
        runs = {
            # RSS ×1.05 of the lowest peer (jemalloc 1000): PASS; CPU ×1.10 but within mimalloc's range: TIE
            ("cfrac", "slotmalloc"): [run(1, 1050, 1.0), run(1, 1050, 1.1), run(1, 1050, 1.2)],
            ("cfrac", "mimalloc"): [run(1, 2000, 0.9), run(1, 2000, 1.0), run(1, 2000, 1.1)],
            ("cfrac", "jemalloc"): [run(1, 1000, 1.0)] * 3,
            ("cfrac", "tcmalloc"): [run(1, 3000, 1.0)] * 3,
            # RSS ×1.50: MISS; CPU ×2 with no overlap: MISS; idle RSS at 1 s ×1.1 of mimalloc's: PASS
            ("idle", "slotmalloc"): [run(1, 1500, 2.0, rss_idle_1s_kib=110)] * 3,
            ("idle", "mimalloc"): [run(1, 1000, 1.0, rss_idle_1s_kib=100)] * 3,
            ("idle", "jemalloc"): [run(1, 1200, 1.0, rss_idle_1s_kib=100)] * 3,
            ("idle", "tcmalloc"): [run(1, 1100, 1.0, rss_idle_1s_kib=100)] * 3,
        }
        res = self.results(runs, 3)
        rows = {r[0]: r for r in targets.workload_rows(res)}
        self.assertEqual(rows["cfrac"][1:6], ["×1.05", "jemalloc 1.0 MiB", "PASS", "×1.10", "TIE"])
        self.assertEqual(rows["idle"][1:6], ["×1.50", "mimalloc 1.0 MiB", "MISS", "×2.00", "MISS"])
        lines = "\n".join(targets.summary_lines(res))
        self.assertIn("1 PASS, 1 MISS of 2 workloads", lines)
        self.assertIn("1 TIE", lines)
        self.assertIn("×0.89 over 2 workloads: PASS", lines)  # sqrt(0.525 × 1.5)
        self.assertIn("×1.10: PASS", lines)


class EndToEnd(unittest.TestCase):
    def test_small_run(self):
        with tempfile.TemporaryDirectory(prefix="perf-test-") as out:
            cmd = [sys.executable, os.path.join(HERE, "harness.py"), "--build-dir", BUILD, "--quick", "--reps", "2",
                   "--allocators", "glibc,slotmalloc", "--workloads", "cfrac,idle,stress,redis", "--no-callgrind",
                   "--program", "echo=echo hello", "--out", out]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            with open(os.path.join(out, "latest.txt")) as f:
                text = f.read()
            rows = [line.split()[0] for line in text.splitlines() if line.split()]
            for name in ("cfrac", "idle", "echo", "stress"):
                self.assertIn(name, rows)
            for table in ("USER TIME", "SYSTEM TIME", "MINOR PAGE FAULTS"):
                self.assertIn(table, text)
            with open(os.path.join(out, "latest-runs.csv")) as f:
                runs = list(csv.DictReader(f))
            stress = [r for r in runs if r["workload"] == "stress"]
            self.assertEqual(len(stress), 4)  # 2 reps × 2 allocators
            for r in stress:
                self.assertEqual(r["status"], "ok")
                self.assertGreater(int(r["minor_faults"]), 1000)  # ~200 MB touched
                self.assertGreater(float(r["sys_s"]), 0.0)
            if shutil.which("redis-server"):
                redis = text.split("REDIS:")[1]
                self.assertIn("libslotmalloc.so", redis)
                self.assertIn("libc.so.6", redis)  # glibc's malloc preloaded over redis's jemalloc
            else:
                self.assertIn("redis skipped: redis-server (apt-get install redis-server) not found", text)
            with open(os.path.join(out, "latest-rss.csv")) as f:
                curve = [line for line in f if line.startswith("idle,slotmalloc,")]
            self.assertGreater(len(curve), 20)  # 20 samples of the burst alone
            if "strace could not trace" not in text and "strace not found" not in text:
                self.assertIn("MEMORY SYSTEM CALLS", text)
                self.assertIn("WAITING THREADS", text)
            if "gnuplot not found" not in text:
                self.assertTrue(os.path.exists(os.path.join(out, "latest-rss.png")))
                self.assertTrue(os.path.exists(os.path.join(out, "latest.png")))


if __name__ == "__main__":
    if not os.path.exists(os.path.join(BUILD, "perf", "perf-measure")) or \
            not os.path.exists(os.path.join(BUILD, "perf", "idle")):
        print(f"perf_harness: no perf programs in {BUILD}: skipped")
        sys.exit(77)
    unittest.main(argv=[sys.argv[0], "-v"])
