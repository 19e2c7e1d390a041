#!/usr/bin/env bash
# Configures (Ninja, warnings as errors), builds, and runs every suite with
# ctest: engine unit and model tests, then the FUSE integration tests (which
# mount for real and need root for their loop-device test). Any mount or loop
# device a killed test left under /tmp/snapdisk-it-* is cleaned on exit.
#   BUILD_DIR=build   where to build (default: build/)
#   CTEST_ARGS=...    extra ctest arguments, e.g. "-R Snapshots"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build_dir=${BUILD_DIR:-build}

cleanup_test_mounts() {
  local mp dev back
  # Deepest first: guest file systems inside a test directory before its FUSE mount.
  awk '$5 ~ /^\/tmp\/snapdisk-it-/ {print $5}' /proc/self/mountinfo | sort -r |
    while read -r mp; do
      echo "test.sh: cleaning leftover mount $mp" >&2
      umount "$mp" 2>/dev/null || fusermount3 -u -z "$mp" 2>/dev/null || umount -l "$mp" || true
    done
  if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null; then
    { losetup -l -n -O NAME,BACK-FILE 2>/dev/null || true; } | while read -r dev back; do
      case "$back" in
        /tmp/snapdisk-it-*) echo "test.sh: detaching leftover $dev ($back)" >&2; losetup -d "$dev" || true ;;
      esac
    done
  fi
}
trap cleanup_test_mounts EXIT
cleanup_test_mounts

# A build dir made with another generator cannot be reused.
if [ -f "$build_dir/CMakeCache.txt" ] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$build_dir/CMakeCache.txt"; then
  rm -rf "$build_dir"
fi
cmake -S . -B "$build_dir" -G Ninja -DSNAPDISK_WERROR=ON -DSNAPDISK_BUILD_TESTS=ON
cmake --build "$build_dir" -j "$(nproc)"
# AddressSanitizer + UndefinedBehaviorSanitizer run of the engine suite (unit,
# concurrency and model tests): any report fails the run. The integration
# suites run on the normal build below; TSan is a manual run, see
# docs/testing.md (Debian's RocksDB is not TSan-instrumented).
if [ "${SNAPDISK_SKIP_ASAN:-0}" != 1 ]; then
  asan_dir=${build_dir}-asan
  cmake -S . -B "$asan_dir" -G Ninja -DSNAPDISK_SANITIZE=address -DCMAKE_BUILD_TYPE=Debug \
    -DSNAPDISK_WERROR=ON -DSNAPDISK_BUILD_TESTS=ON
  cmake --build "$asan_dir" -j "$(nproc)" --target engine_tests
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    SNAPDISK_MODEL_OPS=1000 "$asan_dir/tests/engine/engine_tests" --gtest_brief=1
fi

# -j1: integration tests are RUN_SERIAL anyway; engine tests are quick.
# shellcheck disable=SC2086
ctest --test-dir "$build_dir" --output-on-failure -j1 ${CTEST_ARGS:-}

