"""The terminal report (latest.txt): fixed-width tables."""
from .tables import api_tables, fmt_metric, fmt_ratio

WIDTH = 20  # of an allocator's column
MAIN_TABLES = (("wall", "WALL TIME: median seconds ×ratio ±half-range"),
               ("cpu", "CPU TIME (user+sys, all threads): median seconds ×ratio ±half-range"),
               ("rss", "PEAK RSS: median MiB ×ratio ±half-range"))


def row(first, cells):
    return f"{first:<12}" + "".join(f"{c:>{WIDTH}}" for c in cells)


def main_cell(res, w, a, metric):
    """median ×ratio ±half-range%, or n/a or FAIL."""
    s, missing = res.cell_stat(w, a, metric)
    if s is None:
        return missing
    spread = (s["max"] - s["min"]) / 2 / s["median"] * 100 if s["median"] else 0
    return f"{fmt_metric(metric)(s['median'])} {fmt_ratio(res.ratio(w, a, metric))} ±{spread:.0f}%"


def geo_cell(res, a, metric):
    g, n = res.geo(a, metric)
    return f"{fmt_ratio(g)} ({n})" if g else "-"


def main_table(res, metric, label):
    allocs = res.main_allocs()
    out = ["", label, row("workload", [a.name for a in allocs])]
    out += [row(w.name, [main_cell(res, w.name, a.name, metric) for a in allocs]) for w in res.main_workloads()]
    out.append(row("geomean", [geo_cell(res, a, metric) for a in allocs]))
    return out


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
    out = ["", title, "  ".join(h.ljust(wd) for h, wd in zip(head, widths))]
    out += ["  ".join(str(c).ljust(wd) for c, wd in zip(r, widths)) for r in rows]
    return out


def render_text(res):
    """The whole terminal report."""
    out = [f"slotmalloc perf: {res.reps} reps, {res.threads} threads, "
           f"{'quick' if res.quick else 'full'} mode, ratios to {res.baseline} (lower is better)"]
    if res.main_workloads():
        for metric, label in MAIN_TABLES:
            out += main_table(res, metric, label)
    if res.callgrind:
        out += callgrind_table(res)
    for title, head, rows in api_tables(res):
        out += api_table(title, head, rows)
    if res.notes:
        out.append("")
        out += ["note: " + n for n in res.notes]
    return "\n".join(out) + "\n"
