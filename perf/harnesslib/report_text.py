"""The terminal report (latest.txt): fixed-width tables."""
from . import targets
from .syscalls import COUNTED, WAITS
from .tables import api_tables, fmt_metric, fmt_ratio

WIDTH = 20  # of an allocator's column
MAIN_TABLES = (("wall", "WALL TIME: median seconds ×ratio ±half-range"),
               ("cpu", "CPU TIME (user+sys, all threads): median seconds ×ratio ±half-range"),
               ("user", "USER TIME (all threads): median seconds ×ratio ±half-range"),
               ("sys", "SYSTEM TIME (in the kernel, all threads): median seconds ×ratio ±half-range"),
               ("minflt", "MINOR PAGE FAULTS (pages mapped by the kernel at first touch): median ×ratio ±half-range"),
               ("rss", "PEAK RSS: median MiB ×ratio ±half-range"))


def row(first, cells):
    return f"{first:<12}" + "".join(f"{c:>{WIDTH}}" for c in cells)


def main_cell(res, w, a, metric):
    """median ×ratio ±half-range%, or n/a or FAIL."""
    s, missing = res.cell_stat(w, a, metric)
    if s is None:
        return missing
    cell = f"{fmt_metric(metric)(s['median'])} {fmt_ratio(res.ratio(w, a, metric))}"
    if s["n"] == 1:  # one run: no spread to show
        return cell
    spread = (s["max"] - s["min"]) / 2 / s["median"] * 100 if s["median"] else 0
    return f"{cell} ±{spread:.0f}%"


def geo_cell(res, a, metric):
    g, n = res.geo(a, metric)
    return f"{fmt_ratio(g)} ({n})" if g else "-"


def main_table(res, metric, label):
    allocs = res.main_allocs()
    if res.reps == 1:  # one run: no spread to show
        label = label.replace(" ±half-range", "")
    out = ["", label, row("workload", [a.name for a in allocs])]
    out += [row(w.name, [main_cell(res, w.name, a.name, metric) for a in allocs]) for w in res.main_workloads()]
    out.append(row("geomean", [geo_cell(res, a, metric) for a in allocs]))
    return out


def syscall_cell(res, w, a):
    """Memory system calls of the counted run, ×ratio to the baseline's, or n/a or FAIL."""
    if (w, a) not in res.runs:
        return "n/a"
    n = res.syscall_total(w, a)
    if n is None:
        return "FAIL"
    b = res.syscall_total(w, res.baseline)
    return f"{n:,}" + (f" {fmt_ratio(n / b)}" if b else "")


def wait_cell(res, w, a):
    """futex+sched_yield calls of the counted run: 'futex/yield', or n/a or FAIL."""
    if (w, a) not in res.runs:
        return "n/a"
    c = res.syscalls.get((w, a))
    return f"{c.get('futex', 0):,}/{c.get('sched_yield', 0):,}" if c else "FAIL"


def syscall_table(res):
    allocs = res.main_allocs()
    out = ["", f"MEMORY SYSTEM CALLS ({'+'.join(COUNTED)}; one strace run each) ×ratio",
           row("workload", [a.name for a in allocs])]
    out += [row(w.name, [syscall_cell(res, w.name, a.name) for a in allocs]) for w in res.main_workloads()]
    out += ["", f"WAITING THREADS: futex/{'+'.join(WAITS[1:])} calls of the same strace run",
            row("workload", [a.name for a in allocs])]
    out += [row(w.name, [wait_cell(res, w.name, a.name) for a in allocs]) for w in res.main_workloads()]
    return out


def targets_table(res):
    out = ["", f"ISSUE 8 TARGETS for {targets.SUBJECT} (medians of this run; TIE: above 1 within the noise)"]
    out += api_table("", targets.HEAD, targets.workload_rows(res))[1:]
    return out + targets.summary_lines(res)


def callgrind_table(res):
    allocs, sizes = res.callgrind_allocs()
    out = ["", "INSTRUCTIONS per malloc+free pair (callgrind, (Ir(2N)-Ir(N))/N, loop included)",
           row("size", [a.name for a in allocs])]
    for s in sizes:
        vals = [res.callgrind.get((a.name, s)) for a in allocs]
        out.append(row(f"{s} B", [f"{v:.1f}" if v is not None else "FAIL" for v in vals]))
    return out


def api_table(title, head, rows):
    """A table with columns as wide as their widest cell."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    out = ["", title, "  ".join(h.ljust(wd) for h, wd in zip(head, widths)).rstrip()]
    out += ["  ".join(str(c).ljust(wd) for c, wd in zip(r, widths)).rstrip() for r in rows]
    return out


def render_text(res):
    """The whole terminal report."""
    out = [f"slotmalloc perf: {res.reps} reps, {res.threads} threads, "
           f"{'quick' if res.quick else 'full'} mode, ratios to {res.baseline} (lower is better)"]
    if res.main_workloads():
        for metric, label in MAIN_TABLES:
            out += main_table(res, metric, label)
    if res.syscalls and res.main_workloads():
        out += syscall_table(res)
    if res.main_workloads() and targets.applies(res):
        out += targets_table(res)
    if res.callgrind:
        out += callgrind_table(res)
    for title, head, rows in api_tables(res):
        out += api_table(title, head, rows)
    if res.notes:
        out.append("")
        out += ["note: " + n for n in res.notes]
    return "\n".join(out) + "\n"
