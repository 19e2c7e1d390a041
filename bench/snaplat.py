#!/usr/bin/env python3
"""Snapshot micro-benchmarks for bench/run.sh (python3 standard library only).

Used as a module by bench/harness.py, and as a tiny program for the background
writer that provides the "concurrent 4k write load" and measures write stalls:

    python3 bench/snaplat.py writer IMAGE SPAN_BYTES OUT.json

The writer does 4 KiB pwrite()s at random 4 KiB-aligned offsets in [0, SPAN) of
IMAGE in a loop, with no fsync, until it gets SIGTERM or SIGINT. It records every
gap between two consecutive write completions that is longer than GAP_RECORD_NS
as [start_ns, end_ns] on CLOCK_MONOTONIC (time.monotonic_ns, shared by all
processes), plus the write count and the longest gap, and writes them as JSON to
OUT.json. It runs as a separate process so that the GIL of the process taking the
snapshots cannot create stalls that are not the filesystem's.

All clocks here are CLOCK_MONOTONIC via time.monotonic_ns().
"""

import json
import math
import os
import random
import signal
import socket
import sys
import time

GAP_RECORD_NS = 200_000  # record write gaps longer than 0.2 ms
MAX_GAPS = 2_000_000


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    s = sorted(values)
    if not s:
        return None
    k = max(1, math.ceil(p / 100.0 * len(s)))
    return s[k - 1]


def median(values):
    s = sorted(values)
    n = len(s)
    if n == 0:
        return None
    if n % 2:
        return s[n // 2]
    return (s[n // 2 - 1] + s[n // 2]) / 2.0


# --------------------------------------------------------------------------
# background writer
# --------------------------------------------------------------------------

def writer_main(path, span, out):
    stop = [False]

    def on_signal(signum, frame):
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rng = random.Random(12345)
    nblocks = max(1, span // 4096)
    bufs = [os.urandom(4096) for _ in range(16)]
    fd = os.open(path, os.O_WRONLY)
    gaps = []
    count = 0
    max_gap = 0
    mono = time.monotonic_ns
    t_start = mono()
    prev = t_start
    err = None
    try:
        while not stop[0]:
            off = rng.randrange(nblocks) * 4096
            os.pwrite(fd, bufs[count & 15], off)
            now = mono()
            gap = now - prev
            if gap > GAP_RECORD_NS and len(gaps) < MAX_GAPS:
                gaps.append((prev, now))
            if gap > max_gap:
                max_gap = gap
            prev = now
            count += 1
    except OSError as e:
        err = f"{type(e).__name__}: {e}"
    t_end = mono()
    os.close(fd)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"count": count, "t_start": t_start, "t_end": t_end,
                   "max_gap_ns": max_gap, "gaps": gaps, "error": err}, f)
    os.rename(tmp, out)


class Writer:
    """Starts the background writer process; stop() returns its JSON report."""

    def __init__(self, path, span, out):
        self.out = out
        if os.path.exists(out):
            os.unlink(out)
        self.proc = __import__("subprocess").Popen(
            [sys.executable, os.path.abspath(__file__), "writer", path, str(span), out])
        # Wait until it has started writing (or died).
        time.sleep(0.3)
        if self.proc.poll() is not None:
            raise RuntimeError(f"background writer exited early (rc={self.proc.returncode})")

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except Exception:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("background writer did not stop within %ss (stuck in a write?)" % timeout)
        if not os.path.exists(self.out):
            raise RuntimeError(f"background writer left no report (rc={self.proc.returncode})")
        with open(self.out) as f:
            rep = json.load(f)
        os.unlink(self.out)
        return rep


def max_gap_overlapping(gaps, windows):
    """Longest write gap (ns) that overlaps any [start, end] window."""
    return worst_gap_overlapping(gaps, windows)[0]


def worst_gap_overlapping(gaps, windows):
    """(length_ns, gap, window) of the longest write gap that overlaps a
    [start, end] window, with the first window it overlaps; (0, None, None)
    if none does."""
    best = (0, None, None)
    if not gaps or not windows:
        return best
    windows = sorted(windows)
    gaps = sorted(gaps)
    j = 0
    for (gs, ge) in gaps:
        # advance windows that end before this gap starts
        while j < len(windows) and windows[j][1] < gs:
            j += 1
        k = j
        while k < len(windows) and windows[k][0] <= ge:
            if windows[k][1] >= gs:
                if ge - gs > best[0]:
                    best = (ge - gs, (gs, ge), windows[k])
                break
            k += 1
    return best


# The virtio balloon's free page reporting of this machine's kernel: how many
# KiB of free guest memory it has handed back to the host so far. Each report
# makes the host discard that memory, and while it does, the guest's vCPUs
# can stall for milliseconds whatever runs on them (bench/README.md, "Since
# 10:00 on 2026-12-05"). Not every kernel has this counter.
HOST_REPORTED_KIB = "/sys/module/page_reporting/parameters/reported_kib"


def host_reported_kib():
    """KiB of free memory reported to the host so far, or None if unknown."""
    try:
        with open(HOST_REPORTED_KIB) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def cpu_steal_ms():
    """CPU time the host has taken from this guest's vCPUs since boot (the
    steal column of /proc/stat, all CPUs), in ms, or None if unknown."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) * 1000 / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def describe_stall(gap, window):
    """Where the worst gap sits against the snapshot call it overlaps: a gap
    that began well before the call started was not caused by it."""
    (gs, ge), (ws, we) = gap, window
    return (f"the longest gap began {(gs - ws) / 1e6:+.2f} ms from the start of the snapshot call it "
            f"overlaps and ended {(ge - we) / 1e6:+.2f} ms from its return (negative: before; the call "
            f"took {(we - ws) / 1e6:.3f} ms)")


# --------------------------------------------------------------------------
# snapshot latency
# --------------------------------------------------------------------------

def time_snapshots(take, names, spacing_s=0.0):
    """Calls take(name) for each name; returns list of (t0_ns, t1_ns)."""
    out = []
    mono = time.monotonic_ns
    for n in names:
        t0 = mono()
        take(n)
        t1 = mono()
        out.append((t0, t1))
        if spacing_s:
            time.sleep(spacing_s)
    return out


def snapshot_latency(take, prefix, count, load_path=None, load_span=0, tmpdir="/tmp",
                     spacing_s=0.01, deadline_s=None):
    """Takes `count` snapshots named PREFIX-NNNN. With load_path, a background
    writer does 4k writes to that file meanwhile. Returns a dict with the
    latencies in ms, and under load the longest write gap overlapping a snapshot
    and the longest gap seen in the 1 s of load before the first snapshot."""
    res = {"n": 0}
    writer = None
    if load_path:
        writer = Writer(load_path, load_span, os.path.join(tmpdir, f"writer-{os.getpid()}-{prefix}.json"))
        time.sleep(1.0)  # baseline window without snapshots
    base_end = time.monotonic_ns()
    reported_before = host_reported_kib()
    steal_before = cpu_steal_ms()
    windows = []
    t_begin = time.monotonic()
    err = None
    try:
        for i in range(count):
            name = f"{prefix}-{i:04d}"
            t0 = time.monotonic_ns()
            take(name)
            t1 = time.monotonic_ns()
            windows.append((t0, t1))
            if deadline_s is not None and time.monotonic() - t_begin > deadline_s:
                res["truncated"] = f"stopped after {i + 1} snapshots ({deadline_s:.0f} s cap)"
                break
            if spacing_s:
                time.sleep(spacing_s)
    except Exception as e:  # report what we have
        err = e
    finally:
        reported_after = host_reported_kib()
        if reported_before is not None and reported_after is not None:
            res["host_reported_mib"] = (reported_after - reported_before) / 1024
        steal_after = cpu_steal_ms()
        if steal_before is not None and steal_after is not None:
            res["steal_ms"] = steal_after - steal_before
        if writer:
            rep = writer.stop()
            res["writes"] = rep["count"]
            res["write_iops"] = rep["count"] / max(1e-9, (rep["t_end"] - rep["t_start"]) / 1e9)
            stall, gap, window = worst_gap_overlapping(rep["gaps"], windows)
            res["stall_ms"] = stall / 1e6
            # The longest gap anywhere from the first call's start to the last
            # one's end, whether or not it overlaps a call: comparable across
            # targets whose calls take different times (or, for a baseline,
            # none at all).
            span = [(windows[0][0], windows[-1][1])] if windows else []
            res["series_gap_ms"] = max_gap_overlapping(rep["gaps"], span) / 1e6
            if gap is not None:
                res["stall_where"] = describe_stall(gap, window)
            # Gaps over 5 ms (the bar) during the snapshot series, and how
            # many of them overlap a snapshot call: with calls 10 ms apart,
            # any gap longer than that overlaps one whatever its cause.
            during = [g for g in rep["gaps"] if g[0] > base_end and g[1] - g[0] > 5_000_000]
            res["long_gaps"] = len(during)
            res["long_gaps_overlapping"] = sum(1 for g in during if max_gap_overlapping([g], windows) > 0)
            base = [g for g in rep["gaps"] if g[1] <= base_end]
            res["baseline_gap_ms"] = max([g[1] - g[0] for g in base], default=0) / 1e6
            res["max_gap_ms"] = rep["max_gap_ns"] / 1e6
            if rep.get("error"):
                res["writer_error"] = rep["error"]
    if err is not None and not windows:
        raise err
    lat = [(b - a) / 1e6 for a, b in windows]
    res["n"] = len(lat)
    res["lat_ms"] = lat
    res["p50_ms"] = percentile(lat, 50)
    res["p99_ms"] = percentile(lat, 99)
    res["max_ms"] = max(lat) if lat else None
    if err is not None:
        res["error"] = f"{type(err).__name__}: {err}"
    return res


def read_speed(path, size=None, bs=1 << 20):
    """Sequential read of path with 1 MiB reads; returns MiB/s (caller drops caches)."""
    buf = bytearray(bs)
    mv = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    total = 0
    t0 = time.monotonic_ns()
    try:
        if size is None:
            size = os.fstat(fd).st_size
        while total < size:
            n = os.readv(fd, [mv])
            if n <= 0:
                break
            total += n
    finally:
        os.close(fd)
    dt = (time.monotonic_ns() - t0) / 1e9
    return total / (1 << 20) / max(dt, 1e-9)


# --------------------------------------------------------------------------
# QMP client (qemu-storage-daemon internal snapshots)
# --------------------------------------------------------------------------

class QMP:
    def __init__(self, path, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.f = self.sock.makefile("rw")
        greeting = json.loads(self.f.readline())
        if "QMP" not in greeting:
            raise RuntimeError(f"unexpected QMP greeting {greeting}")
        self.cmd("qmp_capabilities")

    def cmd(self, _command, **args):
        msg = {"execute": _command}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError("QMP connection closed")
            rep = json.loads(line)
            if "event" in rep:
                continue
            if "error" in rep:
                raise RuntimeError(f"QMP {_command}: {rep['error'].get('desc', rep['error'])}")
            return rep.get("return")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "writer":
        writer_main(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        print(__doc__)
        sys.exit(2)
