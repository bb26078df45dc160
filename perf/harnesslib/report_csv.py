"""The summary CSV (latest.csv): one row per workload × allocator × metric, then the callgrind counts."""
import csv

HEADER = ["section", "workload", "allocator", "metric", "unit", "n", "median", "min", "q1", "q3",
          "max", "ratio_to_baseline", "baseline", "failed_runs"]
CSV_NAMES = {"rss": "peak_rss", "seconds": "timed_core", "cpu": "cpu_user_sys"}  # the others keep their names
RATIO_METRICS = ("wall", "rss", "cpu")  # of the main table: the ones with a ratio to the baseline


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


def write_csv(res, path):
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(HEADER)
        wr.writerows(summary_rows(res))
        wr.writerows(callgrind_rows(res))
