"""What the reports share: number formats, the titles of the main tables, the handle and tree tables."""
from .workloads import REDIS_STEP_NAMES, REDIS_STEPS, TREE_TEARDOWNS


# ---------------------------------------------------------------- numbers
def fmt_secs(s):
    """Seconds with 3 significant digits or so."""
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
    """KiB as MiB."""
    mib = kib / 1024.0
    return f"{mib:.0f}" if mib >= 100 else f"{mib:.1f}"


def fmt_ratio(r):
    return "" if r is None else f"×{r:.2f}"


def fmt_us(s):
    """Seconds as µs, or ms from 1000 µs."""
    us = s * 1e6
    if us >= 1000:
        return f"{us / 1000:.1f} ms"
    return f"{us:.1f} µs" if us >= 10 else f"{us:.2f} µs"


def fmt_count(n):
    """A count: 1234567 as 1.23M, 45678 as 45.7k."""
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e4:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


def fmt_metric(metric):
    """The formatter of a main-table metric's medians."""
    return fmt_mib if metric == "rss" else fmt_count if metric == "minflt" else fmt_secs


# ---------------------------------------------------------------- the slotmalloc API tables
DEREF_HEAD = ["workload", "linked", "ns per sm_deref", "ns per pointer load", "ratio"]
TREE_HEAD = ["teardown", "allocator", "total s", "build s", "teardown s", "pause (min–max)",
             "pause speed-up vs glibc free()", "peak MiB"]
TREE_METRICS = ("seconds", "build_s", "teardown_s", "pause_s", "rss")


def deref_row(res, w, a):
    """ns per sm_deref and per pointer load (median, min–max), and their ratio."""
    h, p = res.stat(w, a, "ns_handle"), res.stat(w, a, "ns_pointer")
    if h is None or p is None:
        return [w, a, "FAIL", "FAIL", ""]
    return [w, a, f"{h['median']:.2f} ({h['min']:.2f}–{h['max']:.2f})",
            f"{p['median']:.2f} ({p['min']:.2f}–{p['max']:.2f})",
            f"{h['median'] / p['median']:.1f}" if p["median"] > 0 else "-"]


def deref_rows(res):
    return [deref_row(res, w.name, a.name) for w in res.workloads if w.table == "deref"
            for a in res.allocs if (w.name, a.name) in res.runs]


def tree_row(res, w, how, a, ref):
    """Total, build, teardown and pause of one tree teardown; ref: glibc's free() teardown."""
    st = {m: res.stat(w, a, m) for m in TREE_METRICS}
    if any(v is None for v in st.values()):
        return [how, a, "FAIL", "", "", "", "", ""]
    pause = st["pause_s"]["median"]
    return [how, a, fmt_secs(st["seconds"]["median"]), fmt_secs(st["build_s"]["median"]),
            fmt_secs(st["teardown_s"]["median"]),
            f"{fmt_us(pause)} ({fmt_us(st['pause_s']['min'])}–{fmt_us(st['pause_s']['max'])})",
            f"{ref['median'] / pause:.0f}×" if ref and pause > 0 else "-",
            fmt_mib(st["rss"]["median"])]


def tree_rows(res):
    ref = res.stat("tree-free", "glibc", "teardown_s")
    return [tree_row(res, w, how, a.name, ref) for w, how in TREE_TEARDOWNS
            for a in res.allocs if (w, a.name) in res.runs]


def tree_objects(res):
    """The number of objects of the tree, from the first successful tree run."""
    for (wn, _), rs in res.runs.items():
        if wn.startswith("tree-"):
            for r in rs:
                if r.ok and "ops" in r.fields:
                    return f"{int(r.fields['ops']):,}"
    return "small"


# ---------------------------------------------------------------- the redis table
REDIS_HEAD = ["workload", "allocator", "malloc"] + [f"RSS {n}" for n in REDIS_STEP_NAMES] + \
    ["live (used_memory)", "server CPU user+sys", "peak MiB"]


def redis_row(res, w, a):
    """The server's RSS after each step in MiB (medians, ×ratio to the baseline's), its live bytes and CPU."""
    rs = res.ok_runs(w, a)
    st = {m: res.stat(w, a, m) for m in REDIS_STEPS + ("used_kib", "rss")}
    if not rs or any(v is None for v in st.values()):
        return [w, a, "", "FAIL"] + [""] * (len(REDIS_HEAD) - 4)
    base = {m: res.stat(w, res.baseline, m) for m in REDIS_STEPS}
    cells = []
    for m in REDIS_STEPS:
        b = base[m]
        ratio = f" {fmt_ratio(st[m]['median'] / b['median'])}" if b and b["median"] > 0 and a != res.baseline else ""
        cells.append(fmt_mib(st[m]["median"]) + ratio)
    cpu = sorted(float(r.fields.get("server_user_s", 0)) + float(r.fields.get("server_sys_s", 0)) for r in rs)
    return ([w, a, rs[0].fields.get("malloc", "?")] + cells +
            [fmt_mib(st["used_kib"]["median"]), f"{cpu[(len(cpu) - 1) // 2]:.2f} s", fmt_mib(st["rss"]["median"])])


def redis_rows(res):
    return [redis_row(res, w.name, a.name) for w in res.workloads if w.table == "redis"
            for a in res.allocs if (w.name, a.name) in res.runs]


def api_tables(res):
    """[(title, header, rows)] of the handle, tree and redis tables that have rows."""
    tables = [("HANDLES: sm_deref against a plain pointer load (median, min–max)", DEREF_HEAD, deref_rows(res)),
              (f"TREE of {tree_objects(res)} objects: teardown by free(), talloc and arenas "
               "(pause = the close call alone)", TREE_HEAD, tree_rows(res)),
              (f"REDIS: redis-server's resident set (VmRSS, MiB, medians ×ratio to {res.baseline}) after each step",
               REDIS_HEAD, redis_rows(res))]
    return [t for t in tables if t[2]]
