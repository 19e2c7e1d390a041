#!/usr/bin/env bash
# snapdisk benchmark: the same fio jobs, interleaved, on a raw sparse file,
# libfuse's passthrough_ll, a qemu-storage-daemon qcow2 FUSE export and snapdisk,
# plus snapshot latency / write stall / clone / snapshot space / RSS / 10k
# snapshots. Writes bench/results/<date>-<rev>.md (quick-*.md with --quick,
# partial-*.md with --only).
#
#   bench/run.sh [--quick] [--out DIR] [--snapdisk BIN] [--snapdisk-opts OPTS]
#                [--rounds N] [--runtime SECONDS] [--only fio,clone,space,latency,many]
#                [--budget SECONDS] [--keep-work] [--verbose]
#
# Needs root (drop_caches, FUSE mounts), fio, qemu-storage-daemon + qemu-img
# (apt-get install qemu-system-common qemu-utils fio), fusermount3, cc,
# pkg-config + libfuse3-dev, python3. Installs nothing. See bench/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
out="$here/results"
snapdisk="${SNAPDISK_BIN:-$repo/build/cli/snapdisk}"
snapdisk_opts="${SNAPDISK_OPTS:-}"
quick=0
keep=0
extra=()
command_line="bench/run.sh $*"

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out=$(realpath -m "$2"); shift ;;
    --snapdisk) snapdisk=$(realpath -m "$2"); shift ;;
    --snapdisk-opts) snapdisk_opts="$2"; shift ;;
    --rounds|--runtime|--only|--snapshots|--many|--image-size-gib|--budget) extra+=("$1" "$2"); shift ;;
    --verbose) extra+=("$1") ;;
    --keep-work) keep=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

missing=()
for tool in fio qemu-storage-daemon qemu-img fusermount3 cc pkg-config python3 cp ls; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "run.sh: missing tools: ${missing[*]}" >&2
  echo "  apt-get install -y fio qemu-system-common qemu-utils fuse3 libfuse3-dev pkg-config gcc" >&2
  exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "run.sh: warning: not root; cannot drop caches, cold-cache figures will be warm" >&2
fi
[[ -e /dev/fuse ]] || { echo "run.sh: /dev/fuse missing" >&2; exit 2; }

work=$(mktemp -d "${BENCH_WORK_PARENT:-/tmp}/snapdisk-bench.XXXXXX")
harness_pid=

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$harness_pid" ]] && kill -0 "$harness_pid" 2>/dev/null; then
    kill -TERM "$harness_pid" 2>/dev/null || true
    wait "$harness_pid" 2>/dev/null || true
  fi
  # Unmount anything still mounted under the work dir (deepest first).
  local mp
  while read -r mp; do
    [[ -n "$mp" ]] || continue
    fusermount3 -u "$mp" 2>/dev/null || { sleep 1; fusermount3 -u "$mp" 2>/dev/null; } ||
      fusermount3 -uz "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
  done < <(awk -v w="$work" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  # Processes started by this run all carry the unique work dir in their command line.
  local pid deadline
  for pid in $(grep -lsF -- "$work" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
    [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
    # re-check: the scan itself (grep) matched, and may be gone now
    local cmd
    cmd=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null) || continue
    [[ "$cmd" == *"$work"* ]] || continue
    echo "run.sh: stopping leftover process $pid: $cmd" >&2
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  echo "run.sh: unmounted and stopped everything at $(date -u +%T)" >&2
  if ((keep)); then
    echo "run.sh: work dir kept: $work" >&2
  else
    echo "run.sh: removing $work ($(du -sh "$work" 2>/dev/null | cut -f1); slow if the filesystem is mounted with discard)" >&2
    rm -rf --one-file-system "$work" 2>/dev/null || echo "run.sh: could not remove $work" >&2
    echo "run.sh: done at $(date -u +%T)" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Build libfuse's passthrough_ll example.
pt_bin=""
if ! pt_bin=$(bash "$here/build-passthrough.sh" "$work"); then
  echo "run.sh: skipping passthrough_ll" >&2
  pt_bin=""
fi

if [[ ! -x "$snapdisk" ]]; then
  echo "run.sh: $snapdisk not built; snapdisk will be reported as n/a" >&2
fi

args=(--work "$work" --out "$out" --repo "$repo" --snapdisk "$snapdisk" --passthrough "$pt_bin"
      --command "$command_line")
[[ -n "$snapdisk_opts" ]] && args+=(--snapdisk-opts "$snapdisk_opts")
((quick)) && args+=(--quick)

echo "run.sh: work dir $work; starting the harness at $(date -u +%T)" >&2
python3 "$here/harness.py" "${args[@]}" "${extra[@]}" &
harness_pid=$!
set +e
wait "$harness_pid"
rc=$?
# If a signal interrupted `wait`, wait for the harness to write its partial report.
while kill -0 "$harness_pid" 2>/dev/null; do wait "$harness_pid"; rc=$?; done
harness_pid=
echo "run.sh: harness finished at $(date -u +%T) (rc=$rc); cleaning up" >&2
exit "$rc"
