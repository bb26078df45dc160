"""The markdown report (latest.md): the machine and run, every table, the workloads, the notes."""
from . import targets
from .syscalls import COUNTED, WAITS
from .tables import api_tables, fmt_metric, fmt_ratio

MAIN_TABLES = (("wall", "Wall time, seconds"), ("cpu", "CPU time (user + system, all threads), seconds"),
               ("user", "User time (all threads), seconds"),
               ("sys", "System time (in the kernel, all threads), seconds"),
               ("minflt", "Minor page faults (the kernel mapping a page at its first touch)"), ("rss", "Peak RSS, MiB"))


def table_head(first, names, align="---:"):
    return [f"| {first} | " + " | ".join(names) + " |", "|---|" + "|".join(align for _ in names) + "|"]


def main_cell(res, w, a, metric):
    """median **×ratio** (min–max), or n/a or **FAIL**."""
    s, missing = res.cell_stat(w, a, metric)
    if s is None:
        return "**FAIL**" if missing == "FAIL" else missing
    f = fmt_metric(metric)
    r = res.ratio(w, a, metric)
    rs = f" **{fmt_ratio(r)}**" if r is not None else ""
    if s["n"] == 1:  # one run: no spread to show
        return f"{f(s['median'])}{rs}"
    return f"{f(s['median'])}{rs} ({f(s['min'])}–{f(s['max'])})"


def geo_cell(res, a, metric):
    g, n = res.geo(a, metric)
    return f"**{fmt_ratio(g)}** ({n} workloads)" if g else "-"


def main_table(res, metric, title):
    allocs = res.main_allocs()
    out = ["", f"### {title}", ""] + table_head("workload", [a.name for a in allocs])
    for w in res.main_workloads():
        out.append(f"| {w.name} | " + " | ".join(main_cell(res, w.name, a.name, metric) for a in allocs) + " |")
    out.append("| geometric mean | " + " | ".join(geo_cell(res, a, metric) for a in allocs) + " |")
    return out


def syscall_cell(res, w, a):
    """total ×ratio (mmap/munmap/madvise/mprotect/brk/mremap/process_madvise), or n/a or **FAIL**."""
    if (w, a) not in res.runs:
        return "n/a"
    c = res.syscalls.get((w, a))
    if not c:
        return "**FAIL**"
    n, b = res.syscall_total(w, a), res.syscall_total(w, res.baseline)
    ratio = f" **{fmt_ratio(n / b)}**" if b else ""
    return f"{n:,}{ratio} ({'/'.join(str(c[k]) for k in COUNTED)})"


def wait_cell(res, w, a):
    if (w, a) not in res.runs:
        return "n/a"
    c = res.syscalls.get((w, a))
    return f"{c.get('futex', 0):,}/{c.get('sched_yield', 0):,}" if c else "**FAIL**"


def syscall_table(res):
    allocs = res.main_allocs()
    out = ["", f"### Memory system calls per run ({'/'.join(COUNTED)}; one strace run each)", ""]
    out += table_head("workload", [a.name for a in allocs])
    for w in res.main_workloads():
        out.append(f"| {w.name} | " + " | ".join(syscall_cell(res, w.name, a.name) for a in allocs) + " |")
    out += ["", f"### Waiting threads: {'/'.join(WAITS)} calls of the same strace run", ""]
    out += table_head("workload", [a.name for a in allocs])
    for w in res.main_workloads():
        out.append(f"| {w.name} | " + " | ".join(wait_cell(res, w.name, a.name) for a in allocs) + " |")
    return out


def targets_table(res):
    out = ["", f"### Issue 8 targets for {targets.SUBJECT}", "",
           "Medians of this run. CPU: TIE = above 1 but within the min–max of both allocators (this run's noise).",
           ""]
    out += ["| " + " | ".join(targets.HEAD) + " |", "|---|" + "|".join("---:" for _ in targets.HEAD[1:]) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in targets.workload_rows(res)]
    return out + [""] + [f"- {line}" for line in targets.summary_lines(res)]


def callgrind_table(res):
    allocs, sizes = res.callgrind_allocs()
    names = [a.name for a in allocs]
    out = ["", "### Instructions per malloc+free pair (callgrind: (Ir(2N) − Ir(N)) / N, loop included)", ""]
    out += table_head("size", names)
    for s in sizes:
        vals = [res.callgrind.get((n, s)) for n in names]
        out.append(f"| {s} B | " + " | ".join(f"{v:.1f}" if v is not None else "FAIL" for v in vals) + " |")
    return out


def api_table(title, head, rows):
    out = ["", f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def render_markdown(res, meta):
    """The whole markdown report; meta: [(label, value)] about the machine and the run."""
    out = ["## slotmalloc perf results", ""]
    out += [f"- {k}: {v}" for k, v in meta]
    out.append("")
    if res.reps == 1:
        out.append(f"Each cell: the one run's value, ×ratio to {res.baseline} (lower is better); one run shows "
                   "no spread. See perf/README.md.")
    else:
        out.append(f"Each cell: median of {res.reps} runs, ×ratio to {res.baseline} (lower is better), "
                   "and (min–max). Interleaved runs on one machine; see perf/README.md.")
    if res.main_workloads():
        for metric, title in MAIN_TABLES:
            out += main_table(res, metric, title)
    if res.syscalls and res.main_workloads():
        out += syscall_table(res)
    if res.main_workloads() and targets.applies(res):
        out += targets_table(res)
    if res.callgrind:
        out += callgrind_table(res)
    for title, head, rows in api_tables(res):
        out += api_table(title, head, rows)
    out += ["", "### Workloads", ""]
    out += [f"- `{w.name}`: {w.desc}" for w in res.workloads]
    if res.notes:
        out += ["", "### Notes", ""] + [f"- {n}" for n in res.notes]
    return "\n".join(out) + "\n"
