"""The raw runs: every run (latest-runs.csv), and the failed ones' commands and stderr (failures.log)."""
import csv

HEADER = ["seq", "rep", "workload", "allocator", "status", "wall_s", "peak_rss_kib", "user_s",
          "sys_s", "minor_faults", "result_line", "command"]


def write_runs_csv(path, order):
    """order: [(rep, workload, allocator, Run)] in the order they ran."""
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(HEADER)
        for seq, (rep, wn, an, r) in enumerate(order, 1):
            wr.writerow([seq, rep, wn, an, r.status, f"{r.wall:.6f}", r.maxrss_kib, f"{r.user:.6f}",
                         f"{r.sys:.6f}", r.minflt, r.line, r.command()])


def write_failures_log(path, failures):
    """failures: [(rep, workload, allocator, Run)]; the last 4000 characters of each stderr."""
    with open(path, "w") as f:
        for (rep, wn, an, r) in failures:
            f.write(f"== rep {rep} {wn} under {an}: {r.status}\n$ {r.command()}\n{r.stderr[-4000:]}\n")
