#!/usr/bin/env bash
# fastpath_budget.sh SO_PATH [BUDGET_FILE]: counts the instructions of a hot malloc+free pair
# under LD_PRELOAD with callgrind (deterministic, unlike time) and fails when
# the count grows past the budget in BUDGET_FILE (default fastpath_budget.txt;
# the hardened build's: fastpath_budget_hardened.txt). Loops of N and 2N
# pairs: (Ir(2N) - Ir(N)) / N cancels start-up and exit. Exit 77 (skipped)
# without valgrind.
set -euo pipefail
so=$1
here=$(cd "$(dirname "$0")" && pwd)
budget_file=${2:-$here/fastpath_budget.txt}
command -v valgrind >/dev/null || { echo "fastpath_budget: valgrind is not installed: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/pair.c" <<'C'
#include <stdlib.h>
int main(int argc, char **argv) {
  long n = atol(argv[1]);
  size_t size = (size_t)atol(argv[2]);
  for (long i = 0; i < n; i++) {
    void *volatile p = malloc(size);
    free(p);
  }
  return 0;
}
C
cc -O2 "$tmp/pair.c" -o "$tmp/pair"
count() { # N size -> instructions of the whole run
  LD_PRELOAD=$so valgrind --tool=callgrind --callgrind-out-file=/dev/null "$tmp/pair" "$1" "$2" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
status=0
while read -r name size budget; do
  case "$name" in ''|'#'*) continue ;; esac
  a=$(count 100000 "$size")
  b=$(count 200000 "$size")
  per=$(( (b - a) / 100000 ))
  if [ "$per" -gt "$budget" ]; then
    echo "fastpath_budget: $name: $per instructions per malloc+free pair, over the budget of $budget"
    status=1
  else
    echo "fastpath_budget: $name: $per instructions per malloc+free pair (budget $budget)"
  fi
done <"$budget_file"
exit $status
