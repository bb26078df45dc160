#!/usr/bin/env bash
# install_check.sh BUILD_DIR: installs the build into a temporary prefix, then
# builds a small consumer three ways (pkg-config; CMake find_package with the
# shared and with the static library) and runs each: its malloc must be
# slotmalloc's. Registered with ctest as install_check.
set -euo pipefail
build=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null

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

pc=$(dirname "$(find "$tmp/prefix" -name slotmalloc.pc | head -n 1)")
libdir=$(PKG_CONFIG_PATH=$pc pkg-config --variable=libdir slotmalloc)
cc "$tmp/use.c" $(PKG_CONFIG_PATH=$pc pkg-config --cflags --libs slotmalloc) -Wl,-rpath,"$libdir" -o "$tmp/use_pc"
"$tmp/use_pc"

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
cmake -S "$tmp/consumer" -B "$tmp/consumer/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/consumer/build" >/dev/null
"$tmp/consumer/build/use_shared"
"$tmp/consumer/build/use_static"
echo "install_check: pkg-config, find_package shared and static: all use slotmalloc"
