#!/usr/bin/env bash
# tests/run.sh: build slotmalloc and run its whole test suite.
#
#   bash tests/run.sh            every stage below (about 14 minutes on 2 cores)
#   bash tests/run.sh --quick    the first stage only: gcc Release build + ctest
#
# On a fresh Debian 12 machine, as root, it first installs what is missing
# (one apt-get update, then one apt-get install). Then it runs, each in its own
# build directory of the repository root, 2 build jobs, going on after a
# failing stage:
#
#   gcc     build/        gcc, Release: ctest (the Criterion tests, their
#                         LD_PRELOAD variants, the single-process runners
#                         <name>_single, static link, install, instruction budget)
#   clang   build-clang/  clang, Release (perf programs included: they link
#                         against the handle API): ctest
#   ubsan   build-ubsan/  gcc, -DSLOTMALLOC_SANITIZE=undefined: ctest; every
#                         UBSan finding is fatal, so it fails its test
#   tsan    build-tsan/   clang, -DSLOTMALLOC_SANITIZE=thread: ctest runs the
#                         shim runners <name>_tsan (the threaded test files in
#                         one process each); any TSan report fails them
#   debug   build-debug/  -DSLOTMALLOC_DEBUG=ON (invariant checks): ctest
#                         (runs when CMakeLists.txt has the option)
#   hardened build-hardened/ -DSLOTMALLOC_HARDENED=ON (libslotmalloc-hardened):
#                         ctest, every test of the build (test_hardened's
#                         attacks, the hardened instruction budget, all the
#                         others against the hardened library), 2 at a time
#   valgrind build-valgrind/ -DSLOTMALLOC_VALGRIND=ON: only its test programs
#                         and the test valgrind_memcheck (tests/valgrind/)
#   fuzz    tests/fuzz/run.sh 120 (runs when the script exists)
#
# Counts: the tests of each ctest stage; 1 for the valgrind and fuzz stages; a stage whose
# configure or build fails counts 1 failed. It prints the time of each stage and
# ends with ONE line "N passed, N failed" summing all stages; exits non-zero
# when the install or anything else failed.
set -u

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $arg (use --quick)" >&2; exit 2 ;;
  esac
done

# clang + libclang-rt-14-dev: the clang and TSan stages (clang's sanitizer
# runtimes); gcc's libubsan1 comes with gcc. groff-base: the install check
# lints the man pages. google-perftools: google-pprof, which test_prof runs
# on slotmalloc's heap profiles.
packages=(cmake gcc make libcriterion-dev libhwloc-dev pkg-config python3 sqlite3 git valgrind
          clang libclang-rt-14-dev groff-base google-perftools)

# ---- dependencies ------------------------------------------------------------------
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} > 0)); then
  echo "run.sh: missing packages: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "run.sh: not root: install them first (apt-get install ${missing[*]})" >&2
    echo "0 passed, 1 failed"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update || { echo "run.sh: apt-get update failed" >&2; echo "0 passed, 1 failed"; exit 1; }
  apt-get install -y --no-install-recommends "${packages[@]}" ||
    { echo "run.sh: apt-get install failed" >&2; echo "0 passed, 1 failed"; exit 1; }
fi

# ---- stages --------------------------------------------------------------------------
total_passed=0
total_failed=0
report=()   # one line per stage: name, result, time
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# stage_end NAME PASSED FAILED START_SECONDS [NOTE]
stage_end() {
  local dt=$(($(date +%s) - $4))
  total_passed=$((total_passed + $2))
  total_failed=$((total_failed + $3))
  report+=("$(printf '%-7s %4d passed, %3d failed  %4d s  %s' "$1" "$2" "$3" "$dt" "${5:-}")")
  echo "run.sh: stage $1: $2 passed, $3 failed ($dt s)"
}

# ctest_stage NAME BUILD_DIR [cmake -D options...]: configure, build, ctest.
# STAGE_TARGETS (set for the call): build only these targets; STAGE_TESTS: run
# only the tests matching this ctest regular expression.
ctest_stage() {
  local name=$1 dir=$2
  shift 2
  local t0
  t0=$(date +%s)
  echo "==== run.sh: stage $name ($dir: $*)"
  if ! cmake -S . -B "$dir" "$@"; then
    echo "run.sh: $name: cmake configure failed" >&2
    stage_end "$name" 0 1 "$t0" "configure failed"
    return
  fi
  # shellcheck disable=SC2086 # STAGE_TARGETS: a list on purpose
  if ! cmake --build "$dir" -j2 ${STAGE_TARGETS:+--target $STAGE_TARGETS}; then
    echo "run.sh: $name: build failed" >&2
    stage_end "$name" 0 1 "$t0" "build failed"
    return
  fi
  ctest --test-dir "$dir" ${STAGE_TESTS:+-R "$STAGE_TESTS"} --output-on-failure 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  # ctest's summary: "NN% tests passed, F tests failed out of T"
  local summary passed failed total
  summary="$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)"
  if [[ -n "$summary" ]]; then
    failed="$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$summary")"
    total="$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$summary")"
    passed=$((total - failed))
    # ctest failed without a failed test (e.g. no test found): count it
    if ((failed == 0 && rc != 0)); then failed=1; fi
  else
    echo "run.sh: $name: ctest ran no test (or printed no summary)" >&2
    passed=0
    failed=1
  fi
  local failing
  failing="$(sed -n '/The following tests FAILED/,$p' "$log" | sed -nE 's/^[[:space:]]*[0-9]+ - ([^ ]+) .*/\1/p' |
    tr '\n' ' ')"
  stage_end "$name" "$passed" "$failed" "$t0" "${failing:+failing: $failing}"
}

# script_stage NAME COMMAND...: counts 1, passed when the command exits 0.
script_stage() {
  local name=$1 t0
  shift
  t0=$(date +%s)
  echo "==== run.sh: stage $name ($*)"
  if "$@"; then
    stage_end "$name" 1 0 "$t0"
  else
    stage_end "$name" 0 1 "$t0" "exit status $?"
  fi
}

ctest_stage gcc build -DCMAKE_BUILD_TYPE=Release

if ((!quick)); then
  CC=clang ctest_stage clang build-clang -DCMAKE_BUILD_TYPE=Release

  # UBSan with gcc: libslotmalloc.so then carries libubsan.so.1 as a
  # dependency, so the *_preloaded variants and test_preload (LD_PRELOAD of the
  # instrumented .so into uninstrumented programs: sqlite3, git, gcc) run as
  # they are, with no runtime to preload first (clang would link its UBSan
  # runtime into executables only, and the preloaded .so would miss it).
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    CC=gcc ctest_stage ubsan build-ubsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLOTMALLOC_SANITIZE=undefined \
    -DSLOTMALLOC_PERF=OFF

  CC=clang ctest_stage tsan build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLOTMALLOC_SANITIZE=thread \
    -DSLOTMALLOC_PERF=OFF

  if grep -q 'SLOTMALLOC_DEBUG' CMakeLists.txt; then
    ctest_stage debug build-debug -DCMAKE_BUILD_TYPE=Release -DSLOTMALLOC_DEBUG=ON -DSLOTMALLOC_PERF=OFF
  else
    echo "run.sh: stage debug skipped: CMakeLists.txt has no SLOTMALLOC_DEBUG option"
  fi

  # (two tests at a time: the suite, 43 tests, took 64 s so and the build 16 s
  # on the 2-core machine at load 10; the tests' times add up to ~120 s)
  CTEST_PARALLEL_LEVEL=2 \
    ctest_stage hardened build-hardened -DCMAKE_BUILD_TYPE=Release -DSLOTMALLOC_HARDENED=ON -DSLOTMALLOC_PERF=OFF

  valgrind_stage() {
    cmake -S . -B build-valgrind -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLOTMALLOC_VALGRIND=ON -DSLOTMALLOC_PERF=OFF &&
      cmake --build build-valgrind -j2 --target vg_prog vg_prog_static vg_plain &&
      ctest --test-dir build-valgrind -R '^valgrind_memcheck$' --no-tests=error --output-on-failure
  }
  script_stage valgrind valgrind_stage

  if [[ -f tests/fuzz/run.sh ]]; then
    script_stage fuzz bash tests/fuzz/run.sh 120
  else
    echo "run.sh: stage fuzz skipped: tests/fuzz/run.sh does not exist"
  fi
fi

echo "==== run.sh: stages"
printf '%s\n' "${report[@]}"
echo "$total_passed passed, $total_failed failed"
((total_failed == 0))
