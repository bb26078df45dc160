"""The chart (latest.png, by gnuplot): time and peak RSS of each allocator relative to the baseline."""
import os
import shutil
import subprocess

DEFAULT_COLOR = "#444444"


def chart_allocs(res):
    """The allocators with bars: every one of the main tables but the baseline."""
    return [a for a in res.main_allocs() if a.name != res.baseline]


def bar_offset(j, n, bw):
    """Where bar j of n (width bw) sits relative to its workload's tick."""
    return (j - (n - 1) / 2) * bw


def spread(res, w, a, metric):
    """The min and max of (w, a)'s runs divided by the baseline's median: the error bar of its bar."""
    s, b = res.stat(w, a, metric), res.stat(w, res.baseline, metric)
    if not s or not b or b["median"] <= 0:
        return None
    return s["min"] / b["median"], s["max"] / b["median"]


def write_data(res, path, time_metric, allocs, bw):
    """One gnuplot data block per (metric, allocator): x, ratio, min and max (relative to the baseline's
    median) per workload, then the geomean (no whisker: NaN)."""
    mw = res.main_workloads()
    with open(path, "w") as f:
        for metric in (time_metric, "rss"):
            for j, a in enumerate(allocs):
                f.write(f"# {metric} {a.name}\n")
                for i, w in enumerate(mw):
                    r = res.ratio(w.name, a.name, metric)
                    if r:
                        lo, hi = spread(res, w.name, a.name, metric) or (r, r)
                        f.write(f"{i + bar_offset(j, len(allocs), bw):.4f} {r:.4f} {lo:.4f} {hi:.4f}\n")
                g, _ = res.geo(a, metric)
                if g:
                    f.write(f"{len(mw) + 0.5 + bar_offset(j, len(allocs), bw):.4f} {g:.4f} NaN NaN\n")
                f.write("\n\n")


def y_range(res, metric):
    """The log-scale range that holds every ratio and 1, with a margin."""
    rs = [res.ratio(w.name, a.name, metric) for w in res.main_workloads() for a in res.allocs]
    rs += [x for w in res.main_workloads() for a in res.allocs for x in (spread(res, w.name, a.name, metric) or ())]
    rs += [res.geo(a, metric)[0] for a in res.allocs]
    rs = [r for r in rs if r]
    lo = min(rs + [1.0]) / 1.3
    hi = max(rs + [1.0]) * 1.3
    return f"{lo:.3f}:{hi:.3f}"


def script_head(res, png, allocs):
    """The settings and title of the two-panel plot."""
    mw = res.main_workloads()
    quick = " (QUICK MODE: a check of the harness, not a result)" if res.quick else ""
    xtics = ", ".join([f'"{w.name}" {i}' for i, w in enumerate(mw)] + [f'"GEOMEAN" {len(mw) + 0.5}'])
    return [
        f"set terminal pngcairo size {max(1400, 13 * (len(mw) + 1) * (len(allocs) + 1) + 300)},1000 font 'sans,10'",
        f"set output '{png}'",
        "set style fill solid 0.9 border rgb '#333333'",
        "set logscale y 2",
        "set grid ytics",
        "set key outside right top vertical",
        f"set xtics ({xtics}) rotate by -35 nomirror",
        f"set xrange [-0.6:{len(mw) + 1.1}]",
        f"set arrow 2 from {len(mw) - 0.25}, graph 0 to {len(mw) - 0.25}, graph 1 nohead dt 2 lc rgb '#888888'",
        "set multiplot layout 2,1 title "
        f"'slotmalloc perf: each allocator relative to {res.baseline} (= 1, the black line): "
        f"bars down are better, up are worse. " +
        (f"Medians of {res.reps} interleaved runs each (whiskers: min–max), " if res.reps > 1 else "One run each, ") +
        f"{res.threads} threads{quick}' font 'sans,12'",
    ]


def script_panels(res, dat, time_metric, allocs, bw):
    """The time panel and the peak RSS panel: one boxxyerror plot per allocator, and the line at 1."""
    lines = []
    idx = 0
    tname = "wall time" if time_metric == "wall" else "CPU time (user+sys)"
    for metric, title in ((time_metric, tname), ("rss", "peak RSS")):
        lines.append(f"set ylabel '{title} / {res.baseline} (log scale)'")
        lines.append(f"set title '{title}'")
        lines.append(f"set yrange [{y_range(res, metric)}]")
        plot = []
        for a in allocs:
            c = a.color or DEFAULT_COLOR
            plot.append(f"'{dat}' index {idx} using 1:(1):($1-{bw / 2:.4f}):($1+{bw / 2:.4f}):(1):2 "
                        f"with boxxyerror title '{a.name}' lc rgb '{c}'")
            if res.reps > 1:  # the min-max of the runs
                plot.append(f"'{dat}' index {idx} using 1:2:3:4 with yerrorbars pt 0 lw 1 lc rgb '#222222' notitle")
            idx += 1
        plot.append(f"1 with lines lw 2 lc rgb 'black' title '{res.baseline} (= 1)'")
        lines.append("plot " + ", ".join(plot))
    lines.append("unset multiplot")
    return lines


def draw_chart(res, png, time_metric, tmpdir):
    """Draws the chart into png; returns None, or a note saying why there is no chart.

    Two panels (time_metric "wall" or "cpu", then peak RSS); per workload one bar
    per allocator, drawn from the baseline's line at 1 up (worse) or down (better), log scale."""
    gp = shutil.which("gnuplot")
    if not gp:
        return "gnuplot not found (apt-get install gnuplot-nox): no chart"
    allocs = chart_allocs(res)
    if not allocs or not res.main_workloads():
        return "nothing to chart"
    bw = 0.8 / len(allocs)
    dat = os.path.join(tmpdir, "chart.dat")
    write_data(res, dat, time_metric, allocs, bw)
    lines = script_head(res, png, allocs) + script_panels(res, dat, time_metric, allocs, bw)
    script = os.path.join(tmpdir, "chart.gp")
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    p = subprocess.run([gp, script], capture_output=True, text=True)
    if p.returncode != 0:
        return "gnuplot failed: " + p.stderr.strip()[-300:]
    return None


# ---------------------------------------------------------------- the RSS curves (latest-rss.png)
def curve_x(w, ops, ms):
    """The x of a sample: seconds since the idle phase began, or millions of operations."""
    return ms / 1000.0 if w.curve == "ms" else ops / 1e6


def draw_rss_chart(res, png, tmpdir):
    """Draws the RSS curves of the workloads that sample their RSS (idle, longrun), one panel each and one
    line per allocator (its run with the median peak RSS); returns None or a note saying why not."""
    gp = shutil.which("gnuplot")
    if not gp:
        return "gnuplot not found (apt-get install gnuplot-nox): no RSS chart"
    panels = []
    for w in res.curve_workloads():
        lines = [(a, res.curve(w.name, a.name)) for a in res.allocs]
        lines = [(a, c) for a, c in lines if c]
        if lines:
            panels.append((w, lines))
    if not panels:
        return None
    dat = os.path.join(tmpdir, "rss.dat")
    script = [f"set terminal pngcairo size 1400,{450 * len(panels) + 80} font 'sans,10'", f"set output '{png}'",
              "set grid", "set key outside right top vertical",
              f"set multiplot layout {len(panels)},1 title 'slotmalloc perf: RSS over time, one line per allocator "
              f"(its run with the median peak RSS){' (QUICK MODE)' if res.quick else ''}' font 'sans,12'"]
    idx = 0
    with open(dat, "w") as f:
        for w, lines in panels:
            plot = []
            for a, c in lines:
                f.write(f"# {w.name} {a.name}\n")
                for ops, ms, rss in c:
                    f.write(f"{curve_x(w, ops, ms):.4f} {rss / 1024:.2f}\n")
                f.write("\n\n")
                plot.append(f"'{dat}' index {idx} using 1:2 title '{a.name}' with lines lw 2 "
                            f"lc rgb '{a.color or DEFAULT_COLOR}'")
                idx += 1
            xlabel = w.curve_label or ("seconds since the frees (before 0: the burst, then the frees)"
                                       if w.curve == "ms" else "operations (millions)")
            script += [f"set title '{w.name}: {w.desc.replace(chr(39), '')}' noenhanced", f"set xlabel '{xlabel}'",
                       "set ylabel 'RSS, MiB'", "set yrange [0:*]", "plot " + ", ".join(plot)]
    script.append("unset multiplot")
    path = os.path.join(tmpdir, "rss.gp")
    with open(path, "w") as f:
        f.write("\n".join(script) + "\n")
    p = subprocess.run([gp, path], capture_output=True, text=True)
    if p.returncode != 0:
        return "gnuplot failed on the RSS chart: " + p.stderr.strip()[-300:]
    return None
