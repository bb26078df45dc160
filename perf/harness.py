#!/usr/bin/env python3
"""harness.py: runs every perf workload under every allocator and reports.

Normally started by perf/run.sh, which installs the packages and builds first.
Python 3 standard library only. This file is the command line and the wiring;
the jobs are in perf/harnesslib/ (perf/README.md, "The harness's code").

Method, in short (perf/README.md has the long form):
  * all allocators are compared on the same machine in the same run;
  * runs are interleaved: for each repetition, for each workload, every
    allocator once (the order rotated from one repetition to the next), so that
    drift of a noisy machine hits all allocators alike;
  * each case is repeated (--reps, default 5); the median is reported with the
    spread (min-max, and the quartiles in the CSV);
  * time is the wall time of the whole process (fork to reaped exit), memory is
    the peak resident set (ru_maxrss from wait4, which covers the program's own
    children too, e.g. cc1 under gcc);
  * every workload prints which object defines the malloc it called; a run
    whose malloc is not the allocator under test counts as a failure, so a
    preload that silently did not load cannot pass for a result;
  * instruction counts of the malloc+free pair come from callgrind as
    (Ir(2N) - Ir(N)) / N, which cancels start-up and exit;
  * memory system calls (mmap, munmap, madvise, mprotect, brk, mremap, process_madvise) are
    counted in one more, untimed run of each case under strace;
  * any allocator (--allocator name=/path/lib.so) and any program
    (--program name="command") can join the comparison.
"""
import argparse
import os
import sys
import tempfile
import time

from harnesslib.allocators import discover_allocators
from harnesslib.callgrind import count_instructions
from harnesslib.machine import Load, machine_meta
from harnesslib.plan import CannotRun, make_plan
from harnesslib.report_chart import draw_chart, draw_rss_chart
from harnesslib.report_csv import write_csv, write_rss_csv
from harnesslib.report_markdown import render_markdown
from harnesslib.report_runs import write_failures_log, write_runs_csv
from harnesslib.report_text import render_text
from harnesslib.runner import count_runs, run_interleaved, warm_up
from harnesslib.stats import Results
from harnesslib.syscalls import count_syscalls
from harnesslib.workloads import WORKLOADS

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Compare slotmalloc with glibc, mimalloc, jemalloc and tcmalloc.")
    p.add_argument("--build-dir", default=os.path.join(ROOT, "build"), help="the CMake build folder (default build/)")
    p.add_argument("--workloads", help="comma-separated workload names (default: all; --list shows them)")
    p.add_argument("--allocators", help="comma-separated allocator names (default: all found)")
    p.add_argument("--allocator", action="append", default=[], metavar="NAME=/path/lib.so",
                   help="add an allocator, preloaded from that library (repeatable)")
    p.add_argument("--program", action="append", default=[], metavar='NAME="command args"',
                   help="add any program as a workload, run under every allocator by LD_PRELOAD (repeatable); "
                        "alone, only the programs run")
    p.add_argument("--reps", type=int, help="repetitions of every case (default 5, quick 1)")
    p.add_argument("--threads", type=int, default=max(2, len(os.sched_getaffinity(0))),
                   help="threads of the multi-threaded workloads (default: CPUs, at least 2)")
    p.add_argument("--quick", action="store_true", help="small sizes and 1 rep: seconds, to check the harness works")
    p.add_argument("--scale", type=float, help="work scale of every workload (default 1, quick 0.05)")
    p.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    p.add_argument("--no-syscalls", action="store_true", help="skip the strace pass that counts memory system calls")
    p.add_argument("--time", choices=("wall", "cpu"), default="wall",
                   help="the time the chart shows: wall (default) or cpu (user+sys, robust on a busy machine)")
    p.add_argument("--baseline", default="mimalloc", help="the allocator ratios refer to (default mimalloc)")
    p.add_argument("--out", default=os.path.join(HERE, "results"),
                   help="output folder (default perf/results; created if missing)")
    p.add_argument("--timeout", type=float, default=120, help="seconds before one run is killed (default 120)")
    p.add_argument("--allow-failures", action="store_true", help="exit 0 even if some runs failed")
    p.add_argument("--list", action="store_true", help="list workloads and allocators, then exit")
    a = p.parse_args(argv)
    if a.reps is None:
        a.reps = 1 if a.quick else 5
    if a.scale is None:
        a.scale = 0.05 if a.quick else 1.0
    return a


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def print_list(allocs):
    """--list: the workloads, and which allocators were found."""
    print("workloads:")
    for w in WORKLOADS:
        print(f"  {w.name:<12} {w.kind:<8} {w.desc}")
    print("allocators:")
    for a in allocs:
        print(f"  {a.name:<18} {'found' if a.available else 'missing: ' + a.note}")


def write_reports(res, args, measured, load, duration, tmpdir):
    """Writes every output file into args.out; returns the terminal text and the files written."""
    out = args.out
    if measured.failures:
        flog = os.path.join(out, "failures.log")
        write_failures_log(flog, measured.failures)
        res.notes.append(f"{len(measured.failures)} run(s) failed: see {os.path.relpath(flog)}")
    chart_error = draw_chart(res, os.path.join(out, "latest.png"), args.time, tmpdir)
    if chart_error:
        res.notes.append(chart_error)
    rss_chart_error = draw_rss_chart(res, os.path.join(out, "latest-rss.png"), tmpdir)
    if rss_chart_error:
        res.notes.append(rss_chart_error)
    curves = any(r.samples for (_, _, _, r) in measured.order)
    if curves:
        write_rss_csv(os.path.join(out, "latest-rss.csv"), measured.order)
    text = render_text(res)
    with open(os.path.join(out, "latest.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "latest.md"), "w") as f:
        f.write(render_markdown(res, machine_meta(args, duration, load)))
    write_csv(res, os.path.join(out, "latest.csv"))
    write_runs_csv(os.path.join(out, "latest-runs.csv"), measured.order)
    files = ["latest.csv", "latest-runs.csv", "latest.md", "latest.txt"] + ([] if chart_error else ["latest.png"])
    files += (["latest-rss.csv"] if curves else []) + (["latest-rss.png"] if curves and not rss_chart_error else [])
    return text, files


def main(argv):
    args = parse_args(argv)
    started = time.time()
    build = os.path.abspath(args.build_dir)
    try:
        found = discover_allocators(build, args.allocator)
    except ValueError as e:
        log(str(e))
        return 2
    if args.list:
        print_list(found)
        return 0
    try:
        plan = make_plan(args, build, found, log)
    except CannotRun as e:
        log(str(e))
        return 2
    total = count_runs(plan.workloads, plan.cases, args.reps)
    log(f"perf: {len(plan.workloads)} workloads × {plan.allocator_count()} allocators × {args.reps} reps = "
        f"{total} runs ({'quick' if args.quick else 'full'} mode, {args.threads} threads)")
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="slotmalloc-perf-") as tmpdir:
        log("warm-up: one untimed run of each workload")
        warm_up(plan.workloads, plan.cases, plan.ctx, args.timeout, tmpdir)
        measured = run_interleaved(plan.workloads, plan.cases, plan.ctx, args.reps, args.timeout, tmpdir,
                                   started, log)
        notes = plan.notes
        syscalls = {}
        if not args.no_syscalls:
            log("system calls: one untimed run of each case under strace")
            syscalls, sc_notes = count_syscalls(plan.workloads, plan.cases, plan.ctx, args.timeout, tmpdir, log)
            notes += sc_notes
        callgrind = {}
        if not args.no_callgrind:
            callgrind, cg_notes = count_instructions(plan.allocs, plan.ctx, args.quick, args.timeout, tmpdir, log)
            notes += cg_notes
        duration = time.time() - started
        load = Load(measured.loads)
        busy = load.busy_note(args.threads)
        if busy:
            notes.append(busy)
        res = Results(plan.allocs, plan.workloads, measured.runs, callgrind, plan.baseline,
                      args.reps, args.threads, args.quick, notes, syscalls)
        text, files = write_reports(res, args, measured, load, duration, tmpdir)
    sys.stdout.write("\n" + text)
    print(f"\nwritten: {', '.join(os.path.join(os.path.relpath(args.out), f) for f in files)} "
          f"({duration / 60:.1f} min)")
    callgrind_failed = any(v is None for v in callgrind.values())
    if (measured.failures or callgrind_failed) and not args.allow_failures:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
