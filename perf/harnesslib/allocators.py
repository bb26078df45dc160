"""The allocators under comparison: one table, and how to find each one on this machine."""
import os
import subprocess
from dataclasses import dataclass

MULTIARCH = "/usr/lib/x86_64-linux-gnu"


@dataclass(frozen=True)
class AllocatorSpec:
    """One row of the allocator table.

    An allocator reaches a workload in one of three ways: nothing (the system
    allocator), LD_PRELOAD of a library (`soname` searched on the system, or
    `built` in the build folder), or the statically linked `-smstatic` binaries
    (`static`, present when `built` is)."""

    name: str
    color: str  # its bars in the chart
    expect: str = ""  # prefix of the malloc= value the workloads print under it
    soname: str = ""  # a system library to preload
    package: str = ""  # the Debian package of that library (install hint, versions in the report)
    built: str = ""  # a file of the build folder it needs (the library to preload unless static)
    built_hint: str = ""  # added to the "not built" note
    static: bool = False  # use the <workload>-smstatic binaries


ALLOCATORS = [
    AllocatorSpec("glibc", "#7f7f7f", expect="libc.so", package="libc6"),
    AllocatorSpec("slotmalloc", "#d62728", expect="libslotmalloc", built="libslotmalloc.so"),
    AllocatorSpec("slotmalloc-static", "#ff9896", static=True, built="perf/pair-smstatic",
                  built_hint=" (libslotmalloc.a)"),
    AllocatorSpec("mimalloc", "#2ca02c", expect="libmimalloc", soname="libmimalloc.so.2",
                  package="libmimalloc2.0"),
    AllocatorSpec("jemalloc", "#1f77b4", expect="libjemalloc", soname="libjemalloc.so.2", package="libjemalloc2"),
    AllocatorSpec("tcmalloc", "#9467bd", expect="libtcmalloc", soname="libtcmalloc_minimal.so.4",
                  package="libtcmalloc-minimal4"),
]


@dataclass
class Allocator:
    """An allocator as found on this machine: what to preload, or why it is missing."""

    name: str
    color: str
    preload: str | None = None  # path of the library to LD_PRELOAD
    static: bool = False  # use the <workload>-smstatic binaries
    expect: str = ""  # prefix of the malloc= value the workloads print
    note: str = ""  # why it is missing, if it is

    @property
    def available(self):
        return not self.note

    def malloc_ok(self, origin):
        """Whether a workload's malloc= value names this allocator."""
        if self.static:
            return origin.endswith("-smstatic") or origin == "main-program"
        return origin.startswith(self.expect)


def find_library(soname):
    """The path of a shared library by soname: the multiarch folder, then ldconfig."""
    path = os.path.join(MULTIARCH, soname)
    if os.path.exists(path):
        return path
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    except OSError:
        return None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith(soname + " ") and "=>" in line:
            return line.split("=>", 1)[1].strip()
    return None


def locate(spec, build):
    """The Allocator of one table row, with the build folder `build`."""
    alloc = Allocator(spec.name, spec.color, static=spec.static, expect=spec.expect)
    if spec.built:
        path = os.path.join(build, spec.built)
        if not os.path.exists(path):
            alloc.note = f"{path} not built{spec.built_hint}"
        elif not spec.static:
            alloc.preload = path
    elif spec.soname:
        alloc.preload = find_library(spec.soname)
        if not alloc.preload:
            alloc.note = f"{spec.soname} not found (apt-get install {spec.package})"
    return alloc


# colours of the allocators given by --allocator, in turn
EXTRA_COLORS = ["#ff7f0e", "#17becf", "#bcbd22", "#8c564b", "#e377c2", "#7f7f00"]


def custom_allocator(spec, index):
    """The Allocator of an --allocator option: 'name=/path/lib.so', preloaded; its workloads must report
    a malloc from a file of that name."""
    name, sep, path = spec.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise ValueError(f"--allocator wants name=/path/lib.so, not {spec!r}")
    path = os.path.abspath(path)
    alloc = Allocator(name, EXTRA_COLORS[index % len(EXTRA_COLORS)], preload=path, expect=os.path.basename(path))
    if not os.path.isfile(path):
        alloc.note = f"{path} not found"
    return alloc


def discover_allocators(build, extra=()):
    """Every allocator of the table, found or with the note why not, then those of --allocator (`extra`)."""
    found = [locate(spec, build) for spec in ALLOCATORS]
    for i, spec in enumerate(extra):
        a = custom_allocator(spec, i)
        if a.name in {f.name for f in found}:
            raise ValueError(f"--allocator {a.name}: that name is taken")
        found.append(a)
    return found
