"""What the markdown report says about the machine and the run, and the load average during it."""
import datetime
import os
import platform
import statistics
import subprocess

from .allocators import ALLOCATORS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# after the allocators' packages: the workloads' and the tools'
OTHER_PACKAGES = ("libtalloc2", "python3", "sqlite3", "gcc-12", "git", "valgrind", "strace", "redis-server")
ALLOCATOR_ENV_PREFIXES = ("MALLOC_", "MIMALLOC_", "SLOTMALLOC_", "TCMALLOC_", "JE_", "GLIBC_TUNABLES")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def package_versions():
    """'package version' of every installed package the run depends on."""
    versions = []
    for pkg in [s.package for s in ALLOCATORS if s.package] + list(OTHER_PACKAGES):
        try:
            v = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True)
            if v.returncode == 0 and v.stdout:
                versions.append(f"{pkg} {v.stdout}")
        except OSError:
            break
    return versions


def commit():
    """The short hash of HEAD, and whether tracked files have uncommitted changes."""
    try:
        g = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        if g.returncode != 0:
            return "unknown"
        rev = g.stdout.strip()
        d = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True)
        return rev + " (with uncommitted changes)" if d.stdout.strip() else rev
    except OSError:
        return "unknown"


def allocator_environment():
    """The variables that tune an allocator, as set for this run."""
    return [f"{k}={v}" for k, v in sorted(os.environ.items())
            if k.startswith(ALLOCATOR_ENV_PREFIXES) and k != "LD_PRELOAD"]


def topology(build_dir):
    """One line from build/perf/topology (hwloc): packages, cores, caches."""
    topo_bin = os.path.join(build_dir, "perf", "topology")
    if os.path.exists(topo_bin):
        try:
            t = subprocess.run([topo_bin], capture_output=True, text=True, timeout=30)
            if t.returncode == 0 and t.stdout.strip():
                return t.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    return "unknown (perf/bench/topology.c needs hwloc)"


def machine_meta(args, duration, load):
    """[(label, value)] for the head of the markdown report."""
    versions = package_versions()
    env = allocator_environment()
    return [
        ("date", datetime.datetime.now().strftime("%Y-%m-%d %H:%M")),
        ("machine", f"{cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}"),
        ("topology (hwloc)", topology(args.build_dir)),
        ("commit", commit()),
        ("build folder", os.path.abspath(args.build_dir) +
         ("" if os.path.abspath(args.build_dir).startswith(ROOT + os.sep) else " (outside this work tree: its library "
          "may be of another commit)")),
        ("mode", f"{'quick' if args.quick else 'full'}, {args.reps} reps, {args.threads} threads, "
                 f"run took {duration / 60:.1f} min"),
        ("packages", ", ".join(versions) if versions else "unknown"),
        ("allocator environment", " ".join(env) if env else "none (defaults)"),
        ("load average during the run", f"{load.mean:.1f} mean, {load.max:.1f} max, on {load.cpus} CPUs"),
    ]


class Load:
    """The 1-minute load average sampled before each run: mean, max, and the CPUs it compares to."""

    def __init__(self, samples):
        self.mean, self.max = (statistics.mean(samples), max(samples)) if samples else (0.0, 0.0)
        self.cpus = len(os.sched_getaffinity(0))

    def busy_note(self, threads):
        """A note when the machine was busier than its CPUs, else None."""
        if self.mean <= self.cpus + 0.5:
            return None
        return (f"the machine was busy: load average {self.mean:.1f} on average (up to {self.max:.1f}) "
                f"on {self.cpus} CPUs, of which this harness makes at most {threads}. Wall times include "
                "waiting for a CPU; the CPU times are the more reliable ones in this run (--time cpu "
                "charts them)")
