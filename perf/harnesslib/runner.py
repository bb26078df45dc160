"""Running and measuring: one process under the meter, one case, and the interleaved schedule."""
import os
import signal
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Run:
    """The outcome of one process: wall time, peak RSS, CPU times, page faults, its result line."""

    wall: float = 0.0
    user: float = 0.0
    sys: float = 0.0  # system (kernel) time
    maxrss_kib: int = 0
    minflt: int = 0  # minor page faults: a page mapped on first touch (or touch after it was given back)
    status: str = "ok"
    fields: dict = field(default_factory=dict)
    line: str = ""  # the workload=... result line
    stderr: str = ""
    argv: list = field(default_factory=list)
    preload: str | None = None
    samples: list = field(default_factory=list)  # the RSS curve: [(ops, ms, rss KiB)] from "sample" lines

    @property
    def ok(self):
        return self.status == "ok"

    def command(self):
        """The command line to repeat this run by hand."""
        return (f"LD_PRELOAD={self.preload} " if self.preload else "") + " ".join(self.argv)


@dataclass
class Measurements:
    """Every timed run: by case, in the order they ran, the failed ones, the load before each."""

    runs: dict = field(default_factory=dict)  # {(workload, allocator): [Run]}
    order: list = field(default_factory=list)  # [(rep, workload, allocator, Run)]
    failures: list = field(default_factory=list)  # the same, failed runs only
    loads: list = field(default_factory=list)  # the 1-minute load average before each run


# ---------------------------------------------------------------- one process
def parse_line(text):
    """The last 'workload=...' line of a program's stdout as a dict, and the line."""
    fields, found = {}, ""
    for line in text.splitlines():
        if line.startswith("workload="):
            found = line.strip()
    for tok in found.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            fields[k] = v
    return fields, found


def parse_samples(text):
    """The 'sample ops=N ms=T rss_kib=K' lines of a program's stdout as [(ops, ms, rss KiB)]."""
    out = []
    for line in text.splitlines():
        if line.startswith("sample "):
            try:
                f = dict(tok.split("=", 1) for tok in line.split()[1:])
                out.append((int(f["ops"]), float(f["ms"]), int(f["rss_kib"])))
            except (KeyError, ValueError):
                pass
    return out


def decode_wait_status(status, r):
    """Sets r.status from a wait() status: killed by a signal, or a non-zero exit."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        r.status = f"killed by {name}"
    elif os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
        r.status = f"exit status {os.WEXITSTATUS(status)}"


def read_text(path):
    with open(path, errors="replace") as f:
        return f.read()


def read_meter(meas_path, r):
    """Takes wall time, rusage and wait status from the meter's report file."""
    try:
        with open(meas_path) as f:
            m = dict(tok.split("=", 1) for tok in f.read().split())
        r.wall, r.maxrss_kib = float(m["wall"]), int(m["maxrss_kib"])
        r.user, r.sys = float(m["user"]), float(m["sys"])
        r.minflt = int(m.get("minflt", 0))
        decode_wait_status(int(m["wstatus"]), r)
    except (OSError, KeyError, ValueError):
        r.status = "the meter (perf-measure) reported nothing"


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
    r.user, r.sys, r.maxrss_kib, r.minflt = ru.ru_utime, ru.ru_stime, ru.ru_maxrss, ru.ru_minflt
    r.stderr = read_text(err_path)
    stdout = read_text(out_path)
    r.fields, r.line = parse_line(stdout)
    r.samples = parse_samples(stdout)
    if killed:
        r.status = f"timeout after {timeout:.0f} s"
        return r
    decode_wait_status(status, r)
    if meter and r.ok:
        read_meter(meas_path, r)
    return r


def child_env(extra, preload):
    """This process's environment without LD_PRELOAD, plus `extra` and the allocator's preload."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env.update(extra)
    if preload:
        env["LD_PRELOAD"] = preload
    return env


# ---------------------------------------------------------------- one case
def check_result(r, alloc):
    """Fails a run whose result line is missing, names another malloc, or reports a stale handle."""
    origin = r.fields.get("malloc")
    if origin is None:
        r.status = "no result line"
    elif not alloc.malloc_ok(origin):
        r.status = f"wrong malloc in use: {origin}"
    elif r.fields.get("stale_ok") == "0":
        r.status = "a stale handle dereferenced to an object"


def run_case(w, alloc, ctx, timeout, tmpdir):
    """Runs workload w once under allocator alloc, measured by the meter."""
    argv, stdin_path, extra = w.args(ctx.with_allocator(alloc))
    preload = alloc.preload if (alloc.preload and w.preloads()) else None
    r = spawn(argv, child_env(extra, preload), stdin_path, timeout, tmpdir, ctx.meter)
    r.argv = argv
    r.preload = preload
    if r.ok and w.reports_malloc():
        check_result(r, alloc)
    return r


# ---------------------------------------------------------------- the schedule
def rotated(allocs, rep):
    """The allocators of one case in the order of repetition rep: a different one first each time."""
    k = rep % len(allocs)
    return allocs[k:] + allocs[:k]


def progress_line(seq, total, started, rep, reps, w, a, r):
    """The stderr line of one run."""
    el = time.time() - started
    head = f"[{seq:>4}/{total} {int(el // 60)}:{int(el % 60):02d}] rep {rep + 1}/{reps} "
    head += f"{w.name:<12} {a.name:<18}"
    if r.ok:
        return head + f"{r.wall:8.3f} s {r.maxrss_kib / 1024:8.1f} MiB"
    return head + f"FAIL: {r.status}"


def warm_up(workloads, cases, ctx, timeout, tmpdir):
    """One untimed run of every workload: page cache, CPU frequency, lazy binding."""
    for w in workloads:
        run_case(w, cases[w.name][0], ctx, timeout, tmpdir)


def run_interleaved(workloads, cases, ctx, reps, timeout, tmpdir, started, log):
    """For each repetition, for each workload, every allocator once (rotated); returns Measurements."""
    m = Measurements()
    total = count_runs(workloads, cases, reps)
    for rep in range(reps):
        for w in workloads:
            for a in rotated(cases[w.name], rep):
                m.loads.append(os.getloadavg()[0])
                r = run_case(w, a, ctx, timeout, tmpdir)
                m.runs.setdefault((w.name, a.name), []).append(r)
                m.order.append((rep + 1, w.name, a.name, r))
                if not r.ok:
                    m.failures.append((rep + 1, w.name, a.name, r))
                log(progress_line(len(m.order), total, started, rep, reps, w, a, r))
    return m


def count_runs(workloads, cases, reps):
    return sum(len(cases[w.name]) for w in workloads) * reps
