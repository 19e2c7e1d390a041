#!/usr/bin/env bash
# Configures (Ninja, warnings as errors), builds, and runs every suite with
# ctest: engine unit and model tests, then the FUSE integration tests (which
# mount for real and need root for their loop-device test). Any mount or loop
# device a killed test left under /tmp/snapdisk-it-* is cleaned on exit.
#   BUILD_DIR=build   where to build (default: build/)
#   CTEST_ARGS=...    extra ctest arguments, e.g. "-R Snapshots"
#   SNAPDISK_SKIP_ASAN=1, SNAPDISK_SKIP_TSAN=1  skip a sanitizer stage
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
# AddressSanitizer + UndefinedBehaviorSanitizer: the engine suite (unit,
# concurrency and model tests), then the whole integration suite against an
# ASan+UBSan daemon and CLI (the test binary is the normal build's). Any
# report fails the run: the daemon aborts on one (its exit status fails the
# test's clean-unmount check) and writes it to $asan_dir/reports/, which must
# stay empty (a daemon a test kills cannot report through its exit status).
# Leak checking is on, so a daemon that leaks at unmount fails too.
if [ "${SNAPDISK_SKIP_ASAN:-0}" != 1 ]; then
  asan_dir=${build_dir}-asan
  cmake -S . -B "$asan_dir" -G Ninja -DSNAPDISK_SANITIZE=address -DCMAKE_BUILD_TYPE=Debug \
    -DSNAPDISK_WERROR=ON -DSNAPDISK_BUILD_TESTS=ON
  cmake --build "$asan_dir" -j "$(nproc)" --target engine_tests snapdisk
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    SNAPDISK_MODEL_OPS=1000 "$asan_dir/tests/engine/engine_tests" --gtest_brief=1
fi

# ThreadSanitizer: the engine suite (its 64 KiB-block data tests, a shorter
# model test) and the concurrency-heavy integration tests against a TSan-built
# daemon (the test binary is the normal build's). Any report fails the stage:
# every TSan process writes its reports to $tsan_dir/reports/ (a daemon killed
# by a test cannot report through its exit code) and exits 66 after one.
# -O1 -g1 instead of -O0 -g: half the compile time and faster tests, and
# reports still have file:line. Suppressions (RocksDB internals only):
# tests/sanitizers/tsan.supp; see docs/testing.md. ~4-5 min on 2 cores.
if [ "${SNAPDISK_SKIP_TSAN:-0}" != 1 ]; then
  tsan_dir=${build_dir}-tsan
  cmake -S . -B "$tsan_dir" -G Ninja -DSNAPDISK_SANITIZE=thread -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" -DSNAPDISK_WERROR=ON -DSNAPDISK_BUILD_TESTS=ON
  cmake --build "$tsan_dir" -j "$(nproc)" --target engine_tests snapdisk
  tsan_abs=$(cd "$tsan_dir" && pwd)
  rm -rf "$tsan_abs/reports" && mkdir -p "$tsan_abs/reports"
  tsan_options="halt_on_error=0 exitcode=66 second_deadlock_stack=1 history_size=4"
  tsan_options+=" suppressions=$PWD/tests/sanitizers/tsan.supp log_path=$tsan_abs/reports/tsan"
  tsan_status=0
  TSAN_OPTIONS=$tsan_options SNAPDISK_MODEL_OPS=300 "$tsan_dir/tests/engine/engine_tests" \
    --gtest_brief=1 --gtest_filter='-BlockSizes/DataTest.*/16KiB:BlockSizes/DataTest.*/256KiB' ||
    tsan_status=$?
  # Threads racing on one mount: parallel writers, snapshots during writes,
  # racing snapshot creation, open files outliving rmdir/rm, copy_file_range
  # clones, the control socket. Not CrashTest: reopening a store after kill -9
  # gives a RocksDB-internal report that cannot be suppressed by name
  # (docs/testing.md, Sanitizers, "Known gap").
  tsan_tests='ImagesTest.ConcurrentWritersOnDifferentRanges:ImagesTest.OpenImageKeepsWorkingAfterUnlinkAndRename'
  tsan_tests+=':SnapshotsTest.SnapshotDuringWritesIsAPointInTime:SnapshotsTest.OpenFrozenViewOutlivesSnapshotDeletion'
  tsan_tests+=':HostileTest.ConcurrentCreationOfOneSnapshotNameHasOneWinner:HostileTest.RmdirOfSnapshotWithOpenFrozenView'
  tsan_tests+=':HostileTest.UnlinkOfAnOpenImage:ClonesTest.CopyFileRangeWithUnalignedRanges'
  tsan_tests+=':CliTest.GroupSnapshotThroughXattrAndCli:SnapshotCacheTest.*'
  tsan_tests+=':TransportTest.ConcurrentVerifiedIo*:TransportTest.DevFuseTransportServesEverythingWithUringOff'
  TSAN_OPTIONS=$tsan_options SNAPDISK_BIN="$tsan_abs/cli/snapdisk" \
    "$build_dir/tests/integration/integration_tests" --gtest_brief=1 --gtest_filter="$tsan_tests" ||
    tsan_status=$?
  if compgen -G "$tsan_abs/reports/tsan*" >/dev/null; then
    echo "test.sh: ThreadSanitizer reports:" >&2
    cat "$tsan_abs"/reports/tsan* >&2
    tsan_status=1
  fi
  if [ "$tsan_status" != 0 ]; then
    echo "test.sh: the ThreadSanitizer stage failed (status $tsan_status)" >&2
    exit 1
  fi
fi

# The integration suite on the ASan+UBSan daemon (needs the normal build's
# test binary, so it runs here). ~1 min on 2 cores.
if [ "${SNAPDISK_SKIP_ASAN:-0}" != 1 ]; then
  asan_abs=$(cd "$asan_dir" && pwd)
  rm -rf "$asan_abs/reports" && mkdir -p "$asan_abs/reports"
  asan_status=0
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:log_path=$asan_abs/reports/asan" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$asan_abs/reports/ubsan" \
    SNAPDISK_BIN="$asan_abs/cli/snapdisk" \
    "$build_dir/tests/integration/integration_tests" --gtest_brief=1 || asan_status=$?
  if compgen -G "$asan_abs/reports/*" >/dev/null; then
    echo "test.sh: AddressSanitizer/UBSan reports from the daemon:" >&2
    cat "$asan_abs"/reports/* >&2
    asan_status=1
  fi
  if [ "$asan_status" != 0 ]; then
    echo "test.sh: the ASan+UBSan integration stage failed (status $asan_status)" >&2
    exit 1
  fi
fi

# -j1: integration tests are RUN_SERIAL anyway; engine tests are quick.
# shellcheck disable=SC2086
ctest --test-dir "$build_dir" --output-on-failure -j1 ${CTEST_ARGS:-}

