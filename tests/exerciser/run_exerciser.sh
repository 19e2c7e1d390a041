#!/usr/bin/env bash
# run_exerciser.sh SNAPDISK_BIN EXERCISER_BIN — the `exerciser` ctest test.
#
# Mounts a fresh store with the real daemon in the foreground, runs the
# exerciser single-threaded and then with 4 threads (without shared mmap, which
# direct I/O refuses), remounts it with -o cache=page for a run with mmap,
# and checks the daemon exited 0 each time. Never skips: a mount that does not come up within 10 s is a
# failure, reported with the daemon's log.
#
# Environment: SNAPDISK_EXERCISER_SEED (default: from the clock, printed),
# SNAPDISK_EXERCISER_OPS (default 3000), SNAPDISK_EXERCISER_MT_OPS (default 2000),
# SNAPDISK_EXERCISER_KEEP=1 keeps the temporary directory after a failure.
set -u
SNAPDISK=${1:?usage: run_exerciser.sh SNAPDISK_BIN EXERCISER_BIN}
EXERCISER=${2:?usage: run_exerciser.sh SNAPDISK_BIN EXERCISER_BIN}
SEED=${SNAPDISK_EXERCISER_SEED:-$(( $(date +%s%N) % 1000000007 ))}
OPS=${SNAPDISK_EXERCISER_OPS:-3000}
MT_OPS=${SNAPDISK_EXERCISER_MT_OPS:-2000}

WORK=$(mktemp -d /tmp/snapdisk-ex-XXXXXX)
STORE=$WORK/store MNT=$WORK/mnt LOG=$WORK/daemon.log
mkdir -p "$MNT"
DAEMON=
FAILED=0

log_tail() { echo "--- daemon log ($LOG) ---"; tail -n 60 "$LOG" 2>/dev/null; }
fail() { echo "FAIL: $*"; FAILED=1; log_tail; exit 1; }

cleanup() {
  if mountpoint -q "$MNT"; then fusermount3 -u -z "$MNT" 2>/dev/null; fi
  if [[ -n $DAEMON ]] && kill -0 "$DAEMON" 2>/dev/null; then
    kill -KILL "$DAEMON" 2>/dev/null; wait "$DAEMON" 2>/dev/null
  fi
  if [[ $FAILED == 1 && ${SNAPDISK_EXERCISER_KEEP:-0} == 1 ]]; then
    echo "kept $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'FAILED=1; exit 1' INT TERM

echo "exerciser: seed $SEED (rerun with SNAPDISK_EXERCISER_SEED=$SEED), store $STORE"

# mount_store [-o OPTS]: starts the daemon in the foreground and waits for the mount.
mount_store() {
  "$SNAPDISK" mount "$STORE" "$MNT" -f "$@" >>"$LOG" 2>&1 &
  DAEMON=$!
  local deadline=$(( $(date +%s%N) + 10000000000 ))
  until mountpoint -q "$MNT"; do
    kill -0 "$DAEMON" 2>/dev/null || { wait "$DAEMON"; fail "snapdisk exited ($?) before $MNT was mounted"; }
    (( $(date +%s%N) < deadline )) || fail "$MNT was not mounted within 10 s"
    sleep 0.02   # polling interval, not a wait for a condition
  done
}

# unmount_store: unmounts and checks the daemon exits 0.
unmount_store() {
  fusermount3 -u "$MNT" || fail "fusermount3 -u $MNT"
  local deadline=$(( $(date +%s%N) + 30000000000 )) rc
  while kill -0 "$DAEMON" 2>/dev/null; do
    (( $(date +%s%N) < deadline )) || fail "snapdisk did not exit within 30 s of the unmount"
    sleep 0.02
  done
  wait "$DAEMON"; rc=$?
  DAEMON=
  [[ $rc == 0 ]] || fail "snapdisk exited with status $rc after the unmount"
}

# The default mount opens live images with direct I/O, where shared mmap is
# refused (ENODEV): mmap ops run on a cache=page mount of the same store.
NO_MMAP=(--skip mmap_read --skip mmap_write)
mount_store
"$EXERCISER" --dir "$MNT" --seed "$SEED" --ops "$OPS" --threads 1 "${NO_MMAP[@]}" || { FAILED=1; fail "single-threaded exerciser (seed $SEED)"; }
"$EXERCISER" --dir "$MNT" --project team-mt --seed "$SEED" --ops "$MT_OPS" --threads 4 "${NO_MMAP[@]}" || { FAILED=1; fail "threaded exerciser (seed $SEED)"; }
unmount_store
mount_store -o cache=page
"$EXERCISER" --dir "$MNT" --project team-page --seed "$SEED" --ops "$OPS" --threads 1 || { FAILED=1; fail "single-threaded exerciser on cache=page (seed $SEED)"; }
unmount_store
echo "exerciser: PASS (seed $SEED)"
