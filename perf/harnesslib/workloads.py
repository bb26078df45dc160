"""The workloads: one table, each row saying how to run it and under which allocators."""
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

from .allocators import find_library

PERF = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAMS = os.path.join(PERF, "programs")


@dataclass
class Context:
    """What the argument builders need: the build folder, the work scale, the allocator."""

    build: str
    scale: float
    threads: int
    quick: bool
    jobs: str  # where generated inputs (SQL, C files) are kept
    allocator: object = None

    @property
    def meter(self):
        return os.path.join(self.build, "perf", "perf-measure")

    def with_allocator(self, allocator):
        return Context(self.build, self.scale, self.threads, self.quick, self.jobs, allocator)

    def bin(self, name):
        """The path of a workload binary: its -smstatic twin under a static allocator."""
        if self.allocator is not None and self.allocator.static:
            name += "-smstatic"
        return os.path.join(self.build, "perf", name)


@dataclass
class Workload:
    """One workload: how to run it, and under which allocators.

    kind: "bench"   our C program using only malloc/free/realloc/pthreads:
                    every allocator, the -smstatic binary for slotmalloc-static;
          "program" a real program from a Debian package: every preload allocator;
          "api"     uses include/slotmalloc.h: slotmalloc (linked with the shared
                    library) and slotmalloc-static;
          "talloc"  the talloc tree: glibc and slotmalloc (preloaded);
          "driver"  a driver program (run under the system allocator) that starts a server with the
                    allocator preloaded into the server alone (PERF_SERVER_PRELOAD; for glibc, libc.so.6
                    itself) and reports which malloc the server got: every preload allocator.
    args(ctx) returns (argv, stdin path or None, extra environment).
    table: the report table it belongs to: "main", "deref", "tree" or "redis".
    """

    name: str
    kind: str
    desc: str
    args: Callable
    table: str = "main"
    extra_metrics: tuple = ()  # result-line fields reported in the CSV (KiB), e.g. the idle RSS
    curve: str = ""  # its RSS curve ("sample" lines) is charted against "ms" or "ops"
    curve_label: str = ""  # the x axis of that chart, if not the default of its kind

    def allocators(self, allocs):
        """The allocators of `allocs` this workload runs under."""
        if self.kind == "bench":
            return list(allocs)
        if self.kind in ("program", "driver"):
            return [a for a in allocs if not a.static]
        if self.kind == "api":
            return [a for a in allocs if a.name in ("slotmalloc", "slotmalloc-static")]
        if self.kind == "talloc":
            return [a for a in allocs if a.name in ("glibc", "slotmalloc")]
        raise ValueError(self.kind)

    def preloads(self):
        """Whether the allocator is preloaded (api workloads link libslotmalloc.so themselves)."""
        return self.kind not in ("api", "driver")

    def reports_malloc(self):
        """Whether the program prints the malloc= result line (the real programs do not)."""
        return self.kind != "program"

    def metrics(self):
        """The (metric, unit) pairs measured for this workload: see stats.metric_value."""
        metrics = [("wall", "s"), ("rss", "KiB"), ("cpu", "s"), ("user", "s"), ("sys", "s"), ("minflt", "faults")]
        if self.reports_malloc():
            metrics.append(("seconds", "s"))
        if self.table == "deref":
            metrics += [("ns_handle", "ns"), ("ns_pointer", "ns")]
        if self.table == "tree" or self.name == "tree-free":
            metrics += [("build_s", "s"), ("teardown_s", "s"), ("pause_s", "s")]
        metrics += [(m, "KiB") for m in self.extra_metrics]
        return metrics


# ---------------------------------------------------------------- argument builders
def bench(binary, *extra, threads=False):
    """One of our C programs (perf/bench) at the run's scale, with -t threads if `threads`."""
    def args(ctx):
        argv = [ctx.bin(binary), "-s", str(ctx.scale)] + [str(x) for x in extra]
        if threads:
            argv += ["-t", str(ctx.threads)]
        return argv, None, {}
    return args


def deref_args(mode):
    """perf/bench/deref.c in mode hot or miss; smaller in quick mode."""
    def args(ctx):
        argv = [ctx.bin("deref"), "-o", mode]
        if ctx.quick:
            argv += ["-s", str(ctx.scale)] if mode == "hot" else ["-z", "100000", "-n", "1"]
        return argv, None, {}
    return args


def python_args(ctx):
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3")
    return [py, os.path.join(PROGRAMS, "pyjob.py"), str(ctx.scale)], None, {"PYTHONMALLOC": "malloc"}


def sqlite_args(ctx):
    rows = max(1000, int(80000 * ctx.scale))
    path = os.path.join(ctx.jobs, f"sqlite-{rows}.sql")
    if not os.path.exists(path):
        with open(os.path.join(PROGRAMS, "sqlite_job.sql")) as f:
            text = f.read().replace("@ROWS@", str(rows))
        with open(path, "w") as f:
            f.write(text)
    return [shutil.which("sqlite3") or "sqlite3", ":memory:"], path, {}


def gcc_args(ctx):
    funcs = max(2, int(40 * ctx.scale))
    path = os.path.join(ctx.jobs, f"gcc-{funcs}.c")
    if not os.path.exists(path):
        out = subprocess.run([sys.executable, os.path.join(PROGRAMS, "gccjob.py"), str(funcs)],
                             capture_output=True, text=True, check=True).stdout
        with open(path, "w") as f:
            f.write(out)
    return [shutil.which("gcc") or "gcc", "-O2", "-pipe", "-c", "-o", "/dev/null", path], None, {}


def idle_args(ctx):
    """perf/bench/idle.c: a burst of 200 MB times the scale, then 3 s idle (1.1 s in quick mode)."""
    return [ctx.bin("idle"), "-s", str(ctx.scale), "-o", "1100" if ctx.quick else "3000"], None, {}


def stress_args(ctx):
    """perf/bench/stress.c as in the issue (8 threads, load 200), 10 rounds times the scale (the program's own
    default, 50, takes 20-40 s on 2 CPUs); quick mode: 1 round at load 50."""
    rounds = max(1, round(10 * ctx.scale))
    load = 50 if ctx.quick else 200
    return [ctx.bin("stress"), "-t", "8", "-z", str(load), "-n", str(rounds)], None, {}


LIBC = "libc.so.6"


def redis_args(mix, load_keys, flush="sync"):
    """programs/redisjob.py: redis-server under the allocator, load_keys SETs (times the scale) of values of the
    mix ("mixed" or "small"), FLUSHALL (flush: "sync" or "async"), 20,000 SETs, 1 s idle, MEMORY PURGE."""
    def args(ctx):
        if not shutil.which("redis-server"):
            return ["redis-server (apt-get install redis-server)"], None, {}
        preload = ctx.allocator.preload if ctx.allocator is not None and ctx.allocator.preload else find_library(LIBC)
        keys = max(2000, int(load_keys * ctx.scale))
        sets, idle_ms = (2000, 200) if ctx.quick else (20000, 1000)
        py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3")
        return ([py, os.path.join(PROGRAMS, "redisjob.py"), str(keys), str(sets), str(idle_ms), mix, flush], None,
                {"PERF_SERVER_PRELOAD": preload or ""})
    return args


GIT_OBJECTS = 30000  # of the generated repository at scale 1
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


def git_args(ctx):
    """git repack -adf of a generated repository (programs/gitrepo.py), made once and kept in the jobs folder."""
    git = shutil.which("git")
    if not git:
        return [None], None, {}
    objects = max(2000, int(GIT_OBJECTS * ctx.scale))
    repo = os.path.join(ctx.jobs, f"git-{objects}")
    ready = os.path.join(repo, "perf-ready")
    if not os.path.exists(ready):
        subprocess.run([sys.executable, os.path.join(PROGRAMS, "gitrepo.py"), repo, str(objects)],
                       check=True, capture_output=True)
        open(ready, "w").close()
    return [git, "-C", repo, "-c", f"pack.threads={ctx.threads}", "repack", "-adfq"], None, dict(GIT_ENV)


def command_args(command):
    """A --program command line: split into words as a shell would (no shell runs), argv[0] looked up in PATH."""
    words = shlex.split(command)

    def args(ctx):
        argv0 = words[0] if os.sep in words[0] else (shutil.which(words[0]) or words[0])
        return [argv0] + words[1:], None, {}
    return args


def program_workload(spec):
    """The Workload of a --program option: 'name=command'."""
    name, sep, command = spec.partition("=")
    name, command = name.strip(), command.strip()
    if not sep or not name or not command:
        raise ValueError(f"--program wants name=\"command\", not {spec!r}")
    return Workload(name, "program", f"`{command}` (--program)", command_args(command))


# ---------------------------------------------------------------- the table
# The redis workload's RSS after each step (result-line fields, KiB), and their names in the reports.
REDIS_STEPS = ("rss_load_kib", "rss_flush_kib", "rss_sets_kib", "rss_idle_kib", "rss_purge_kib")
REDIS_STEP_NAMES = ("after the load", "after FLUSHALL", "after 20,000 SETs", "after 1 s idle", "after MEMORY PURGE")
REDIS_CURVE = "seconds since the load began (load, FLUSHALL, 20,000 SETs, idle, MEMORY PURGE)"

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
    Workload("prodcons", "bench", "producer/consumer thread pairs (xmalloc-test): every free is remote",
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
    Workload("cfrac", "bench", "millions of short-lived bignums (8-200 B) in arithmetic chains, 2 live at exit",
             bench("cfrac")),
    Workload("alloctest-1", "bench", "random sizes (8 B-2 KiB, some to 256 KiB) in a rolling window, 1 thread",
             bench("alloctest", "-t", 1)),
    Workload("alloctest-2", "bench", "the same in 2 threads, each with its own window", bench("alloctest", "-t", 2)),
    Workload("larson", "bench", "threads replace random slots of an array, then hand it to a new thread",
             bench("larson", threads=True)),
    Workload("replace", "bench", "a live set of 40,000 objects of 128 B nearly filling their blocks, replaced at random "
             "10M times (a cache of fixed-size records)", bench("replace")),
    Workload("longrun", "bench", "a live set of 20,000 (8-264 B, 1 in 32 1-9 KiB) replaced 20M times, the mix shifting",
             bench("longrun"), curve="ops"),
    Workload("idle", "bench", "a 200 MB burst, 99% freed, then 3 s idle with a few fast-path calls: RSS every 50 ms",
             idle_args, extra_metrics=("rss_idle_1s_kib", "rss_burst_kib", "rss_idle_end_kib"), curve="ms"),
    Workload("stress", "bench", "mimalloc's test-stress pattern: 8 threads, random sizes and lifetimes, objects "
             "traded between threads, threads retired and restarted in rounds (10 at scale 1)", stress_args),
    Workload("git", "program", "git repack -adf of a generated 30,000-object repository", git_args),
    Workload("python", "program", "python3 (PYTHONMALLOC=malloc): dicts, sort, JSON round trip, strings",
             python_args),
    Workload("sqlite", "program", "sqlite3 in memory: 80,000-row table, indexes, group by, update, delete",
             sqlite_args),
    Workload("gcc", "program", "gcc -O2 -c of a generated 800-line C file (the driver, cc1 and as)", gcc_args),
    Workload("redis", "driver", "redis-server: 100,000 SETs of mixed sizes (16 B-8 KiB), FLUSHALL, 20,000 SETs, "
             "1 s idle, MEMORY PURGE: the server's RSS after each", redis_args("mixed", 100000), table="redis",
             extra_metrics=REDIS_STEPS + ("used_kib",), curve="ms", curve_label=REDIS_CURVE),
    Workload("redis-small", "driver", "the same with 300,000 SETs of small values (3-64 B, as redis-benchmark's "
             "3 B) in the load and the 20,000 SETs", redis_args("small", 300000), table="redis",
             extra_metrics=REDIS_STEPS + ("used_kib",), curve="ms", curve_label=REDIS_CURVE),
    Workload("redis-async", "driver", "redis with FLUSHALL ASYNC: the values freed by redis's lazyfree thread, "
             "not the one that allocated them", redis_args("mixed", 100000, "async"), table="redis",
             extra_metrics=REDIS_STEPS + ("used_kib",), curve="ms", curve_label=REDIS_CURVE),
    Workload("deref-hot", "api", "sm_deref of 8 handles in a loop against a plain pointer load",
             deref_args("hot"), table="deref"),
    Workload("deref-miss", "api", "sm_deref of 1,000,000 handles in random order against pointer loads",
             deref_args("miss"), table="deref"),
    Workload("tree-arena", "api", "the same tree in 1,111 nested arenas torn down by sm_arena_close of the root",
             bench("tree-arena"), table="tree"),
    Workload("tree-talloc", "talloc", "the same tree in talloc contexts torn down by talloc_free of the root",
             bench("tree-talloc"), table="tree"),
]

# The rows of the tree table, in this order: workload, and the call that tears the tree down.
TREE_TEARDOWNS = [("tree-free", "free() one by one"), ("tree-talloc", "talloc_free(root)"),
                  ("tree-arena", "sm_arena_close(root)")]
