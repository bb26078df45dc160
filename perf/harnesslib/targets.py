"""The targets of issue 8, checked on this run's medians: one verdict per workload and the overall ones.

- peak RSS of slotmalloc <= 1.10 x the lowest of mimalloc, jemalloc and tcmalloc, on every workload;
- geometric mean of slotmalloc's peak RSS ratios to mimalloc <= 0.90;
- CPU time (user + sys) of slotmalloc <= 1.00 x mimalloc's, on every workload; above 1 but with the
  min-max ranges of the two overlapping, the verdict is TIE (within this run's noise), not PASS;
- idle: the RSS 1 s into the idle phase <= 1.2 x mimalloc's;
- redis (not a target of the issue's list, shown beside them): the server's RSS after FLUSHALL and 20,000
  SETs, against mimalloc's (the issue's redis figure), and the lowest of the peers.
A verdict needs both sides measured; otherwise it is "-"."""
from .tables import fmt_mib

SUBJECT = "slotmalloc"
REFERENCE = "mimalloc"
PEERS = ("mimalloc", "jemalloc", "tcmalloc")
RSS_VS_BEST = 1.10
RSS_GEOMEAN = 0.90
CPU_VS_REF = 1.00
IDLE_VS_REF = 1.2
IDLE_WORKLOAD, IDLE_METRIC = "idle", "rss_idle_1s_kib"
REDIS_WORKLOAD, REDIS_METRIC = "redis", "rss_sets_kib"

HEAD = ["workload", "peak RSS ÷ lowest peer", "lowest peer", "≤1.10", "CPU ÷ mimalloc", "≤1.00", "syscalls",
        f"syscalls of {REFERENCE}"]


def verdict(value, limit):
    return "-" if value is None else ("PASS" if value <= limit else "MISS")


def applies(res):
    """Whether the targets can be checked: slotmalloc and mimalloc both ran a main workload."""
    names = {a.name for a in res.main_allocs()}
    return SUBJECT in names and REFERENCE in names


def best_peer(res, w, metric="rss"):
    """(median, name) of the lowest of the peers on workload w, or (None, '')."""
    best = (None, "")
    for p in PEERS:
        s = res.stat(w, p, metric)
        if s and (best[0] is None or s["median"] < best[0]):
            best = (s["median"], p)
    return best


def cpu_verdict(res, w):
    """(ratio, verdict) of slotmalloc's CPU time to mimalloc's on w: PASS, TIE (ranges overlap), MISS or -."""
    s, b = res.stat(w, SUBJECT, "cpu"), res.stat(w, REFERENCE, "cpu")
    if not s or not b or b["median"] <= 0:
        return None, "-"
    r = s["median"] / b["median"]
    if r <= CPU_VS_REF:
        return r, "PASS"
    if s["n"] > 1 and b["n"] > 1 and s["min"] <= b["max"]:
        return r, "TIE"
    return r, "MISS"


def fmt_calls(n):
    return "-" if n is None else f"{n:,}"


def workload_rows(res):
    """One row of HEAD per main workload slotmalloc ran."""
    rows = []
    for w in res.main_workloads():
        if (w.name, SUBJECT) not in res.runs:
            continue
        s = res.stat(w.name, SUBJECT, "rss")
        peer, peer_name = best_peer(res, w.name)
        rr = s["median"] / peer if s and peer else None
        cr, cv = cpu_verdict(res, w.name)
        rows.append([w.name, f"×{rr:.2f}" if rr else "-", f"{peer_name} {fmt_mib(peer)} MiB" if peer else "-",
                     verdict(rr, RSS_VS_BEST), f"×{cr:.2f}" if cr else "-", cv,
                     fmt_calls(res.syscall_total(w.name, SUBJECT)), fmt_calls(res.syscall_total(w.name, REFERENCE))])
    return rows


def summary_lines(res):
    """The overall verdicts: counts of the per-workload ones, the RSS geometric mean, the idle RSS at 1 s."""
    rows = workload_rows(res)
    out = []
    rss = [r[3] for r in rows if r[3] != "-"]
    cpu = [r[5] for r in rows if r[5] != "-"]
    out.append(f"peak RSS ≤ {RSS_VS_BEST:.2f}× the lowest of {', '.join(PEERS)}: {rss.count('PASS')} PASS, "
               f"{rss.count('MISS')} MISS of {len(rss)} workloads")
    out.append(f"CPU time ≤ {CPU_VS_REF:.2f}× {REFERENCE}: {cpu.count('PASS')} PASS, {cpu.count('TIE')} TIE "
               f"(above 1 within the min–max of both), {cpu.count('MISS')} MISS of {len(cpu)} workloads")
    g, n = res.geo(next(a for a in res.allocs if a.name == SUBJECT), "rss")
    out.append(f"peak RSS geometric mean ÷ {REFERENCE} ≤ {RSS_GEOMEAN:.2f}: "
               + (f"×{g:.2f} over {n} workloads: {verdict(g, RSS_GEOMEAN)}" if g else "-"))
    si, bi = res.stat(IDLE_WORKLOAD, SUBJECT, IDLE_METRIC), res.stat(IDLE_WORKLOAD, REFERENCE, IDLE_METRIC)
    if si and bi and bi["median"] > 0:
        ir = si["median"] / bi["median"]
        out.append(f"idle: RSS 1 s after going idle ÷ {REFERENCE}'s ≤ {IDLE_VS_REF}: {fmt_mib(si['median'])} MiB "
                   f"against {fmt_mib(bi['median'])} MiB, ×{ir:.2f}: {verdict(ir, IDLE_VS_REF)}")
    else:
        out.append(f"idle: RSS 1 s after going idle ÷ {REFERENCE}'s ≤ {IDLE_VS_REF}: - (not measured in this run)")
    sr, br = res.stat(REDIS_WORKLOAD, SUBJECT, REDIS_METRIC), res.stat(REDIS_WORKLOAD, REFERENCE, REDIS_METRIC)
    if sr and br and br["median"] > 0:
        peer, peer_name = best_peer(res, REDIS_WORKLOAD, REDIS_METRIC)
        out.append(f"redis: RSS after FLUSHALL and the SETs {fmt_mib(sr['median'])} MiB against {REFERENCE}'s "
                   f"{fmt_mib(br['median'])} MiB (×{sr['median'] / br['median']:.2f}); lowest peer {peer_name} "
                   f"{fmt_mib(peer)} MiB (×{sr['median'] / peer:.2f})")
    if res.quick:
        out.append("quick mode: small sizes, a check of the harness, not a measurement")
    return out
