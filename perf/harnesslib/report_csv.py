"""The summary CSV (latest.csv): one row per workload × allocator × metric, then the callgrind counts."""
import csv

from .syscalls import COUNTED

HEADER = ["section", "workload", "allocator", "metric", "unit", "n", "median", "min", "q1", "q3",
          "max", "ratio_to_baseline", "baseline", "failed_runs"]
CSV_NAMES = {"rss": "peak_rss", "seconds": "timed_core", "cpu": "cpu_user_sys", "user": "cpu_user",
             "sys": "cpu_sys", "minflt": "minor_faults"}  # the others keep their names
RATIO_METRICS = ("wall", "rss", "cpu", "user", "sys", "minflt")  # of the main table: with a ratio to the baseline


def metric_row(res, w, a, metric, unit, failed):
    s = res.stat(w.name, a.name, metric)
    name = CSV_NAMES.get(metric, metric)
    if s is None:
        return [w.table, w.name, a.name, name, unit, 0, "", "", "", "", "", "", res.baseline, failed]
    r = res.ratio(w.name, a.name, metric) if w.table == "main" and metric in RATIO_METRICS else None
    return ([w.table, w.name, a.name, name, unit, s["n"]] +
            [f"{s[k]:.9g}" for k in ("median", "min", "q1", "q3", "max")] +
            [f"{r:.4f}" if r is not None else "", res.baseline, failed])


def summary_rows(res):
    for w in res.workloads:
        for a in res.allocs:
            if (w.name, a.name) not in res.runs:
                continue
            failed = res.failed_count(w.name, a.name)
            for metric, unit in w.metrics():
                yield metric_row(res, w, a, metric, unit, failed)


def callgrind_rows(res):
    for (an, size), v in sorted(res.callgrind.items()):
        yield ["callgrind", f"pair-{size}", an, "instructions_per_pair", "Ir", 1,
               f"{v:.2f}" if v is not None else "", "", "", "", "", "", "", 0 if v is not None else 1]


def syscall_rows(res):
    """section syscalls: one row per workload × allocator × traced call, and the total of the memory calls
    (one run: n = 1)."""
    for (wn, an), counts in sorted(res.syscalls.items()):
        if counts is None:
            yield ["syscalls", wn, an, "total", "calls", 0, "", "", "", "", "", "", res.baseline, 1]
            continue
        for k, v in list(counts.items()) + [("total", sum(counts.get(c, 0) for c in COUNTED))]:
            yield ["syscalls", wn, an, k, "calls", 1, v, v, v, v, v, "", res.baseline, 0]


def write_csv(res, path):
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(HEADER)
        wr.writerows(summary_rows(res))
        wr.writerows(syscall_rows(res))
        wr.writerows(callgrind_rows(res))


RSS_HEADER = ["workload", "allocator", "rep", "ops", "ms", "rss_kib"]


def write_rss_csv(path, order):
    """latest-rss.csv: every RSS sample of every run that printed some; order: [(rep, workload, allocator, Run)]."""
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(RSS_HEADER)
        for rep, wn, an, r in order:
            for ops, ms, rss in r.samples:
                wr.writerow([wn, an, rep, ops, f"{ms:.1f}", rss])
