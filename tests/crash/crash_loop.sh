#!/usr/bin/env bash
# crash_loop.sh — kill -9 the snapdisk daemon again and again under a
# verifying workload, on one store, and check after each crash that nothing
# acknowledged was lost (see README.md).
#
# usage: crash_loop.sh [--cycles N] [--seed S] [--snapdisk BIN] [--workload BIN] [--keep]
#   --cycles N     crash cycles (default 20, or $SNAPDISK_CRASH_CYCLES)
#   --seed S       seed for the kill delays and the workload (default: from the clock,
#                  or $SNAPDISK_CRASH_SEED); printed, and the same seed replays the
#                  same delays and workload choices
#   --snapdisk     the daemon (default: build/cli/snapdisk next to this source tree)
#   --workload     snapdisk_crash_workload (default: build/tests/crash/...)
#   --keep         keep the work directory (store, journal, logs) even on success
#
# Each cycle: mount the store (the same one every cycle) and wait for it (10 s
# deadline, polled); verify the previous cycle's journal; start the workload
# and wait (polled) until it says its set-up is done and its writers run;
# sleep a random 0.2-2 s (the only fixed sleep); kill -9 the daemon;
# fusermount3 -u -z; wait for the workload to stop; on odd cycles run the
# store's consistency check on the closed store. After the last cycle: remount, verify,
# unmount cleanly (the daemon must exit 0) and check once more.
# Exit status: 0 if every cycle verified, 1 on the first failure (the work
# directory is kept and printed), 2 on a usage error.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CYCLES=${SNAPDISK_CRASH_CYCLES:-20}
SEED=${SNAPDISK_CRASH_SEED:-$(( $(date +%s%N) / 1000 % 1000000007 ))}
SNAPDISK=$HERE/../../build/cli/snapdisk
WORKLOAD=$HERE/../../build/tests/crash/snapdisk_crash_workload
KEEP=0
while (( $# > 0 )); do
  case $1 in
    --cycles) CYCLES=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --snapdisk) SNAPDISK=$2; shift 2 ;;
    --workload) WORKLOAD=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "crash_loop.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x $SNAPDISK ]] || { echo "crash_loop.sh: no daemon at $SNAPDISK (use --snapdisk)" >&2; exit 2; }
[[ -x $WORKLOAD ]] || { echo "crash_loop.sh: no workload at $WORKLOAD (use --workload)" >&2; exit 2; }
[[ $CYCLES =~ ^[0-9]+$ && $SEED =~ ^[0-9]+$ ]] || { echo "crash_loop.sh: --cycles and --seed take numbers" >&2; exit 2; }

WORK=$(mktemp -d /tmp/snapdisk-crash-XXXXXX)
STORE=$WORK/store MNT=$WORK/mnt JOURNAL=$WORK/journal
DLOG=$WORK/daemon.log WLOG=$WORK/workload.log CLOG=$WORK/check.log
mkdir -p "$MNT"
DAEMON= WPID= FAILED=0 CYCLE=0
RANDOM=$SEED   # the kill delays come from bash's generator, seeded here

now_ns() { date +%s%N; }

# wait_until SECONDS MESSAGE CMD...: polls CMD every 20 ms until it succeeds;
# fails the run with MESSAGE if it has not after SECONDS.
wait_until() {
  local seconds=$1 message=$2; shift 2
  local deadline=$(( $(now_ns) + seconds * 1000000000 ))
  until "$@"; do
    (( $(now_ns) < deadline )) || fail "$message"
    sleep 0.02   # polling interval
  done
}
gone() { ! kill -0 "$1" 2>/dev/null; }

cleanup() {
  if [[ -n $WPID ]] && kill -0 "$WPID" 2>/dev/null; then kill -KILL "$WPID" 2>/dev/null; wait "$WPID" 2>/dev/null; fi
  if mountpoint -q "$MNT"; then fusermount3 -u -z "$MNT" 2>/dev/null; fi
  if [[ -n $DAEMON ]] && kill -0 "$DAEMON" 2>/dev/null; then kill -KILL "$DAEMON" 2>/dev/null; wait "$DAEMON" 2>/dev/null; fi
  if [[ $FAILED == 1 || $KEEP == 1 ]]; then
    echo "crash_loop: work directory kept: $WORK (store, journal, daemon.log, workload.log, check.log)"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'FAILED=1; exit 1' INT TERM

fail() {
  FAILED=1
  echo "CRASH LOOP FAILURE (cycle $CYCLE of $CYCLES, seed $SEED): $*"
  echo "reproduce: $HERE/crash_loop.sh --seed $SEED --cycles $CYCLES --snapdisk $SNAPDISK --workload $WORKLOAD"
  echo "--- daemon log (tail) ---"; tail -n 30 "$DLOG" 2>/dev/null
  echo "--- workload log (tail) ---"; tail -n 15 "$WLOG" 2>/dev/null
  exit 1
}

mount_store() {
  echo "=== cycle $CYCLE: mount ===" >>"$DLOG"
  "$SNAPDISK" mount "$STORE" "$MNT" -f >>"$DLOG" 2>&1 &
  DAEMON=$!
  wait_until 10 "$MNT was not mounted within 10 s" mounted
}
mounted() {  # true once MNT is mounted; fails the run if the daemon died first
  mountpoint -q "$MNT" && return 0
  if gone "$DAEMON"; then
    wait "$DAEMON"; local rc=$?; DAEMON=
    fail "snapdisk exited ($rc) before $MNT was mounted"
  fi
  return 1
}
# The workload has said its set-up is done, or has exited early.
workload_running() { grep -q "^workload cycle $CYCLE: running" "$WLOG" || gone "$WPID"; }

verify() {  # verify LAST_RUN_CYCLE
  local out
  out=$("$WORKLOAD" verify --mnt "$MNT" --journal "$JOURNAL" --cycle "$1" 2>&1); local rc=$?
  echo "$out" | tail -n 1
  (( rc == 0 )) || { echo "$out"; fail "verification after the crash of cycle $1 failed"; }
}

# `snapdisk fsck --help` is not a safe probe: the CLI treats an unknown first
# word as `mount` (for mount.fuse3), so look for the verb in the help's list.
if "$SNAPDISK" --help 2>/dev/null | grep -qE '^[[:space:]]+fsck([[:space:],]|$)' &&
   "$SNAPDISK" fsck --help >/dev/null 2>&1; then
  CHECK=("$SNAPDISK" fsck "$STORE")
  echo "crash_loop: consistency check: snapdisk fsck"
else
  CHECK=("$WORKLOAD" check --store "$STORE")
  echo "crash_loop: 'snapdisk fsck' is not available: skipping it; using the engine's Store::Check (snapdisk_crash_workload check) instead"
fi
check_store() {
  echo "=== cycle $CYCLE ===" >>"$CLOG"
  "${CHECK[@]}" >>"$CLOG" 2>&1 || { tail -n 20 "$CLOG"; fail "consistency check of the store failed"; }
}

echo "crash_loop: seed $SEED, $CYCLES cycles, work directory $WORK"
START=$(now_ns)
for (( CYCLE = 1; CYCLE <= CYCLES; ++CYCLE )); do
  mount_store
  (( CYCLE > 1 )) && verify $(( CYCLE - 1 ))
  echo "=== cycle $CYCLE ===" >>"$WLOG"
  "$WORKLOAD" run --mnt "$MNT" --journal "$JOURNAL" --seed $(( SEED * 1000 + CYCLE )) \
      --cycle "$CYCLE" --max-seconds 60 >>"$WLOG" 2>&1 &
  WPID=$!
  # The kill delay counts from the workload's set-up being done (reading the
  # journal grows slower every cycle), or from its early exit.
  wait_until 60 "the workload did not start within 60 s" workload_running
  DELAY_MS=$(( 200 + RANDOM % 1801 ))
  sleep "$(printf '%d.%03d' $(( DELAY_MS / 1000 )) $(( DELAY_MS % 1000 )))"   # the random kill delay
  kill -KILL "$DAEMON"
  wait "$DAEMON" 2>/dev/null
  DAEMON=
  fusermount3 -u -z "$MNT" || fail "fusermount3 -u -z $MNT"
  wait_until 30 "the workload did not stop within 30 s of the daemon's death" gone "$WPID"
  wait "$WPID"; WRC=$?; WPID=
  (( WRC == 0 )) || fail "workload exited with status $WRC (3: an operation failed while the mount was alive)"
  echo "cycle $CYCLE: killed after ${DELAY_MS} ms; $(tail -n 1 "$WLOG" | sed 's/^workload cycle [0-9]*: //')"
  # Odd cycles check the crashed store before the daemon sees it; even cycles
  # leave the recovery to the daemon's own open.
  (( CYCLE % 2 == 1 )) && check_store
done

CYCLE=$(( CYCLES + 1 ))
mount_store
verify "$CYCLES"
fusermount3 -u "$MNT" || fail "fusermount3 -u $MNT (clean unmount)"
wait_until 30 "snapdisk did not exit within 30 s of the clean unmount" gone "$DAEMON"
wait "$DAEMON"; RC=$?; DAEMON=
(( RC == 0 )) || fail "snapdisk exited with status $RC after the clean unmount"
check_store
echo "crash_loop: PASS: $CYCLES crash cycles in $(( ($(now_ns) - START) / 1000000000 )) s, seed $SEED"
