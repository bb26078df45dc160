"""Memory system calls per run: one extra, untimed run of each case under strace, counting
mmap, munmap, madvise, mprotect, brk, mremap and process_madvise (slotmalloc gives back many ranges in
one call of it where the kernel allows) in every thread and child process, and the two calls of
waiting threads, futex and sched_yield (an allocator's lock that sleeps or yields shows there).

strace runs with --seccomp-bpf: a seccomp filter stops the program only at the counted calls, so the other
system calls and the allocator's own code run at full speed; the counts are exact, the time of this run is
not used. The allocator is passed with strace's -E, so that strace itself is not preloaded."""
import os
import shutil

from .runner import child_env, spawn

COUNTED = ("mmap", "munmap", "madvise", "mprotect", "brk", "mremap", "process_madvise")
WAITS = ("futex", "sched_yield")


def parse_strace_summary(text, names=COUNTED):
    """{syscall: calls} of the calls `names` from strace -c's table (every one present, 0 if absent)."""
    counts = dict.fromkeys(names, 0)
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in counts:
            try:
                counts[parts[-1]] = int(parts[3])
            except ValueError:
                pass
    return counts


def strace_run(w, alloc, ctx, strace, timeout, tmpdir):
    """The counts of one run of workload w under alloc, or None, and the run's status."""
    argv, stdin_path, extra = w.args(ctx.with_allocator(alloc))
    preload = alloc.preload if (alloc.preload and w.preloads()) else None
    out = os.path.join(tmpdir, "strace.txt")
    if os.path.exists(out):
        os.unlink(out)
    cmd = [strace, "-f", "--seccomp-bpf", "-c", "-o", out, "-e", "trace=" + ",".join(COUNTED + WAITS)]
    if preload:
        cmd += ["-E", f"LD_PRELOAD={preload}"]
    r = spawn(cmd + ["--"] + list(argv), child_env(extra, None), stdin_path, timeout, tmpdir)
    if not r.ok:
        return None, r.status
    try:
        with open(out) as f:
            return parse_strace_summary(f.read(), COUNTED + WAITS), "ok"
    except OSError:
        return None, "strace wrote no summary"


def count_syscalls(workloads, cases, ctx, timeout, tmpdir, log):
    """{(workload, allocator): {syscall: calls} or None} for the main-table workloads, and notes."""
    strace = shutil.which("strace")
    if not strace:
        return {}, ["strace not found (apt-get install strace): no system call counts"]
    res, notes = {}, []
    for w in workloads:
        if w.table != "main":
            continue
        for a in cases[w.name]:
            counts, status = strace_run(w, a, ctx, strace, timeout, tmpdir)
            res[(w.name, a.name)] = counts
            if counts is None:
                notes.append(f"syscall count of {w.name} under {a.name}: {status}")
                log(f"syscalls   {w.name:<12} {a.name:<18} FAIL: {status}")
            else:
                log(f"syscalls   {w.name:<12} {a.name:<18} {sum(counts[k] for k in COUNTED):>8} " +
                    " ".join(f"{k}={v}" for k, v in counts.items() if v))
    if res and all(v is None for v in res.values()):
        notes.append("strace could not trace here (ptrace not permitted?): no system call counts")
        return {}, notes
    return res, notes
