"""Instructions per malloc+free pair under callgrind: (Ir(2N) - Ir(N)) / N cancels start-up and exit."""
import os
import shutil

from .runner import child_env, spawn

SIZES = [16, 256]  # bytes per pair


def callgrind_ir(argv, env, alloc, timeout, tmpdir):
    """The instructions callgrind counted for one run, or None, and the run's status."""
    cmd = [shutil.which("valgrind"), "--tool=callgrind", "--callgrind-out-file=/dev/null"] + argv
    r = spawn(cmd, env, None, timeout, tmpdir)
    if not r.ok:
        return None, r.status
    origin = r.fields.get("malloc", "")
    if not alloc.malloc_ok(origin):
        return None, f"wrong malloc in use: {origin or 'no result line'}"
    for line in r.stderr.splitlines():
        if "Collected :" in line:
            return int(line.split("Collected :", 1)[1].split()[0]), "ok"
    return None, "no 'Collected' line from callgrind"


def run_callgrind(allocs, ctx, sizes, n, timeout, tmpdir, log):
    """{(allocator, size): instructions per pair or None}, and notes."""
    res, notes = {}, []
    for a in allocs:
        binary = ctx.with_allocator(a).bin("pair")
        for size in sizes:
            irs = []
            for count in (n, 2 * n):
                argv = [binary, "-z", str(size), "-n", str(count)]
                ir, status = callgrind_ir(argv, child_env({}, a.preload), a, timeout, tmpdir)
                if ir is None:
                    notes.append(f"callgrind {a.name} {size} B: {status}")
                    break
                irs.append(ir)
            res[(a.name, size)] = (irs[1] - irs[0]) / n if len(irs) == 2 else None
            val = res[(a.name, size)]
            log(f"callgrind  pair-{size:<5} {a.name:<18} " + (f"{val:.1f} instructions/pair" if val else "FAIL"))
    return res, notes


def count_instructions(allocs, ctx, quick, timeout, tmpdir, log):
    """The callgrind counts of every allocator whose pair binary exists, and notes."""
    if not shutil.which("valgrind"):
        return {}, ["valgrind not found (apt-get install valgrind): no instruction counts"]
    with_pair = [a for a in allocs if os.path.exists(ctx.with_allocator(a).bin("pair"))]
    n = 20000 if quick else 200000
    return run_callgrind(with_pair, ctx, SIZES, n, max(timeout, 300), tmpdir, log)
