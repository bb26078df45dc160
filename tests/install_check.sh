#!/usr/bin/env bash
# install_check.sh BUILD_DIR: what a user who installs slotmalloc gets. Installs
# the build into a temporary prefix, then checks:
#   - a consumer built three ways (pkg-config; CMake find_package with the
#     shared and with the static library) runs with slotmalloc's malloc;
#   - pkg-config --static links libslotmalloc.a (no NEEDED libslotmalloc.so),
#     the dynamic link with an rpath runs;
#   - the slotmalloc wrapper: preloads the library by absolute path (also in a
#     child exec'd after a chdir), appends to LD_PRELOAD, maps each flag to its
#     SLOTMALLOC_* variable (--stats prints statistics, --no-abort keeps a
#     double free from aborting), returns the program's status, refuses bad
#     options and a missing hardened library with status 125;
#   - a parent CMake project builds and links slotmalloc by add_subdirectory;
#   - the man pages are installed and lint clean (groff -ww); slotmalloc(3)
#     names every option of alloc/options.c; LICENSE is installed.
# Registered with ctest as install_check.
# shellcheck disable=SC2046,SC2086,SC2013 # $(pkg-config ...), $args: split on purpose
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null
fail() {
  echo "install_check: FAIL: $*" >&2
  exit 1
}
# a sanitizer build's archive needs the sanitizer's runtime at the link
san=$(sed -n 's/^SLOTMALLOC_SANITIZE:STRING=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
cflags=()
[ -z "$san" ] || cflags=("-fsanitize=$san")

cat >"$tmp/use.c" <<'C'
#include <slotmalloc.h>
#include <stdio.h>
#include <stdlib.h>
int main(void) {
  void *p = malloc(40);
  int ok = sm_handle_of(p) != 0 && sm_usable_size(p) >= 40;
  free(p);
  puts(ok ? "ok" : "malloc is not slotmalloc's");
  return !ok;
}
C

# ---- pkg-config: shared with an rpath; --static: the archive, no NEEDED .so ----
pc=$(dirname "$(find "$prefix" -name slotmalloc.pc | head -n 1)")
export PKG_CONFIG_PATH=$pc
libdir=$(pkg-config --variable=libdir slotmalloc)
cc "${cflags[@]}" "$tmp/use.c" $(pkg-config --cflags --libs slotmalloc) -Wl,-rpath,"$libdir" -o "$tmp/use_pc"
"$tmp/use_pc" >/dev/null || fail "pkg-config shared link does not use slotmalloc"
grep -q 'NEEDED.*libslotmalloc\.so' <<<"$(readelf -d "$tmp/use_pc")" || fail "pkg-config --libs: no NEEDED libslotmalloc.so"
cc "${cflags[@]}" "$tmp/use.c" $(pkg-config --static --cflags --libs slotmalloc) -o "$tmp/use_pc_static"
if grep -q 'NEEDED.*libslotmalloc' <<<"$(readelf -d "$tmp/use_pc_static")"; then
  fail "pkg-config --static still links libslotmalloc.so: $(pkg-config --static --libs slotmalloc)"
fi
"$tmp/use_pc_static" >/dev/null || fail "pkg-config --static link does not use slotmalloc"
# a program that calls malloc only through libc (strdup) still gets slotmalloc's
cat >"$tmp/indirect.c" <<'C'
#include <string.h>
int main(void) { return strdup("x") == 0; }
C
cc "${cflags[@]}" "$tmp/indirect.c" $(pkg-config --static --libs slotmalloc) -o "$tmp/indirect_static"
grep -q ' T malloc$' <<<"$(nm "$tmp/indirect_static")" || fail "pkg-config --static: malloc not linked in when called only by libc"
echo "install_check: pkg-config: shared (rpath) and --static (libslotmalloc.a, no NEEDED .so) link and run"

# ---- CMake find_package -----------------------------------------------------------
mkdir "$tmp/consumer"
cat >"$tmp/consumer/CMakeLists.txt" <<C
cmake_minimum_required(VERSION 3.18)
project(consumer C)
find_package(slotmalloc REQUIRED)
add_executable(use_shared $tmp/use.c)
target_link_libraries(use_shared slotmalloc::slotmalloc)
add_executable(use_static $tmp/use.c)
target_link_libraries(use_static slotmalloc::slotmalloc_static)
C
cmake -S "$tmp/consumer" -B "$tmp/consumer/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$tmp/consumer/build" >/dev/null
"$tmp/consumer/build/use_shared" >/dev/null || fail "find_package: shared"
"$tmp/consumer/build/use_static" >/dev/null || fail "find_package: static"
echo "install_check: find_package shared and static: both use slotmalloc"

# ---- the wrapper ---------------------------------------------------------------------
wrap=$prefix/bin/slotmalloc
[ -x "$wrap" ] || fail "bin/slotmalloc not installed"
real_libdir=$(cd -P "$prefix/lib" && pwd)
lib=$("$wrap" --print-library)
case $lib in
  "$real_libdir"/libslotmalloc.so*) ;;
  *) fail "the wrapper preloads '$lib', not the installed library in $real_libdir" ;;
esac
# the child's maps name the installed library by its absolute path, also in a
# process exec'd after a chdir (sh: cd, then exec)
maps=$(cd "$tmp" && "$wrap" sh -c 'cd / && exec cat /proc/self/maps')
grep -q " $real_libdir/libslotmalloc\.so" <<<"$maps" || fail "after chdir + exec, libslotmalloc.so is not mapped"
# from another directory, through a symbolic link to the wrapper
ln -s "$wrap" "$tmp/sm-link"
maps=$(cd / && "$tmp/sm-link" cat /proc/self/maps)
grep -q " $real_libdir/libslotmalloc\.so" <<<"$maps" || fail "through a symlink, libslotmalloc.so is not mapped"
# appends to LD_PRELOAD
other=$(ldd "$(command -v cat)" | awk '/libc\.so/ { print $3 }')
out=$(LD_PRELOAD=$other "$wrap" printenv LD_PRELOAD)
[ "$out" = "$other:$lib" ] || fail "LD_PRELOAD: got '$out', want '$other:$lib'"
# exit status: the program's
set +e
"$wrap" sh -c 'exit 7'
rc=$?
set -e
[ "$rc" = 7 ] || fail "exit status $rc, want 7"
# each flag sets its variable
env_out=$(env -u SLOTMALLOC_STATS "$wrap" --stats=json --stats-file=/dev/null --prof-sample=4096 \
  --prof-file "$tmp/heap.%p" --leaks --no-abort --purge-delay=5 --background-purge --large-cache=8 \
  --numa --verbose=2 -- printenv 2>/dev/null | grep '^SLOTMALLOC_' | sort)
want="SLOTMALLOC_ABORT_ON_ERROR=0
SLOTMALLOC_BACKGROUND_PURGE=1
SLOTMALLOC_LARGE_CACHE_MB=8
SLOTMALLOC_LEAKS=1
SLOTMALLOC_NUMA=1
SLOTMALLOC_PROF_FILE=$tmp/heap.%p
SLOTMALLOC_PROF_SAMPLE=4096
SLOTMALLOC_PURGE_DELAY_MS=5
SLOTMALLOC_STATS=json
SLOTMALLOC_STATS_FILE=/dev/null
SLOTMALLOC_VERBOSE=2"
[ "$env_out" = "$want" ] || fail "flags to variables: got
$env_out
want
$want"
# --stats prints the statistics at exit; without it, nothing
cat >"$tmp/alloc.c" <<'C'
#include <stdlib.h>
int main(int argc, char **argv) {
  (void)argv;
  void *volatile p = malloc(100);
  free(p);
  if (argc > 1) free(p); /* a double free */
  return 0;
}
C
cc -O0 -fno-builtin "$tmp/alloc.c" -o "$tmp/alloc"
err=$("$wrap" --stats "$tmp/alloc" 2>&1 >/dev/null)
grep -qi 'slotmalloc.*stat' <<<"$err" || fail "--stats printed no statistics: '$err'"
err=$(env -u SLOTMALLOC_STATS "$wrap" "$tmp/alloc" 2>&1 >/dev/null)
[ -z "$err" ] || fail "without --stats the program printed '$err'"
# a double free aborts; with --no-abort it is reported and the program goes on
set +e
err=$(env -u SLOTMALLOC_ABORT_ON_ERROR "$wrap" "$tmp/alloc" double 2>&1)
rc=$?
set -e
if [ "$rc" = 0 ] || ! grep -q 'slotmalloc: double free' <<<"$err"; then
  fail "a double free under the wrapper: status $rc, '$err'"
fi
err=$("$wrap" --no-abort "$tmp/alloc" double 2>&1) || fail "--no-abort: the double free still aborts: '$err'"
grep -q 'slotmalloc: double free' <<<"$err" || fail "--no-abort: no report: '$err'"
# errors of the wrapper itself: status 125 and one line
for args in "--bogus true" "--hardened true" "" "--prof-sample"; do
  set +e
  err=$("$wrap" $args 2>&1)
  rc=$?
  set -e
  if [ "$rc" != 125 ] || ! grep -q '^slotmalloc: ' <<<"$err"; then
    fail "slotmalloc $args: status $rc, '$err' (want 125 and a message)"
  fi
done
# --hardened picks libslotmalloc-hardened.so once there is one (a copy, here)
cp "$real_libdir/libslotmalloc.so.0" "$real_libdir/libslotmalloc-hardened.so"
[ "$("$wrap" --hardened --print-library)" = "$real_libdir/libslotmalloc-hardened.so" ] || fail "--hardened"
rm "$real_libdir/libslotmalloc-hardened.so"
grep -q -- '--no-abort' <<<"$("$wrap" --help)" || fail "--help"
grep -q '^slotmalloc [0-9]' <<<"$("$wrap" --version)" || fail "--version"
# the build tree's wrapper preloads the build tree's library
blib=$("$build/slotmalloc" --print-library)
[ "$blib" = "$(cd -P "$build" && pwd)/libslotmalloc.so.0" ] || fail "the build tree's wrapper preloads '$blib'"
echo "install_check: the wrapper preloads $lib by absolute path (also after chdir + exec), flags map to options"

# ---- add_subdirectory from a parent project -----------------------------------------------
mkdir "$tmp/parent"
ln -s "$src" "$tmp/parent/slotmalloc"
cat >"$tmp/parent/CMakeLists.txt" <<C
cmake_minimum_required(VERSION 3.18)
project(parent C)
add_subdirectory(slotmalloc)
add_executable(use_sub $tmp/use.c)
target_link_libraries(use_sub slotmalloc::slotmalloc)
add_executable(use_sub_static $tmp/use.c)
target_link_libraries(use_sub_static slotmalloc_static)
C
cmake -S "$tmp/parent" -B "$tmp/parent/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
[ ! -e "$tmp/parent/build/slotmalloc/tests" ] || fail "add_subdirectory: the tests are built by default in a parent project"
cmake --build "$tmp/parent/build" -j2 --target use_sub use_sub_static >/dev/null
"$tmp/parent/build/use_sub" >/dev/null || fail "add_subdirectory: shared"
"$tmp/parent/build/use_sub_static" >/dev/null || fail "add_subdirectory: static"
echo "install_check: add_subdirectory(slotmalloc) from a parent project builds and links (tests off)"

# ---- man pages, LICENSE --------------------------------------------------------------------
for page in man1/slotmalloc.1 man3/slotmalloc.3; do
  f=$(find "$prefix" -path "*/man/$page" | head -n 1)
  [ -n "$f" ] || fail "$page not installed"
  if command -v groff >/dev/null; then
    lint=$(groff -man -Tutf8 -ww -z "$f" 2>&1)
    [ -z "$lint" ] || fail "$page: groff warnings: $lint"
  else
    fail "groff not installed (apt-get install groff-base): cannot lint the man pages"
  fi
done
# every option in alloc/options.c's table is in slotmalloc(3)
for name in $(sed -n 's/^ *X("\([A-Z_]*\)".*/\1/p' "$src/alloc/options.c"); do
  grep -q "SLOTMALLOC_$name" "$src/man/slotmalloc.3" || fail "SLOTMALLOC_$name is not in man/slotmalloc.3"
done
grep -q 'MIT License' "$src/LICENSE" || fail "no LICENSE"
[ -n "$(find "$prefix" -name LICENSE)" ] || fail "LICENSE not installed"
echo "install_check: man pages installed and lint clean, every option documented, LICENSE there"
