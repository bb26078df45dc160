#!/usr/bin/env bash
# memcheck.sh: slotmalloc under valgrind's memcheck, both ways (README, "valgrind").
#
#   memcheck.sh own VG_PROG VG_PROG_STATIC PLAIN SO
#       the valgrind build (-DSLOTMALLOC_VALGRIND=ON), run with
#       --soname-synonyms=somalloc=NONE so that slotmalloc stays the allocator:
#       memcheck must report what each mode of vg_prog does wrong (use after
#       free, a leak, reads after an arena close), and nothing else (free() of
#       arena objects, sm_handle_of(malloc(64)), a clean run); VG_PROG_STATIC
#       (linked with libslotmalloc.a: there --soname-synonyms=somalloc=nolib)
#       the same for a few modes; PLAIN preloaded.
#   memcheck.sh replaced PLAIN SO
#       the default build preloaded under plain memcheck, which replaces malloc
#       with its own: the program runs cleanly.
# Exit 0 when every check holds, 1 otherwise, 77 (skipped) without valgrind.
set -u
command -v valgrind >/dev/null || { echo "memcheck.sh: valgrind is not installed: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
out=$tmp/out

# run NAME EXPECTED_STATUS COMMAND...: runs under memcheck, output in $out
run() {
  local name=$1 want=$2 status
  shift 2
  "$@" >"$out" 2>&1
  status=$?
  echo "memcheck.sh: $name: exit status $status"
  if [ "$status" != "$want" ]; then
    echo "memcheck.sh: FAILED: $name: exit status $status, expected $want"
    failed=1
    sed 's/^/    /' "$out"
  fi
  current=$name
}
# has TEXT / has_re REGEX / lacks TEXT: a check on the output of the last run
has() {
  if ! grep -qF -- "$1" "$out"; then
    echo "memcheck.sh: FAILED: $current: the output lacks: $1"
    failed=1
    sed 's/^/    /' "$out"
  fi
}
has_re() {
  if ! grep -qE -- "$1" "$out"; then
    echo "memcheck.sh: FAILED: $current: the output lacks: $1"
    failed=1
    sed 's/^/    /' "$out"
  fi
}
lacks() {
  if grep -qF -- "$1" "$out"; then
    echo "memcheck.sh: FAILED: $current: the output has: $1"
    failed=1
    sed 's/^/    /' "$out"
  fi
}
# an "allocs" count of memcheck's heap summary of at least $1
allocs_at_least() {
  local n
  n=$(sed -n 's/.*total heap usage: \([0-9,]*\) allocs.*/\1/p' "$out" | tr -d ,)
  if [ -z "$n" ] || [ "$n" -lt "$1" ]; then
    echo "memcheck.sh: FAILED: $current: memcheck counted ${n:-no} allocations, expected at least $1"
    failed=1
  fi
}

vg=(valgrind --soname-synonyms=somalloc=NONE --leak-check=full --error-exitcode=99)
case "${1:-}" in
own)
  prog=$2 static=$3 plain=$4 so=$5
  run uaf 99 "${vg[@]}" "$prog" uaf
  has "Invalid read of size 1"
  has "10 bytes inside a block of size 64 free'd"
  has "ERROR SUMMARY: 1 errors"

  run leak 99 "${vg[@]}" "$prog" leak
  has "112 bytes in 1 blocks are definitely lost"
  has "3,072 bytes in 1 blocks are definitely lost"
  # the large object: "possibly" when a word of slotmalloc's metadata happens to
  # look like a pointer into it (memcheck's scan is conservative)
  has_re "1,048,576 bytes in 1 blocks are (definitely|possibly) lost"
  has "ERROR SUMMARY: 3 errors"

  run close 99 "${vg[@]}" "$prog" close
  has "0 bytes inside a block of size 48 free'd"
  has "5 bytes inside a block of size 1,048,576 free'd"
  has "ERROR SUMMARY: 2 errors"

  run arena_free 0 "${vg[@]}" "$prog" arena_free
  lacks "Invalid free"
  has "vg_prog: arena_free done"
  has "ERROR SUMMARY: 0 errors"

  run handle 0 "${vg[@]}" "$prog" handle
  has "vg_prog: handle done"
  has "ERROR SUMMARY: 0 errors"
  allocs_at_least 1 # memcheck saw slotmalloc's object

  run clean 0 "${vg[@]}" "$prog" clean
  has "vg_prog: clean done"
  has "ERROR SUMMARY: 0 errors"
  lacks "definitely lost: "
  allocs_at_least 3000

  # linked statically, slotmalloc's malloc is in the executable, which
  # somalloc=NONE names: a name that matches no library keeps it instead
  vgs=(valgrind --soname-synonyms=somalloc=nolib --leak-check=full --error-exitcode=99)
  run static_uaf 99 "${vgs[@]}" "$static" uaf
  has "10 bytes inside a block of size 64 free'd"
  has "ERROR SUMMARY: 1 errors"
  run static_leak 99 "${vgs[@]}" "$static" leak
  has "112 bytes in 1 blocks are definitely lost"
  has "3,072 bytes in 1 blocks are definitely lost"
  has "ERROR SUMMARY: 3 errors"
  run static_handle 0 "${vgs[@]}" "$static" handle
  has "vg_prog: handle done"
  has "ERROR SUMMARY: 0 errors"

  # preloaded into a plain program
  run plain_preloaded 0 env LD_PRELOAD="$so" "${vg[@]}" "$plain"
  has "plain: done (0)"
  has "ERROR SUMMARY: 0 errors"
  has "All heap blocks were freed"
  allocs_at_least 201
  ;;
replaced)
  plain=$2 so=$3
  # no synonym: memcheck's own malloc replaces slotmalloc's, which stays unused
  run replaced 0 env LD_PRELOAD="$so" valgrind --leak-check=full --error-exitcode=99 "$plain"
  has "plain: done (0)"
  has "ERROR SUMMARY: 0 errors"
  has "All heap blocks were freed"
  allocs_at_least 201
  ;;
*)
  echo "usage: memcheck.sh own VG_PROG VG_PROG_STATIC PLAIN SO | replaced PLAIN SO" >&2
  exit 2
  ;;
esac
if [ "$failed" = 0 ]; then echo "memcheck.sh: $1: every check holds"; fi
exit "$failed"
