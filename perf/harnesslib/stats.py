"""Statistics of the runs: medians, spread, ratios to the baseline, geometric means."""
import math
import statistics
from dataclasses import dataclass, field

from .syscalls import COUNTED


def summarize(values):
    """n, median, min, max and quartiles of a list of numbers, or None if it is empty."""
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


def metric_value(run, metric):
    """One run's value of a metric: wall (s), rss (KiB), cpu (user + sys, s), user (s), sys (s, the kernel's),
    minflt (minor page faults), or a result-line field."""
    if metric == "wall":
        return run.wall
    if metric == "rss":
        return float(run.maxrss_kib)
    if metric == "cpu":
        return run.user + run.sys
    if metric == "user":
        return run.user
    if metric == "sys":
        return run.sys
    if metric == "minflt":
        return float(run.minflt)
    return float(run.fields[metric])


@dataclass
class Results:
    """Everything one harness run measured, how it ran, and the statistics every report shows."""

    allocs: list  # the allocators that ran, in table order
    workloads: list  # the workloads that ran, in table order
    runs: dict  # {(workload name, allocator name): [Run]}
    callgrind: dict  # {(allocator name, size): instructions per pair or None}
    baseline: str  # the allocator ratios refer to
    reps: int
    threads: int
    quick: bool
    notes: list = field(default_factory=list)
    syscalls: dict = field(default_factory=dict)  # {(workload, allocator): {syscall: calls} or None}

    def ok_runs(self, w, a):
        return [r for r in self.runs.get((w, a), []) if r.ok]

    def failed(self, w, a):
        return any(not r.ok for r in self.runs.get((w, a), []))

    def failed_count(self, w, a):
        return sum(1 for r in self.runs.get((w, a), []) if not r.ok)

    def stat(self, w, a, metric):
        """summarize() of a metric over the runs of workload w under allocator a; None if any failed."""
        rs = self.ok_runs(w, a)
        if not rs or self.failed(w, a):
            return None
        try:
            return summarize([metric_value(r, metric) for r in rs])
        except (KeyError, ValueError):
            return None

    def cell_stat(self, w, a, metric):
        """The statistics of one table cell, or None and what the cell says instead."""
        if (w, a) not in self.runs:
            return None, "n/a"
        s = self.stat(w, a, metric)
        return (s, "") if s is not None else (None, "FAIL")

    def ratio(self, w, a, metric):
        """The median of (w, a) divided by the baseline's median for w."""
        s, b = self.stat(w, a, metric), self.stat(w, self.baseline, metric)
        if not s or not b or b["median"] <= 0:
            return None
        return s["median"] / b["median"]

    def main_workloads(self):
        """The workloads of the wall, CPU and RSS tables."""
        return [w for w in self.workloads if w.table == "main"]

    def main_allocs(self):
        """The allocators that ran at least one main workload."""
        names = {an for w in self.main_workloads() for (wn, an) in self.runs if wn == w.name}
        return [a for a in self.allocs if a.name in names]

    def geo(self, a, metric):
        """The geometric mean of allocator a's ratios over the main workloads, and their count."""
        rs = [self.ratio(w.name, a.name, metric) for w in self.main_workloads()]
        rs = [r for r in rs if r]
        return (geomean(rs), len(rs)) if rs else (None, 0)

    def callgrind_allocs(self):
        """The allocators with at least one instruction count, and the sizes counted."""
        sizes = sorted({s for (_, s) in self.callgrind})
        allocs = [a for a in self.allocs if any((a.name, s) in self.callgrind for s in sizes)]
        return allocs, sizes

    def syscall_total(self, w, a, names=None):
        """The memory system calls (or those of `names`) of one counted run of (w, a), or None."""
        c = self.syscalls.get((w, a))
        if not c:
            return None
        return sum(c.get(k, 0) for k in (names or COUNTED))

    def curve_workloads(self):
        """The workloads whose RSS curve is charted (those that print samples)."""
        return [w for w in self.workloads if w.curve]

    def curve(self, w, a):
        """The RSS curve of (w, a): the samples of its run with the median peak RSS, or []."""
        rs = [r for r in self.ok_runs(w, a) if r.samples]
        if not rs:
            return []
        rs.sort(key=lambda r: r.maxrss_kib)
        return rs[(len(rs) - 1) // 2].samples
