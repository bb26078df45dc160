"""What to run: the allocators and workloads chosen on the command line, and the cases that can run."""
import os
import subprocess
from dataclasses import dataclass, field

from .workloads import WORKLOADS, Context, program_workload


class CannotRun(Exception):
    """Nothing can run, or the command line is wrong: the message says why (exit status 2)."""


@dataclass
class Plan:
    allocs: list  # the allocators found and chosen
    baseline: str  # the allocator ratios refer to
    workloads: list  # the workloads with at least one case
    cases: dict  # {workload name: [Allocator]}
    ctx: Context
    notes: list = field(default_factory=list)  # what was skipped and why

    def allocator_count(self):
        return len({a.name for w in self.workloads for a in self.cases[w.name]})


def names_from(option):
    """The names of a comma-separated option."""
    return [x.strip() for x in option.split(",") if x.strip()]


def choose_allocators(found, option):
    """The allocators the --allocators option names (all when it is not given)."""
    if not option:
        return found
    want = names_from(option)
    known = {a.name for a in found}
    bad = [x for x in want if x not in known]
    if bad:
        raise CannotRun(f"unknown allocator(s): {', '.join(bad)}; known: {', '.join(sorted(known))}")
    return [a for a in found if a.name in want]


def program_workloads(specs):
    """The workloads of the --program options ('name=command')."""
    try:
        progs = [program_workload(s) for s in specs or ()]
    except ValueError as e:
        raise CannotRun(str(e))
    taken = {w.name for w in WORKLOADS}
    for p in progs:
        if p.name in taken:
            raise CannotRun(f"--program {p.name}: that name is taken (--list shows the workloads)")
        taken.add(p.name)
    return progs


def choose_workloads(option, programs=()):
    """The workloads the --workloads option names, then the --program ones.

    Without --workloads: every workload, or only the --program ones when there are some."""
    if not option:
        return list(programs) if programs else WORKLOADS
    every = WORKLOADS + list(programs)
    want = names_from(option)
    names = {w.name for w in every}
    bad = [x for x in want if x not in names]
    if bad:
        raise CannotRun(f"unknown workload(s): {', '.join(bad)}; --list shows them")
    return [w for w in WORKLOADS if w.name in want] + list(programs)


def choose_baseline(allocs, wanted, notes):
    """wanted if it runs, else the first allocator, with a note."""
    if wanted in {a.name for a in allocs}:
        return wanted
    fallback = allocs[0].name
    notes.append(f"ratios are to {fallback}: the baseline {wanted} is not in this run")
    return fallback


def usable_allocators(w, ctx, allocs, note):
    """The allocators w can run under here: its program exists and its input can be made."""
    usable, missing = [], []
    for a in w.allocators(allocs):
        try:
            argv0 = w.args(ctx.with_allocator(a))[0][0]
        except (OSError, subprocess.CalledProcessError) as e:
            note(f"{w.name} skipped: cannot prepare its input ({e})")
            return []
        if not argv0 or not os.path.exists(argv0):
            missing.append((a, argv0 or "its program"))
            continue
        usable.append(a)
    if missing and not usable and len({m for _, m in missing}) == 1:
        note(f"{w.name} skipped: {missing[0][1]} not found")
    else:
        for a, m in missing:
            note(f"{w.name} under {a.name} skipped: {m} not found")
    return usable


def make_plan(args, build, found, log):
    """The Plan of this run; raises CannotRun."""
    notes = []

    def note(msg):
        notes.append(msg)
        log("note: " + msg)

    chosen = choose_allocators(found, args.allocators)
    for a in chosen:
        if not a.available:
            note(f"{a.name} skipped: {a.note}")
    allocs = [a for a in chosen if a.available]
    if not allocs:
        raise CannotRun("no allocator to run")
    baseline = choose_baseline(allocs, args.baseline, notes)
    workloads = choose_workloads(args.workloads, program_workloads(args.program))
    jobs = os.path.join(build, "perf", "jobs")
    os.makedirs(jobs, exist_ok=True)
    ctx = Context(build, args.scale, args.threads, args.quick, jobs)
    if not os.path.exists(ctx.meter):
        raise CannotRun(f"{ctx.meter} not found: build the project first (perf/run.sh does)")
    cases = {w.name: usable_allocators(w, ctx, allocs, note) for w in workloads}
    workloads = [w for w in workloads if cases[w.name]]
    if not workloads:
        raise CannotRun("no workload to run (is the build folder right? " + build + ")")
    return Plan(allocs, baseline, workloads, {w.name: cases[w.name] for w in workloads}, ctx, notes)
