#!/usr/bin/env python3
"""harness.py: runs every perf workload under every allocator and reports.

Normally started by perf/run.sh, which installs the packages and builds first.
Python 3 standard library only.

Method, in short (perf/README.md has the long form):
  * all allocators are compared on the same machine in the same run;
  * runs are interleaved: for each repetition, for each workload, every
    allocator once (the order rotated from one repetition to the next), so that
    drift of a noisy machine hits all allocators alike;
  * each case is repeated (--reps, default 5); the median is reported with the
    spread (min-max, and the quartiles in the CSV);
  * time is the wall time of the whole process (fork to reaped exit), memory is
    the peak resident set (ru_maxrss from wait4, which covers the program's own
    children too, e.g. cc1 under gcc);
  * every workload prints which object defines the malloc it called; a run
    whose malloc is not the allocator under test counts as a failure, so a
    preload that silently did not load cannot pass for a result;
  * instruction counts of the malloc+free pair come from callgrind as
    (Ir(2N) - Ir(N)) / N, which cancels start-up and exit.
"""
import argparse
import csv
import datetime
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MULTIARCH = "/usr/lib/x86_64-linux-gnu"


# ---------------------------------------------------------------- allocators
class Allocator:
    """How to make a program use one allocator: a library to preload, a
    statically linked binary (suffix -smstatic), or nothing (glibc)."""

    def __init__(self, name, preload=None, static=False, expect=None, note=""):
        self.name = name
        self.preload = preload  # path of the library to LD_PRELOAD
        self.static = static  # use the <workload>-smstatic binaries
        self.expect = expect  # prefix of the malloc= value the workloads print
        self.note = note  # why it is missing, if it is
        self.available = not note

    def malloc_ok(self, origin):
        if self.static:
            return origin.endswith("-smstatic") or origin == "main-program"
        return origin.startswith(self.expect)


def find_library(soname):
    """The path of a shared library by soname: the multiarch folder, then ldconfig."""
    path = os.path.join(MULTIARCH, soname)
    if os.path.exists(path):
        return path
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    except OSError:
        return None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith(soname + " ") and "=>" in line:
            return line.split("=>", 1)[1].strip()
    return None


def discover_allocators(build):
    sm_so = os.path.join(build, "libslotmalloc.so")
    sm_static = os.path.join(build, "perf", "pair-smstatic")
    allocs = [Allocator("glibc", expect="libc.so")]
    allocs.append(Allocator("slotmalloc", preload=sm_so, expect="libslotmalloc",
                            note="" if os.path.exists(sm_so) else f"{sm_so} not built"))
    allocs.append(Allocator("slotmalloc-static", static=True,
                            note="" if os.path.exists(sm_static) else f"{sm_static} not built (libslotmalloc.a)"))
    for name, soname, pkg in (("mimalloc", "libmimalloc.so.2", "libmimalloc2.0"),
                              ("jemalloc", "libjemalloc.so.2", "libjemalloc2"),
                              ("tcmalloc", "libtcmalloc_minimal.so.4", "libtcmalloc-minimal4")):
        path = find_library(soname)
        allocs.append(Allocator(name, preload=path, expect="lib" + name,
                                note="" if path else f"{soname} not found (apt-get install {pkg})"))
    return allocs


# ---------------------------------------------------------------- workloads
class Workload:
    """One workload: how to run it, and under which allocators.

    kind: "bench"   our C program using only malloc/free/realloc/pthreads:
                    every allocator, the -smstatic binary for slotmalloc-static;
          "program" a real program from a Debian package: every preload allocator;
          "api"     uses include/slotmalloc.h: slotmalloc (linked with the shared
                    library) and slotmalloc-static;
          "talloc"  the talloc tree: glibc and slotmalloc (preloaded).
    args(ctx) returns (argv, stdin path or None, extra environment).
    """

    def __init__(self, name, kind, desc, args, table="main"):
        self.name, self.kind, self.desc, self.args, self.table = name, kind, desc, args, table

    def allocators(self, allocs):
        if self.kind == "bench":
            return list(allocs)
        if self.kind == "program":
            return [a for a in allocs if not a.static]
        if self.kind == "api":
            return [a for a in allocs if a.name in ("slotmalloc", "slotmalloc-static")]
        if self.kind == "talloc":
            return [a for a in allocs if a.name in ("glibc", "slotmalloc")]
        raise ValueError(self.kind)


def bench(binary, *extra, threads=False):
    def args(ctx):
        argv = [ctx.bin(binary), "-s", str(ctx.scale)] + [str(x) for x in extra]
        if threads:
            argv += ["-t", str(ctx.threads)]
        return argv, None, {}
    return args


def deref_args(mode):
    def args(ctx):
        argv = [ctx.bin("deref"), "-o", mode]
        if ctx.quick:
            argv += ["-s", str(ctx.scale)] if mode == "hot" else ["-z", "100000", "-n", "1"]
        return argv, None, {}
    return args


def python_args(ctx):
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3")
    return [py, os.path.join(HERE, "programs", "pyjob.py"), str(ctx.scale)], None, {"PYTHONMALLOC": "malloc"}


def sqlite_args(ctx):
    rows = max(1000, int(80000 * ctx.scale))
    path = os.path.join(ctx.jobs, f"sqlite-{rows}.sql")
    if not os.path.exists(path):
        with open(os.path.join(HERE, "programs", "sqlite_job.sql")) as f:
            text = f.read().replace("@ROWS@", str(rows))
        with open(path, "w") as f:
            f.write(text)
    return [shutil.which("sqlite3") or "sqlite3", ":memory:"], path, {}


def gcc_args(ctx):
    funcs = max(2, int(40 * ctx.scale))
    path = os.path.join(ctx.jobs, f"gcc-{funcs}.c")
    if not os.path.exists(path):
        out = subprocess.run([sys.executable, os.path.join(HERE, "programs", "gccjob.py"), str(funcs)],
                             capture_output=True, text=True, check=True).stdout
        with open(path, "w") as f:
            f.write(out)
    return [shutil.which("gcc") or "gcc", "-O2", "-pipe", "-c", "-o", "/dev/null", path], None, {}


WORKLOADS = [
    Workload("pair-16", "bench", "hot malloc+free pair of 16 B: the thread-local fast path", bench("pair", "-z", 16)),
    Workload("pair-64", "bench", "hot malloc+free pair of 64 B", bench("pair", "-z", 64)),
    Workload("pair-256", "bench", "hot malloc+free pair of 256 B", bench("pair", "-z", 256)),
    Workload("pair-1024", "bench", "hot malloc+free pair of 1 KiB", bench("pair", "-z", 1024)),
    Workload("pair-8192", "bench", "hot malloc+free pair of 8 KiB (past many allocators' small classes)",
             bench("pair", "-z", 8192)),
    Workload("lifo", "bench", "batches of 10,000 small objects (8-256 B) freed last-in first-out",
             bench("batch", "-o", "lifo")),
    Workload("fifo", "bench", "the same batches freed first-in first-out (no freshly-freed reuse)",
             bench("batch", "-o", "fifo")),
    Workload("churn", "bench", "1 thread: a live set of 50,000 heavy-tailed objects replaced at random",
             bench("churn", "-t", 1)),
    Workload("churn-mt", "bench", "the same churn in N threads at once, each with its own live set",
             bench("churn", threads=True)),
    Workload("prodcons", "bench", "producer/consumer thread pairs: every object freed by the other thread",
             bench("prodcons", threads=True)),
    Workload("server", "bench", "N workers replace random objects and hand 1 in 8 to another worker",
             bench("server", threads=True)),
    Workload("falseshare", "bench", "small objects passed between threads, freed, reallocated and written hard",
             bench("falseshare", threads=True)),
    Workload("threadlife", "bench", "short-lived threads whose objects outlive them, freed by later threads",
             bench("threadlife", threads=True)),
    Workload("realloc", "bench", "1,000 buffers grown by realloc: strings by small appends, vectors by doubling",
             bench("realloc")),
    Workload("large", "bench", "8 blocks of 1-32 MiB replaced at random, written page by page",
             bench("large")),
    Workload("tree-free", "bench", "a tree of 1,000,000 small objects built, then freed one by one",
             bench("tree")),
    Workload("python", "program", "python3 (PYTHONMALLOC=malloc): dicts, sort, JSON round trip, strings",
             python_args),
    Workload("sqlite", "program", "sqlite3 in memory: 80,000-row table, indexes, group by, update, delete",
             sqlite_args),
    Workload("gcc", "program", "gcc -O2 -c of a generated 800-line C file (the driver, cc1 and as)", gcc_args),
    Workload("deref-hot", "api", "sm_deref of 8 handles in a loop against a plain pointer load",
             deref_args("hot"), table="deref"),
    Workload("deref-miss", "api", "sm_deref of 1,000,000 handles in random order against pointer loads",
             deref_args("miss"), table="deref"),
    Workload("tree-arena", "api", "the same tree in 1,111 nested arenas torn down by sm_arena_close of the root",
             bench("tree-arena"), table="tree"),
    Workload("tree-talloc", "talloc", "the same tree in talloc contexts torn down by talloc_free of the root",
             bench("tree-talloc"), table="tree"),
]


class Context:
    def __init__(self, build, scale, threads, quick, jobs, allocator=None):
        self.build, self.scale, self.threads, self.quick, self.jobs = build, scale, threads, quick, jobs
        self.allocator = allocator
        self.meter = os.path.join(build, "perf", "perf-measure")

    def with_allocator(self, allocator):
        return Context(self.build, self.scale, self.threads, self.quick, self.jobs, allocator)

    def bin(self, name):
        if self.allocator is not None and self.allocator.static:
            name += "-smstatic"
        return os.path.join(self.build, "perf", name)


# ---------------------------------------------------------------- running
class Run:
    """The outcome of one process: wall time, peak RSS, CPU times, its result line."""

    def __init__(self):
        self.wall = self.user = self.sys = 0.0
        self.maxrss_kib = 0
        self.status = "ok"
        self.fields = {}
        self.line = ""
        self.stderr = ""

    @property
    def ok(self):
        return self.status == "ok"


def parse_line(text):
    """The last 'workload=...' line of a program's stdout as a dict."""
    fields, found = {}, ""
    for line in text.splitlines():
        if line.startswith("workload="):
            found = line.strip()
    for tok in found.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            fields[k] = v
    return fields, found


def decode_wait_status(status, r):
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        r.status = f"killed by {name}"
    elif os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
        r.status = f"exit status {os.WEXITSTATUS(status)}"


def spawn(argv, env, stdin_path, timeout, tmpdir, meter=None):
    """Runs argv to completion and measures it; never raises for the child's faults.

    With meter (build/perf/perf-measure), the program runs as the meter's child
    and the meter reports its wall time and wait4() rusage: see perf/bench/measure.c
    for why the peak RSS cannot be taken by os.wait4 here. Without it (callgrind),
    this process's own wait4 and clock are used."""
    r = Run()
    out_path = os.path.join(tmpdir, "stdout")
    err_path = os.path.join(tmpdir, "stderr")
    meas_path = os.path.join(tmpdir, "measure")
    wr = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, stdin_path or os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, out_path, wr, 0o600),
        (os.POSIX_SPAWN_OPEN, 2, err_path, wr, 0o600),
    ]
    if meter:
        if os.path.exists(meas_path):
            os.unlink(meas_path)
        argv = [meter, meas_path] + list(argv)
    killed = []

    def kill(pid):
        killed.append(True)
        try:
            os.killpg(pid, signal.SIGKILL)  # the meter and the program share this group
        except OSError:
            pass

    t0 = time.perf_counter()
    try:
        pid = os.posix_spawn(argv[0], argv, env, file_actions=actions, setpgroup=0)
    except OSError as e:
        r.status = f"cannot start {argv[0]}: {e.strerror}"
        return r
    timer = threading.Timer(timeout, kill, (pid,))
    timer.start()
    _, status, ru = os.wait4(pid, 0)
    t1 = time.perf_counter()
    timer.cancel()
    r.wall = t1 - t0
    r.user, r.sys, r.maxrss_kib = ru.ru_utime, ru.ru_stime, ru.ru_maxrss
    with open(out_path, errors="replace") as f:
        stdout = f.read()
    with open(err_path, errors="replace") as f:
        r.stderr = f.read()
    r.fields, r.line = parse_line(stdout)
    if killed:
        r.status = f"timeout after {timeout:.0f} s"
        return r
    decode_wait_status(status, r)
    if meter and r.ok:
        try:
            with open(meas_path) as f:
                m = dict(tok.split("=", 1) for tok in f.read().split())
            r.wall, r.maxrss_kib = float(m["wall"]), int(m["maxrss_kib"])
            r.user, r.sys = float(m["user"]), float(m["sys"])
            decode_wait_status(int(m["wstatus"]), r)
        except (OSError, KeyError, ValueError):
            r.status = "the meter (perf-measure) reported nothing"
    return r


def child_env(extra, preload):
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env.update(extra)
    if preload:
        env["LD_PRELOAD"] = preload
    return env


def run_case(w, alloc, ctx, timeout, tmpdir):
    argv, stdin_path, extra = w.args(ctx.with_allocator(alloc))
    # api workloads link libslotmalloc.so themselves: nothing to preload
    preload = alloc.preload if (alloc.preload and w.kind != "api") else None
    r = spawn(argv, child_env(extra, preload), stdin_path, timeout, tmpdir, ctx.meter)
    r.argv = argv
    r.preload = preload
    if r.ok and w.kind != "program":
        origin = r.fields.get("malloc")
        if origin is None:
            r.status = "no result line"
        elif not alloc.malloc_ok(origin):
            r.status = f"wrong malloc in use: {origin}"
        elif r.fields.get("stale_ok") == "0":
            r.status = "a stale handle dereferenced to an object"
    return r


# ---------------------------------------------------------------- statistics
def summarize(values):
    v = sorted(values)
    n = len(v)
    if n == 0:
        return None
    if n == 1:
        q1 = q3 = v[0]
    else:
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
    return {"n": n, "median": statistics.median(v), "min": v[0], "max": v[-1], "q1": q1, "q3": q3}


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


# ---------------------------------------------------------------- callgrind
def callgrind_ir(argv, env, alloc, timeout, tmpdir):
    cmd = [shutil.which("valgrind"), "--tool=callgrind", "--callgrind-out-file=/dev/null"] + argv
    r = spawn(cmd, env, None, timeout, tmpdir)
    if not r.ok:
        return None, r.status
    origin = r.fields.get("malloc", "")
    if not alloc.malloc_ok(origin):
        return None, f"wrong malloc in use: {origin or 'no result line'}"
    for line in r.stderr.splitlines():
        if "Collected :" in line:
            return int(line.split("Collected :", 1)[1].split()[0]), "ok"
    return None, "no 'Collected' line from callgrind"


def run_callgrind(allocs, ctx, sizes, n, timeout, tmpdir, log):
    """{(allocator, size): instructions per pair or None}, and notes."""
    res, notes = {}, []
    for a in allocs:
        binary = ctx.with_allocator(a).bin("pair")
        for size in sizes:
            irs = []
            for count in (n, 2 * n):
                argv = [binary, "-z", str(size), "-n", str(count)]
                ir, status = callgrind_ir(argv, child_env({}, a.preload), a, timeout, tmpdir)
                if ir is None:
                    notes.append(f"callgrind {a.name} {size} B: {status}")
                    break
                irs.append(ir)
            res[(a.name, size)] = (irs[1] - irs[0]) / n if len(irs) == 2 else None
            val = res[(a.name, size)]
            log(f"callgrind  pair-{size:<5} {a.name:<18} " + (f"{val:.1f} instructions/pair" if val else "FAIL"))
    return res, notes


# ---------------------------------------------------------------- reporting
def fmt_secs(s):
    if s is None:
        return "-"
    if s >= 100:
        return f"{s:.0f}"
    if s >= 10:
        return f"{s:.1f}"
    if s >= 1:
        return f"{s:.2f}"
    return f"{s:.3f}"


def fmt_mib(kib):
    mib = kib / 1024.0
    return f"{mib:.0f}" if mib >= 100 else f"{mib:.1f}"


def fmt_ratio(r):
    return "" if r is None else f"×{r:.2f}"


def fmt_us(s):
    us = s * 1e6
    if us >= 1000:
        return f"{us / 1000:.1f} ms"
    return f"{us:.1f} µs" if us >= 10 else f"{us:.2f} µs"


class Report:
    def __init__(self, args, allocs, workloads, runs, callgrind, notes, duration, baseline):
        self.args, self.allocs, self.workloads = args, allocs, workloads
        self.runs = runs  # {(workload, allocator): [Run]}
        self.callgrind = callgrind
        self.notes = notes
        self.duration = duration
        self.baseline = baseline

    def ok_runs(self, w, a):
        rs = self.runs.get((w, a), [])
        return [r for r in rs if r.ok]

    def failed(self, w, a):
        return any(not r.ok for r in self.runs.get((w, a), []))

    def cell_stat(self, w, a, metric):
        """The statistics of one table cell, or None and what the cell says instead."""
        if (w, a) not in self.runs:
            return None, "n/a"
        s = self.stat(w, a, metric)
        return (s, "") if s is not None else (None, "FAIL")

    def stat(self, w, a, metric):
        rs = self.ok_runs(w, a)
        if not rs or self.failed(w, a):
            return None
        vals = []
        for r in rs:
            if metric == "wall":
                vals.append(r.wall)
            elif metric == "rss":
                vals.append(float(r.maxrss_kib))
            elif metric == "cpu":
                vals.append(r.user + r.sys)
            else:
                try:
                    vals.append(float(r.fields[metric]))
                except (KeyError, ValueError):
                    return None
        return summarize(vals)

    def ratio(self, w, a, metric):
        s, b = self.stat(w, a, metric), self.stat(w, self.baseline, metric)
        if not s or not b or b["median"] <= 0:
            return None
        return s["median"] / b["median"]

    def main_workloads(self):
        return [w for w in self.workloads if w.table == "main"]

    def main_allocs(self):
        names = set()
        for w in self.main_workloads():
            for (wn, an) in self.runs:
                if wn == w.name:
                    names.add(an)
        return [a for a in self.allocs if a.name in names]

    def geo(self, a, metric):
        rs = [self.ratio(w.name, a.name, metric) for w in self.main_workloads()]
        rs = [r for r in rs if r]
        return (geomean(rs), len(rs)) if rs else (None, 0)

    # -- terminal
    def terminal(self):
        out = []
        allocs = self.main_allocs()
        mw = self.main_workloads()
        width = 20
        title = (f"slotmalloc perf: {self.args.reps} reps, {self.args.threads} threads, "
                 f"{'quick' if self.args.quick else 'full'} mode, ratios to {self.baseline} (lower is better)")
        out.append(title)
        for metric, label in (("wall", "WALL TIME: median seconds ×ratio ±half-range"),
                              ("cpu", "CPU TIME (user+sys, all threads): median seconds ×ratio ±half-range"),
                              ("rss", "PEAK RSS: median MiB ×ratio ±half-range")):
            if not mw:
                break
            out.append("")
            out.append(label)
            out.append(f"{'workload':<12}" + "".join(f"{a.name:>{width}}" for a in allocs))
            for w in mw:
                cells = []
                for a in allocs:
                    s, missing = self.cell_stat(w.name, a.name, metric)
                    if s is None:
                        cells.append(missing)
                        continue
                    v = fmt_mib(s["median"]) if metric == "rss" else fmt_secs(s["median"])
                    spread = (s["max"] - s["min"]) / 2 / s["median"] * 100 if s["median"] else 0
                    cells.append(f"{v} {fmt_ratio(self.ratio(w.name, a.name, metric))} ±{spread:.0f}%")
                out.append(f"{w.name:<12}" + "".join(f"{c:>{width}}" for c in cells))
            cells = []
            for a in allocs:
                g, n = self.geo(a, metric)
                cells.append(f"{fmt_ratio(g)} ({n})" if g else "-")
            out.append(f"{'geomean':<12}" + "".join(f"{c:>{width}}" for c in cells))
        if self.callgrind:
            out.append("")
            out.append("INSTRUCTIONS per malloc+free pair (callgrind, (Ir(2N)-Ir(N))/N, loop included)")
            sizes = sorted({s for (_, s) in self.callgrind})
            out.append(f"{'size':<12}" + "".join(f"{a.name:>{width}}" for a in self.allocs
                                                  if any((a.name, s) in self.callgrind for s in sizes)))
            for s in sizes:
                cells = []
                for a in self.allocs:
                    if not any((a.name, x) in self.callgrind for x in sizes):
                        continue
                    v = self.callgrind.get((a.name, s))
                    cells.append(f"{v:.1f}" if v is not None else "FAIL")
                out.append(f"{str(s) + ' B':<12}" + "".join(f"{c:>{width}}" for c in cells))
        for line in self.api_lines(markdown=False):
            out.append(line)
        if self.notes:
            out.append("")
            out += ["note: " + n for n in self.notes]
        return "\n".join(out) + "\n"

    # -- the slotmalloc API tables (terminal and markdown)
    def api_rows(self):
        deref, tree = [], []
        for w in self.workloads:
            if w.table == "deref":
                for a in self.allocs:
                    if (w.name, a.name) not in self.runs:
                        continue
                    h, p = self.stat(w.name, a.name, "ns_handle"), self.stat(w.name, a.name, "ns_pointer")
                    if h is None or p is None:
                        deref.append([w.name, a.name, "FAIL", "FAIL", ""])
                    else:
                        deref.append([w.name, a.name, f"{h['median']:.2f} ({h['min']:.2f}–{h['max']:.2f})",
                                      f"{p['median']:.2f} ({p['min']:.2f}–{p['max']:.2f})",
                                      f"{h['median'] / p['median']:.1f}" if p["median"] > 0 else "-"])
        tree_cases = [("tree-free", "free() one by one"), ("tree-talloc", "talloc_free(root)"),
                      ("tree-arena", "sm_arena_close(root)")]
        ref = self.stat("tree-free", "glibc", "teardown_s")
        for wname, how in tree_cases:
            for a in self.allocs:
                if (wname, a.name) not in self.runs:
                    continue
                st = {m: self.stat(wname, a.name, m) for m in ("seconds", "build_s", "teardown_s", "pause_s", "rss")}
                if any(v is None for v in st.values()):
                    tree.append([how, a.name, "FAIL", "", "", "", "", ""])
                    continue
                pause = st["pause_s"]["median"]
                tree.append([how, a.name, fmt_secs(st["seconds"]["median"]), fmt_secs(st["build_s"]["median"]),
                             fmt_secs(st["teardown_s"]["median"]),
                             f"{fmt_us(pause)} ({fmt_us(st['pause_s']['min'])}–{fmt_us(st['pause_s']['max'])})",
                             f"{ref['median'] / pause:.0f}×" if ref and pause > 0 else "-",
                             fmt_mib(st["rss"]["median"])])
        return deref, tree

    def tree_objects(self):
        for (wn, _), rs in self.runs.items():
            if wn.startswith("tree-"):
                for r in rs:
                    if r.ok and "ops" in r.fields:
                        return f"{int(r.fields['ops']):,}"
        return "small"

    def api_lines(self, markdown):
        deref, tree = self.api_rows()
        out = []
        dh = ["workload", "linked", "ns per sm_deref", "ns per pointer load", "ratio"]
        th = ["teardown", "allocator", "total s", "build s", "teardown s", "pause (min–max)",
              "pause speed-up vs glibc free()", "peak MiB"]
        for title, head, rows in (("HANDLES: sm_deref against a plain pointer load (median, min–max)", dh, deref),
                                  (f"TREE of {self.tree_objects()} objects: teardown by free(), talloc and arenas "
                                   "(pause = the close call alone)", th, tree)):
            if not rows:
                continue
            out.append("")
            if markdown:
                out.append(f"### {title}")
                out.append("")
                out.append("| " + " | ".join(head) + " |")
                out.append("|" + "|".join("---" for _ in head) + "|")
                out += ["| " + " | ".join(r) + " |" for r in rows]
            else:
                out.append(title)
                widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
                out.append("  ".join(h.ljust(wd) for h, wd in zip(head, widths)))
                out += ["  ".join(str(c).ljust(wd) for c, wd in zip(r, widths)) for r in rows]
        return out

    # -- markdown
    def markdown(self, meta):
        allocs = self.main_allocs()
        mw = self.main_workloads()
        out = ["## slotmalloc perf results", ""]
        out += [f"- {k}: {v}" for k, v in meta]
        out.append("")
        out.append(f"Each cell: median of {self.args.reps} runs, ×ratio to {self.baseline} (lower is better), "
                   "and (min–max). Interleaved runs on one machine; see perf/README.md.")
        for metric, title in (("wall", "Wall time, seconds"), ("cpu", "CPU time (user + system, all threads), seconds"),
                              ("rss", "Peak RSS, MiB")):
            if not mw:
                break
            out += ["", f"### {title}", ""]
            out.append("| workload | " + " | ".join(a.name for a in allocs) + " |")
            out.append("|---|" + "|".join("---:" for _ in allocs) + "|")
            for w in mw:
                cells = []
                for a in allocs:
                    s, missing = self.cell_stat(w.name, a.name, metric)
                    if s is None:
                        cells.append("**FAIL**" if missing == "FAIL" else missing)
                        continue
                    f = fmt_mib if metric == "rss" else fmt_secs
                    r = self.ratio(w.name, a.name, metric)
                    rs = f" **{fmt_ratio(r)}**" if r is not None else ""
                    cells.append(f"{f(s['median'])}{rs} ({f(s['min'])}–{f(s['max'])})")
                out.append(f"| {w.name} | " + " | ".join(cells) + " |")
            cells = []
            for a in allocs:
                g, n = self.geo(a, metric)
                cells.append(f"**{fmt_ratio(g)}** ({n} workloads)" if g else "-")
            out.append("| geometric mean | " + " | ".join(cells) + " |")
        if self.callgrind:
            sizes = sorted({s for (_, s) in self.callgrind})
            names = [a.name for a in self.allocs if any((a.name, s) in self.callgrind for s in sizes)]
            out += ["", "### Instructions per malloc+free pair (callgrind: (Ir(2N) − Ir(N)) / N, loop included)", ""]
            out.append("| size | " + " | ".join(names) + " |")
            out.append("|---|" + "|".join("---:" for _ in names) + "|")
            for s in sizes:
                vals = [self.callgrind.get((n, s)) for n in names]
                out.append(f"| {s} B | " + " | ".join(f"{v:.1f}" if v is not None else "FAIL" for v in vals) + " |")
        out += self.api_lines(markdown=True)
        out += ["", "### Workloads", ""]
        out += [f"- `{w.name}`: {w.desc}" for w in self.workloads]
        if self.notes:
            out += ["", "### Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    # -- CSV (summary, long format) and the raw runs
    def write_csv(self, path):
        with open(path, "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["section", "workload", "allocator", "metric", "unit", "n", "median", "min", "q1", "q3",
                         "max", "ratio_to_baseline", "baseline", "failed_runs"])
            for w in self.workloads:
                for a in self.allocs:
                    if (w.name, a.name) not in self.runs:
                        continue
                    failed = sum(1 for r in self.runs[(w.name, a.name)] if not r.ok)
                    metrics = [("wall", "s"), ("rss", "KiB"), ("cpu", "s")]
                    if w.kind != "program":
                        metrics.append(("seconds", "s"))
                    if w.table == "deref":
                        metrics += [("ns_handle", "ns"), ("ns_pointer", "ns")]
                    if w.table == "tree" or w.name == "tree-free":
                        metrics += [("build_s", "s"), ("teardown_s", "s"), ("pause_s", "s")]
                    for m, unit in metrics:
                        s = self.stat(w.name, a.name, m)
                        r = self.ratio(w.name, a.name, m) if w.table == "main" and m in ("wall", "rss", "cpu") else None
                        name = {"rss": "peak_rss", "seconds": "timed_core", "cpu": "cpu_user_sys"}.get(m, m)
                        if s is None:
                            wr.writerow([w.table, w.name, a.name, name, unit, 0, "", "", "", "", "", "", self.baseline,
                                         failed])
                        else:
                            wr.writerow([w.table, w.name, a.name, name, unit, s["n"]] +
                                        [f"{s[k]:.9g}" for k in ("median", "min", "q1", "q3", "max")] +
                                        [f"{r:.4f}" if r is not None else "", self.baseline, failed])
            for (an, size), v in sorted(self.callgrind.items()):
                wr.writerow(["callgrind", f"pair-{size}", an, "instructions_per_pair", "Ir", 1,
                             f"{v:.2f}" if v is not None else "", "", "", "", "", "", "", 0 if v is not None else 1])

    def write_runs_csv(self, path, order):
        with open(path, "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["seq", "rep", "workload", "allocator", "status", "wall_s", "peak_rss_kib", "user_s",
                         "sys_s", "result_line", "command"])
            for seq, (rep, wn, an, r) in enumerate(order, 1):
                cmd = (f"LD_PRELOAD={r.preload} " if r.preload else "") + " ".join(r.argv)
                wr.writerow([seq, rep, wn, an, r.status, f"{r.wall:.6f}", r.maxrss_kib, f"{r.user:.6f}",
                             f"{r.sys:.6f}", r.line, cmd])

    # -- chart
    def chart(self, png, tmpdir):
        """Two panels (time, peak RSS); per workload one bar per allocator,
        drawn from the baseline's line at 1 up (worse) or down (better), log scale."""
        gp = shutil.which("gnuplot")
        if not gp:
            return "gnuplot not found (apt-get install gnuplot-nox): no chart"
        allocs = [a for a in self.main_allocs() if a.name != self.baseline]
        mw = self.main_workloads()
        if not allocs or not mw:
            return "nothing to chart"
        bw = 0.8 / len(allocs)
        dat = os.path.join(tmpdir, "chart.dat")
        with open(dat, "w") as f:
            for metric in (self.args.time, "rss"):
                for j, a in enumerate(allocs):
                    f.write(f"# {metric} {a.name}\n")
                    for i, w in enumerate(mw):
                        r = self.ratio(w.name, a.name, metric)
                        if r:
                            f.write(f"{i + (j - (len(allocs) - 1) / 2) * bw:.4f} {r:.4f}\n")
                    g, _ = self.geo(a, metric)
                    if g:
                        f.write(f"{len(mw) + 0.5 + (j - (len(allocs) - 1) / 2) * bw:.4f} {g:.4f}\n")
                    f.write("\n\n")
        colors = {"slotmalloc": "#d62728", "slotmalloc-static": "#ff9896", "glibc": "#7f7f7f",
                  "mimalloc": "#2ca02c", "jemalloc": "#1f77b4", "tcmalloc": "#9467bd"}
        quick = " (QUICK MODE: a check of the harness, not a result)" if self.args.quick else ""
        xtics = ", ".join([f'"{w.name}" {i}' for i, w in enumerate(mw)] + [f'"GEOMEAN" {len(mw) + 0.5}'])
        lines = [
            f"set terminal pngcairo size {max(1400, 13 * (len(mw) + 1) * (len(allocs) + 1) + 300)},1000 font 'sans,10'",
            f"set output '{png}'",
            "set style fill solid 0.9 border rgb '#333333'",
            "set logscale y 2",
            "set grid ytics",
            "set key outside right top vertical",
            f"set xtics ({xtics}) rotate by -35 nomirror",
            f"set xrange [-0.6:{len(mw) + 1.1}]",
            f"set arrow 2 from {len(mw) - 0.25}, graph 0 to {len(mw) - 0.25}, graph 1 nohead dt 2 lc rgb '#888888'",
            "set multiplot layout 2,1 title "
            f"'slotmalloc perf: each allocator relative to {self.baseline} (= 1, the black line): "
            f"bars down are better, up are worse. Medians of {self.args.reps} interleaved runs each, "
            f"{self.args.threads} threads{quick}' font 'sans,12'",
        ]
        idx = 0
        tname = "wall time" if self.args.time == "wall" else "CPU time (user+sys)"
        for metric, title in ((self.args.time, tname), ("rss", "peak RSS")):
            lines.append(f"set ylabel '{title} / {self.baseline} (log scale)'")
            lines.append(f"set title '{title}'")
            lines.append(f"set yrange [{self.chart_range(metric)}]")
            plot = []
            for a in allocs:
                c = colors.get(a.name, "#444444")
                plot.append(f"'{dat}' index {idx} using 1:(1):($1-{bw / 2:.4f}):($1+{bw / 2:.4f}):(1):2 "
                            f"with boxxyerror title '{a.name}' lc rgb '{c}'")
                idx += 1
            plot.append(f"1 with lines lw 2 lc rgb 'black' title '{self.baseline} (= 1)'")
            lines.append("plot " + ", ".join(plot))
        lines.append("unset multiplot")
        script = os.path.join(tmpdir, "chart.gp")
        with open(script, "w") as f:
            f.write("\n".join(lines) + "\n")
        p = subprocess.run([gp, script], capture_output=True, text=True)
        if p.returncode != 0:
            return "gnuplot failed: " + p.stderr.strip()[-300:]
        return None

    def chart_range(self, metric):
        rs = [self.ratio(w.name, a.name, metric) for w in self.main_workloads() for a in self.allocs]
        rs += [self.geo(a, metric)[0] for a in self.allocs]
        rs = [r for r in rs if r]
        lo = min(rs + [1.0]) / 1.3
        hi = max(rs + [1.0]) * 1.3
        return f"{lo:.3f}:{hi:.3f}"


# ---------------------------------------------------------------- meta data
def machine_meta(args, duration):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = []
    for pkg in ("libc6", "libmimalloc2.0", "libjemalloc2", "libtcmalloc-minimal4", "libtalloc2", "python3",
                "sqlite3", "gcc-12", "valgrind"):
        try:
            v = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True)
            if v.returncode == 0 and v.stdout:
                versions.append(f"{pkg} {v.stdout}")
        except OSError:
            break
    rev = "unknown"
    try:
        g = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        if g.returncode == 0:
            rev = g.stdout.strip()
            d = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True)
            if d.stdout.strip():
                rev += " (with uncommitted changes)"
    except OSError:
        pass
    env = [f"{k}={v}" for k, v in sorted(os.environ.items())
           if k.startswith(("MALLOC_", "MIMALLOC_", "SLOTMALLOC_", "TCMALLOC_", "JE_", "GLIBC_TUNABLES"))
           and k != "LD_PRELOAD"]
    topology = "unknown (perf/bench/topology.c needs hwloc)"
    topo_bin = os.path.join(args.build_dir, "perf", "topology")
    if os.path.exists(topo_bin):
        try:
            t = subprocess.run([topo_bin], capture_output=True, text=True, timeout=30)
            if t.returncode == 0 and t.stdout.strip():
                topology = t.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    return [
        ("date", datetime.datetime.now().strftime("%Y-%m-%d %H:%M")),
        ("machine", f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}"),
        ("topology (hwloc)", topology),
        ("commit", rev),
        ("mode", f"{'quick' if args.quick else 'full'}, {args.reps} reps, {args.threads} threads, "
                 f"run took {duration / 60:.1f} min"),
        ("packages", ", ".join(versions) if versions else "unknown"),
        ("allocator environment", " ".join(env) if env else "none (defaults)"),
    ]


# ---------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(description="Compare slotmalloc with glibc, mimalloc, jemalloc and tcmalloc.")
    p.add_argument("--build-dir", default=os.path.join(ROOT, "build"), help="the CMake build folder (default build/)")
    p.add_argument("--workloads", help="comma-separated workload names (default: all; --list shows them)")
    p.add_argument("--allocators", help="comma-separated allocator names (default: all found)")
    p.add_argument("--reps", type=int, help="repetitions of every case (default 5, quick 1)")
    p.add_argument("--threads", type=int, default=max(2, len(os.sched_getaffinity(0))),
                   help="threads of the multi-threaded workloads (default: CPUs, at least 2)")
    p.add_argument("--quick", action="store_true", help="small sizes and 1 rep: seconds, to check the harness works")
    p.add_argument("--scale", type=float, help="work scale of every workload (default 1, quick 0.05)")
    p.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    p.add_argument("--time", choices=("wall", "cpu"), default="wall",
                   help="the time the chart shows: wall (default) or cpu (user+sys, robust on a busy machine)")
    p.add_argument("--baseline", default="mimalloc", help="the allocator ratios refer to (default mimalloc)")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="output folder (default perf/results)")
    p.add_argument("--timeout", type=float, default=120, help="seconds before one run is killed (default 120)")
    p.add_argument("--allow-failures", action="store_true", help="exit 0 even if some runs failed")
    p.add_argument("--list", action="store_true", help="list workloads and allocators, then exit")
    a = p.parse_args(argv)
    if a.reps is None:
        a.reps = 1 if a.quick else 5
    if a.scale is None:
        a.scale = 0.05 if a.quick else 1.0
    return a


def main(argv):
    args = parse_args(argv)
    build = os.path.abspath(args.build_dir)
    t_start = time.time()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    allocs_all = discover_allocators(build)
    if args.list:
        print("workloads:")
        for w in WORKLOADS:
            print(f"  {w.name:<12} {w.kind:<8} {w.desc}")
        print("allocators:")
        for a in allocs_all:
            print(f"  {a.name:<18} {'found' if a.available else 'missing: ' + a.note}")
        return 0

    notes = []
    known = {a.name for a in allocs_all}
    if args.allocators:
        want = [x.strip() for x in args.allocators.split(",") if x.strip()]
        bad = [x for x in want if x not in known]
        if bad:
            log(f"unknown allocator(s): {', '.join(bad)}; known: {', '.join(sorted(known))}")
            return 2
        allocs_all = [a for a in allocs_all if a.name in want]
    for a in allocs_all:
        if not a.available:
            notes.append(f"{a.name} skipped: {a.note}")
            log(f"note: {a.name} skipped: {a.note}")
    allocs = [a for a in allocs_all if a.available]
    if not allocs:
        log("no allocator to run")
        return 2
    baseline = args.baseline
    if baseline not in {a.name for a in allocs}:
        fallback = allocs[0].name
        notes.append(f"ratios are to {fallback}: the baseline {baseline} is not in this run")
        baseline = fallback

    workloads = WORKLOADS
    if args.workloads:
        want = [x.strip() for x in args.workloads.split(",") if x.strip()]
        names = {w.name for w in WORKLOADS}
        bad = [x for x in want if x not in names]
        if bad:
            log(f"unknown workload(s): {', '.join(bad)}; --list shows them")
            return 2
        workloads = [w for w in WORKLOADS if w.name in want]

    # the binaries each workload needs must exist; a missing one skips that case
    jobs = os.path.join(build, "perf", "jobs")
    os.makedirs(jobs, exist_ok=True)
    ctx = Context(build, args.scale, args.threads, args.quick, jobs)
    if not os.path.exists(ctx.meter):
        log(f"{ctx.meter} not found: build the project first (perf/run.sh does)")
        return 2
    cases = {}  # workload name -> [Allocator]
    for w in workloads:
        usable = []
        for a in w.allocators(allocs):
            try:
                argv0 = w.args(ctx.with_allocator(a))[0][0]
            except (OSError, subprocess.CalledProcessError) as e:
                notes.append(f"{w.name} skipped: cannot prepare its input ({e})")
                log("note: " + notes[-1])
                break
            if not argv0 or not os.path.exists(argv0):
                notes.append(f"{w.name} under {a.name} skipped: {argv0 or 'its program'} not found")
                log("note: " + notes[-1])
                continue
            usable.append(a)
        if usable:
            cases[w.name] = usable
    workloads = [w for w in workloads if w.name in cases]
    if not workloads:
        log("no workload to run (is the build folder right? " + build + ")")
        return 2

    total = sum(len(cases[w.name]) for w in workloads) * args.reps
    log(f"perf: {len(workloads)} workloads × {len({a.name for w in workloads for a in cases[w.name]})} allocators "
        f"× {args.reps} reps = {total} runs ({'quick' if args.quick else 'full'} mode, {args.threads} threads)")
    runs = {}
    order = []
    failures = []
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="slotmalloc-perf-") as tmpdir:
        # one untimed run of every workload: page cache, CPU frequency, lazy binding
        log("warm-up: one untimed run of each workload")
        for w in workloads:
            run_case(w, cases[w.name][0], ctx, args.timeout, tmpdir)
        seq = 0
        loads = []  # the 1-minute load average before each run
        for rep in range(args.reps):
            for w in workloads:
                al = cases[w.name]
                k = rep % len(al)
                for a in al[k:] + al[:k]:  # rotated: a different allocator goes first each rep
                    seq += 1
                    loads.append(os.getloadavg()[0])
                    r = run_case(w, a, ctx, args.timeout, tmpdir)
                    runs.setdefault((w.name, a.name), []).append(r)
                    order.append((rep + 1, w.name, a.name, r))
                    el = time.time() - t_start
                    head = f"[{seq:>4}/{total} {int(el // 60)}:{int(el % 60):02d}] rep {rep + 1}/{args.reps} "
                    head += f"{w.name:<12} {a.name:<18}"
                    if r.ok:
                        log(head + f"{r.wall:8.3f} s {r.maxrss_kib / 1024:8.1f} MiB")
                    else:
                        log(head + f"FAIL: {r.status}")
                        failures.append((rep + 1, w.name, a.name, r))
        callgrind, cg_failed = {}, []
        if not args.no_callgrind:
            if not shutil.which("valgrind"):
                notes.append("valgrind not found (apt-get install valgrind): no instruction counts")
            else:
                cg_allocs = [a for a in allocs if os.path.exists(ctx.with_allocator(a).bin("pair"))]
                sizes = [16, 256]
                n = 20000 if args.quick else 200000
                callgrind, cg_notes = run_callgrind(cg_allocs, ctx, sizes, n, max(args.timeout, 300), tmpdir, log)
                notes += cg_notes
                cg_failed = [k for k, v in callgrind.items() if v is None]
        duration = time.time() - t_start
        cpus = len(os.sched_getaffinity(0))
        load = (statistics.mean(loads), max(loads)) if loads else (0.0, 0.0)
        if load[0] > cpus + 0.5:
            notes.append(f"the machine was busy: load average {load[0]:.1f} on average (up to {load[1]:.1f}) "
                         f"on {cpus} CPUs, of which this harness makes at most {args.threads}. Wall times include "
                         "waiting for a CPU; the CPU times are the more reliable ones in this run (--time cpu "
                         "charts them)")
        rep = Report(args, allocs, workloads, runs, callgrind, notes, duration, baseline)
        if failures:
            flog = os.path.join(args.out, "failures.log")
            with open(flog, "w") as f:
                for (rp, wn, an, r) in failures:
                    cmd = (f"LD_PRELOAD={r.preload} " if r.preload else "") + " ".join(r.argv)
                    f.write(f"== rep {rp} {wn} under {an}: {r.status}\n$ {cmd}\n{r.stderr[-4000:]}\n")
            rep.notes.append(f"{len(failures)} run(s) failed: see {os.path.relpath(flog)}")
        png = os.path.join(args.out, "latest.png")
        err = rep.chart(png, tmpdir)
        if err:
            rep.notes.append(err)
        meta = machine_meta(args, duration)
        meta.append(("load average during the run", f"{load[0]:.1f} mean, {load[1]:.1f} max, on {cpus} CPUs"))
        text = rep.terminal()
        with open(os.path.join(args.out, "latest.txt"), "w") as f:
            f.write(text)
        with open(os.path.join(args.out, "latest.md"), "w") as f:
            f.write(rep.markdown(meta))
        rep.write_csv(os.path.join(args.out, "latest.csv"))
        rep.write_runs_csv(os.path.join(args.out, "latest-runs.csv"), order)
    sys.stdout.write("\n" + text)
    outs = ["latest.csv", "latest-runs.csv", "latest.md", "latest.txt"] + ([] if err else ["latest.png"])
    print(f"\nwritten: {', '.join(os.path.join(os.path.relpath(args.out), o) for o in outs)} "
          f"({duration / 60:.1f} min)")
    if (failures or cg_failed) and not args.allow_failures:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
