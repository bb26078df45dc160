#!/usr/bin/env bash
# perf/run.sh: compare slotmalloc with glibc, mimalloc, jemalloc and tcmalloc.
#
#   perf/run.sh [--quick] [--reps N] [--threads N] [--workloads a,b] [--allocators x,y]
#               [--no-callgrind] [--no-syscalls] [--no-install] [--no-build] [--build-dir DIR]
#               [--allocator NAME=/path/lib.so] [--program NAME="command"] [--out DIR] ...
#
# 1. installs the Debian packages it needs if they are missing (as root; as
#    another user it only warns, and missing allocators are skipped);
# 2. builds the project and the workloads (CMake, Release, tests off);
# 3. runs perf/harness.py, which runs every workload under every allocator,
#    interleaved and repeated, counts their memory system calls (strace), and
#    writes perf/results/latest.{csv,md,png,txt} and latest-rss.{csv,png}.
# Every option but --no-install and --no-build goes to harness.py (--help there).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
build="$root/build"
install=1
do_build=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-install) install=0 ;;
    --no-build) do_build=0 ;;
    --build-dir) build=$(realpath -m "$2"); shift ;;
    --build-dir=*) build=$(realpath -m "${1#*=}") ;;
    -h|--help)
      sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      echo
      exec python3 "$here/harness.py" --help ;;
    *) args+=("$1") ;;
  esac
  shift
done

# ---- 1. packages (Debian 12 names) -----------------------------------------
# build: cmake gcc make libc6-dev (libc.a for the static meter) libhwloc-dev
# allocators: libmimalloc-dev (libmimalloc.so.2), libjemalloc2, libtcmalloc-minimal4
# workloads and reports: libtalloc-dev python3 sqlite3 git gnuplot-nox valgrind
# the redis workload: redis-server (skipped with a note when it is missing)
# the memory system call counts: strace
packages=(cmake gcc make libc6-dev libhwloc-dev libmimalloc-dev libjemalloc2 libtcmalloc-minimal4
          libtalloc-dev python3 sqlite3 git gnuplot-nox valgrind strace redis-server)
if [ "$install" = 1 ] && command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for p in "${packages[@]}"; do
    if ! dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "perf: installing ${missing[*]}" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >&2
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    else
      echo "perf: not root, not installing: ${missing[*]} (what needs them is skipped)" >&2
    fi
  fi
fi

# ---- 2. build ------------------------------------------------------------------
if [ "$do_build" = 1 ]; then
  echo "perf: building in $build" >&2
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSLOTMALLOC_TESTS=OFF >&2
  cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" >&2
fi

# ---- 3. run ----------------------------------------------------------------------
exec python3 "$here/harness.py" --build-dir "$build" ${args[@]+"${args[@]}"}
