#!/usr/bin/env bash
# tests/run.sh: build slotmalloc and run its whole test suite.
#
#   bash tests/run.sh
#
# On a fresh Debian 12 machine, as root, it first installs what is missing
# (one apt-get update, then one apt-get install). Then it configures build/ in
# the repository root (Release), builds with 2 jobs, runs ctest, and ends with
# the line "N passed, N failed" counting ctest's tests. Exits non-zero when the
# install, the build or any test fails.
set -u

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

packages=(cmake gcc make libcriterion-dev libhwloc-dev pkg-config python3 sqlite3 git valgrind)

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
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update || { echo "run.sh: apt-get update failed" >&2; exit 1; }
  apt-get install -y --no-install-recommends "${packages[@]}" ||
    { echo "run.sh: apt-get install failed" >&2; exit 1; }
fi

# ---- build ---------------------------------------------------------------------------
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release || { echo "run.sh: cmake configure failed" >&2; exit 1; }
cmake --build build -j2 || { echo "run.sh: build failed" >&2; exit 1; }

# ---- test ------------------------------------------------------------------------------
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
ctest --test-dir build --output-on-failure 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

# ctest's summary: "NN% tests passed, F tests failed out of T"
summary="$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)"
if [[ -n "$summary" ]]; then
  failed="$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$summary")"
  total="$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$summary")"
  passed=$((total - failed))
else
  echo "run.sh: ctest ran no test (or printed no summary)" >&2
  passed=0
  failed=1
  [[ $rc -eq 0 ]] && rc=1
fi
if ((failed > 0)) && [[ $rc -eq 0 ]]; then rc=1; fi
echo "$passed passed, $failed failed"
exit "$rc"
