#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS]: build the op-stream fuzzer with clang (libFuzzer,
# ASan, UBSan) into build-fuzz/, then fuzz the single-threaded target and the
# multi-threaded one, SECONDS in total (default 120: CI), split 45% / 55%.
# Exits non-zero on any finding (the crash input is in build-fuzz/artifacts/).
# A longer run: bash tests/fuzz/run.sh 3600; build only: bash tests/fuzz/run.sh 0
# FUZZ_CFLAGS adds flags to the target, e.g. FUZZ_CFLAGS=-DFUZZ_THREADS=3
set -u

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/tests/fuzz"
out="$root/build-fuzz"
total="${1:-120}"
jobs=2

CC="${CC:-clang}"
command -v "$CC" >/dev/null || { echo "run.sh: $CC not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
OBJCOPY="${OBJCOPY:-objcopy}"
command -v "$OBJCOPY" >/dev/null || OBJCOPY=llvm-objcopy

mkdir -p "$out/obj" "$out/artifacts" "$out/work-st" "$out/work-mt"

# ---- build -----------------------------------------------------------------------
# The library's sources (CMakeLists.txt SM_SOURCES) without preload/override.c:
# libFuzzer and ASan keep their own malloc. override.c is compiled too, and its
# standard names are renamed fz_* (objcopy), so the fuzzer calls them directly.
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
libflags="-std=gnu11 -O1 -g $san -fsanitize=fuzzer-no-link -I$root -I$root/include
  -Wall -Wextra -ftls-model=initial-exec -fno-builtin-malloc -fno-builtin-free -fno-builtin-calloc
  -fno-builtin-realloc -fno-stack-protector"
sources=$(sed -n '/^set(SM_SOURCES/,/^)/p' "$root/CMakeLists.txt" | grep -E '^\s+[a-z]+/[a-z_]+\.c' | tr -d ' ')
[[ -n "$sources" ]] || { echo "run.sh: no SM_SOURCES in CMakeLists.txt" >&2; exit 1; }

objs=()
pids=()
build_one() { # src obj
  $CC $libflags -c "$root/$1" -o "$2" || exit 1
}
for s in $sources; do
  o="$out/obj/$(basename "$s" .c).o"
  objs+=("$o")
  # rebuild when the source, a header of the library, or this script is newer
  if [[ -f "$o" && ! "$root/$s" -nt "$o" && ! "$0" -nt "$o" ]] &&
     ! find "$root/alloc" "$root/slots" "$root/include" -name '*.h' -newer "$o" | grep -q .; then
    continue
  fi
  build_one "$s" "$o" &
  pids+=($!)
  if ((${#pids[@]} >= jobs)); then wait "${pids[0]}" || { echo "run.sh: build failed ($s)" >&2; exit 1; }; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || { echo "run.sh: build failed" >&2; exit 1; }; done

renames=()
for n in malloc free cfree calloc realloc reallocarray posix_memalign aligned_alloc malloc_usable_size \
         memalign valloc pvalloc malloc_trim free_sized free_aligned_sized __libc_malloc __libc_free \
         __libc_calloc __libc_realloc __libc_reallocarray __libc_memalign __libc_valloc __libc_pvalloc; do
  renames+=(--redefine-sym "$n=fz_$n")
done
lib_objs=()
for o in "${objs[@]}"; do
  if [[ "$(basename "$o")" == override.o ]]; then
    "$OBJCOPY" "${renames[@]}" "$o" "$out/obj/override_fz.o" || { echo "run.sh: objcopy failed" >&2; exit 1; }
    lib_objs+=("$out/obj/override_fz.o")
  else
    lib_objs+=("$o")
  fi
done

for mode in st mt; do
  threads=1
  [[ $mode == mt ]] && threads=3
  $CC -std=gnu11 -O1 -g $san -fsanitize=fuzzer -I"$root/include" -Wall -Wextra -DFUZZ_THREADS=$threads ${FUZZ_CFLAGS:-} \
    "$here/fuzz_ops.c" "$here/fuzz_calls.c" "${lib_objs[@]}" -lpthread -o "$out/fuzz_$mode" ||
    { echo "run.sh: build of fuzz_$mode failed" >&2; exit 1; }
done
echo "run.sh: built $out/fuzz_st and $out/fuzz_mt"
[[ "$total" == 0 ]] && exit 0   # run.sh 0: build only

# ---- run ---------------------------------------------------------------------------
export SLOTMALLOC_ABORT_ON_ERROR=0
export FUZZ_CAPTURE_DIR="$out"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
st_time=$((total * 45 / 100))
mt_time=$((total - st_time))
rc=0
for mode in st mt; do
  t=$st_time
  [[ $mode == mt ]] && t=$mt_time
  ((t < 1)) && t=1
  log="$out/fuzz_$mode.log"
  echo "run.sh: fuzzing $mode for $t s (log: $log)"
  rm -f "$out"/slotmalloc-fuzz-stderr.*
  "$out/fuzz_$mode" -max_total_time="$t" -max_len=4096 -rss_limit_mb=3072 -timeout=30 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/${mode}-" "$out/work-$mode" "$here/corpus" >"$log" 2>&1
  r=$?
  grep -E '^slotmalloc-fuzz: [0-9]+ operations|^stat::number_of_executed_units|^Done ' "$log"
  if ((r != 0)); then
    rc=1
    echo "run.sh: FINDING in mode $mode (exit $r); the end of the log:" >&2
    tail -n 60 "$log" >&2
    for f in "$out"/slotmalloc-fuzz-stderr.*; do
      [[ -s "$f" ]] && { echo "run.sh: stderr captured during the failing call ($f):" >&2; cat "$f" >&2; }
    done
    ls -t "$out"/artifacts/"$mode"-* 2>/dev/null | head -n 1 | sed 's/^/run.sh: crash input: /' >&2
  fi
done
if ((rc == 0)); then echo "run.sh: no finding"; fi
exit $rc
