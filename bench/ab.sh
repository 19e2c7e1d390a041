#!/usr/bin/env bash
# A/B of one fio job across snapdisk builds and libfuse's passthrough_ll,
# one daemon at a time, alternating, caches dropped before every run: the
# quick way to tell whether a change moves a row of bench/run.sh beyond the
# noise (the full suite takes ten minutes and runs each job twice).
#
#   bench/ab.sh [--rounds N] [--runs N] [--size SIZE] [--job 'FIO ARGS'] [--cpus LIST]
#               LABEL=BINARY[:OPTS]... [pt] [raw]
#
# Each round starts every target once (the first rotates): a fresh store (or source
# directory), a SIZE image written sequentially with end_fsync, then --runs
# runs of the job (4 s, time-based, buffered psync, QD1). `pt` stands for
# passthrough_ll (built here from libfuse3-dev's example), `raw` for a file on
# the host file system; :OPTS after a binary are its -o mount options (e.g.
# new=build/cli/snapdisk:uring=off). --cpus runs the job's fio under
# `taskset -c LIST` (the default: wherever the scheduler puts it). Prints one line a
# run (read+write IOPS, fio's mean latency of the job's main direction, mean
# sync latency) and medians per label.
# Defaults: 3 rounds, 3 runs, 1G, the fsync-every-32 job. Needs root.
#
# Example: bench/ab.sh old=/tmp/old/snapdisk new=build/cli/snapdisk pt
set -euo pipefail

rounds=3 runs=3 size=1G job="--rw=randwrite --bs=4k --fsync=32" cpus=""
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --job) job="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ ${#targets[@]} -gt 0 ]] || { echo "ab.sh: name at least one target (LABEL=BINARY or pt); see --help" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "ab.sh: needs root (drop_caches, FUSE mounts)" >&2; exit 1; }

work=$(mktemp -d /tmp/snapdisk-ab.XXXXXX)
mnt="$work/mnt"
cleanup() {
  mountpoint -q "$mnt" 2>/dev/null && fusermount3 -u "$mnt" || true
  rm -rf "$work"
}
trap cleanup EXIT

pt_bin=""
for t in "${targets[@]}"; do
  [[ "$t" == pt ]] || continue
  pt_bin=$(bash "$(dirname "${BASH_SOURCE[0]}")/build-passthrough.sh" "$work") || exit 1
done

wait_mounted() {
  for _ in $(seq 100); do mountpoint -q "$mnt" && return 0; sleep 0.1; done
  echo "ab.sh: $1 did not mount $mnt within 10 s" >&2
  exit 1
}

results="$work/results"
: >"$results"
n=${#targets[@]}
for ((r = 1; r <= rounds; r++)); do
  for ((k = 0; k < n; k++)); do
    t="${targets[$(((k + r - 1) % n))]}"  # the first target rotates from round to round
    label="${t%%=*}"
    mkdir -p "$mnt"
    img="$mnt/disk.img"
    if [[ "$t" == raw ]]; then
      rm -rf "$work/src" && mkdir -p "$work/src"
      img="$work/src/disk.img"
    elif [[ "$t" == pt ]]; then
      rm -rf "$work/src" && mkdir -p "$work/src"
      "$pt_bin" -f -o source="$work/src" "$mnt" >"$work/daemon.log" 2>&1 &
      wait_mounted "$label"
    else
      rm -rf "$work/store"
      spec="${t#*=}" opts=()
      [[ "$spec" == *:* ]] && opts=(-o "${spec#*:}")
      "${spec%%:*}" mount "$work/store" "$mnt" -f "${opts[@]}" >"$work/daemon.log" 2>&1 &
      wait_mounted "$label"
    fi
    truncate -s "$size" "$img"
    fio --name=fill --filename="$img" --size="$size" --ioengine=psync --rw=write --bs=1M \
      --end_fsync=1 --output=/dev/null
    for ((i = 1; i <= runs; i++)); do
      sync; echo 3 >/proc/sys/vm/drop_caches
      # shellcheck disable=SC2086  # $job is a list of fio arguments
      ${cpus:+taskset -c "$cpus"} fio --name=job --filename="$img" --size="$size" --ioengine=psync --direct=0 --iodepth=1 \
        --fallocate=none $job --time_based --runtime=4 --output-format=json --output="$work/o.json"
      python3 - "$label" "$work/o.json" <<'EOF' | tee -a "$results"
import json, sys
label, path = sys.argv[1], sys.argv[2]
txt = open(path).read()
j = json.loads(txt[txt.index("{"):])["jobs"][0]
r, w, s = j["read"], j["write"], j.get("sync", {})
main = w if w["iops"] >= r["iops"] else r  # the job's direction: its latency is reported
sync = s.get("lat_ns", {}).get("mean", 0) / 1000
print(f"{label} {r['iops'] + w['iops']:.0f} {main['lat_ns']['mean'] / 1000:.1f} {sync:.0f}")
EOF
    done
    [[ "$t" == raw ]] || fusermount3 -u "$mnt"
    wait
  done
done
echo "medians (label: IOPS, read or write latency µs, sync latency µs):"
python3 - "$results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, *vals = line.split()
    rows.setdefault(label, []).append([float(v) for v in vals])
for label, vals in rows.items():
    med = [statistics.median(col) for col in zip(*vals)]
    print(f"  {label}: {med[0]:,.0f} IOPS, latency {med[1]:.1f} µs, sync {med[2]:.0f} µs (n={len(vals)})")
EOF
