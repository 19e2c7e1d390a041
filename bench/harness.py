#!/usr/bin/env python3
"""snapdisk benchmark harness: runs the same fio jobs, interleaved, on a raw
sparse file, libfuse's passthrough_ll, a qemu-storage-daemon qcow2 FUSE export
and snapdisk, plus snapshot/clone/space/RSS/10k-snapshot measurements, and
writes a markdown report. Started by bench/run.sh, which checks the tools,
builds passthrough_ll and guarantees cleanup; see bench/README.md.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import snaplat  # noqa: E402
from snaplat import percentile, median  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20
T0 = time.monotonic()
PHASES = ("fio", "clone", "space", "latency", "many")  # in the order they run; --only picks some


def log(msg):
    sys.stderr.write(f"[{time.monotonic() - T0:7.1f}s] {msg}\n")
    sys.stderr.flush()


def run(cmd, timeout=None, check=True, **kw):
    return subprocess.run(cmd, timeout=timeout, check=check, text=True,
                          stdout=kw.pop("stdout", subprocess.PIPE),
                          stderr=kw.pop("stderr", subprocess.PIPE), **kw)


def sh_out(cmd):
    try:
        return subprocess.run(cmd, shell=True, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=20).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return f"? ({e})"


DROP_WARNED = [False]


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        if not DROP_WARNED[0]:
            log(f"WARNING: cannot drop caches ({e}); cold-cache figures are not cold")
            DROP_WARNED[0] = True


def mounted(path):
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if mp == path:
                    return True
    except OSError:
        pass
    return False


def wait_mounted(path, proc, timeout, logfile):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mounted(path):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before mounting: {tail(logfile)}")
        time.sleep(0.05)
    raise RuntimeError(f"not mounted after {timeout}s: {tail(logfile)}")


def tail(path, n=6):
    try:
        with open(path, errors="replace") as f:
            lines = [l.rstrip() for l in f.readlines() if l.strip()]
        return " | ".join(lines[-n:]) or "(empty log)"
    except OSError:
        return "(no log)"


def unmount(path):
    if not mounted(path):
        return
    r = subprocess.run(["fusermount3", "-u", path], capture_output=True, text=True)
    if r.returncode != 0:
        time.sleep(0.5)
        r = subprocess.run(["fusermount3", "-u", path], capture_output=True, text=True)
        if r.returncode != 0:
            log(f"fusermount3 -u {path} failed ({r.stderr.strip()}); lazy unmount")
            subprocess.run(["fusermount3", "-uz", path], capture_output=True)


def stop_proc(proc, name, timeout=30):
    """Waits for a daemon to exit after its unmount; returns a note if it had to be signalled."""
    if proc is None or proc.poll() is not None:
        return None
    t0 = time.monotonic()
    try:
        proc.wait(timeout=timeout)
        return None
    except subprocess.TimeoutExpired:
        pass
    log(f"{name} (pid {proc.pid}) still running {timeout} s after unmount; SIGTERM")
    proc.terminate()
    try:
        proc.wait(timeout=10)
        return f"{name} was still running {timeout} s after the unmount; exited on SIGTERM (status {proc.returncode})"
    except subprocess.TimeoutExpired:
        log(f"{name} (pid {proc.pid}) ignoring SIGTERM; SIGKILL")
        proc.kill()
        proc.wait()
        return f"{name} was still running {time.monotonic() - t0:.0f} s after the unmount and ignored SIGTERM; killed"


def vm_hwm_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def create_image(path, size):
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def du_bytes(path):
    """Allocated bytes of a file or directory tree (like du -s --block-size=1)."""
    total = 0
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    for root, dirs, files in os.walk(path):
        for n in files:
            try:
                total += os.lstat(os.path.join(root, n)).st_blocks * 512
            except OSError:
                pass
    return total


# --------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------

class Target:
    key = "?"
    label = "?"
    can_snapshot = False

    def __init__(self, work, image_size):
        self.work = work
        self.image_size = image_size
        self.error = None      # set when the target is unusable
        self.stopped = False
        self.stop_note = None
        self.exit_s = None
        self.proc = None
        self.mnt = None
        self.logfile = None
        self.dir = os.path.join(work, self.key)
        os.makedirs(self.dir, exist_ok=True)

    @property
    def ok(self):
        return self.error is None

    def fail(self, what, exc):
        msg = f"{what}: {exc}"
        if self.stopped:
            pass
        elif self.proc is not None and self.proc.poll() is not None:
            msg += f" [daemon exited with {self.proc.returncode}: {tail(self.logfile)}]"
        elif self.mnt and not mounted(self.mnt):
            msg += " [mount is gone]"
        log(f"{self.label}: {msg}")
        return msg

    def alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            return False
        if self.mnt and not mounted(self.mnt):
            return False
        return True

    def rss(self):
        return vm_hwm_mib(self.proc.pid) if self.proc else None

    def start(self):
        raise NotImplementedError

    def stop(self):
        self.stopped = True
        if self.mnt:
            unmount(self.mnt)
        t0 = time.monotonic()
        note = stop_proc(self.proc, self.label)
        if note:
            self.stop_note = note
        elif self.proc is not None:
            self.exit_s = time.monotonic() - t0

    def snapshot(self, name):
        raise NotImplementedError


class Raw(Target):
    key = "raw"
    label = "raw file"

    def start(self):
        self.image = os.path.join(self.dir, "disk.img")
        create_image(self.image, self.image_size)

    def clone_paths(self):
        return self.image, os.path.join(self.dir, "clone.img")


class Passthrough(Target):
    key = "pt"
    label = "passthrough_ll"

    def __init__(self, work, image_size, binary):
        super().__init__(work, image_size)
        self.binary = binary

    def start(self):
        self.src = os.path.join(self.dir, "src")
        self.mnt = os.path.join(self.dir, "mnt")
        os.makedirs(self.src, exist_ok=True)
        os.makedirs(self.mnt, exist_ok=True)
        self.logfile = os.path.join(self.dir, "daemon.log")
        with open(self.logfile, "w") as lf:
            self.proc = subprocess.Popen([self.binary, "-f", "-o", f"source={self.src}", self.mnt],
                                         stdout=lf, stderr=lf, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        wait_mounted(self.mnt, self.proc, 15, self.logfile)
        self.image = os.path.join(self.mnt, "disk.img")
        create_image(self.image, self.image_size)

    def clone_paths(self):
        return self.image, os.path.join(self.mnt, "clone.img")


class Qsd(Target):
    """qemu-storage-daemon exporting one qcow2 image as a FUSE file."""
    key = "qsd"
    label = "qemu-storage-daemon"
    can_snapshot = True

    def __init__(self, work, image_size, key=None, create_opts=None, file_opts=""):
        if key:
            self.key = key
        super().__init__(work, image_size)
        self.create_opts = create_opts
        self.file_opts = file_opts
        self.qmp = None

    def start(self):
        self.qcow2 = os.path.join(self.dir, "disk.qcow2")
        self.image = os.path.join(self.dir, "export.img")
        cmd = ["qemu-img", "create", "-f", "qcow2"]
        if self.create_opts:
            cmd += ["-o", self.create_opts]
        run(cmd + [self.qcow2, str(self.image_size)], timeout=600)
        open(self.image, "w").close()
        self.mnt = self.image
        self.sock = os.path.join(self.dir, "qmp.sock")
        self.logfile = os.path.join(self.dir, "daemon.log")
        with open(self.logfile, "w") as lf:
            self.proc = subprocess.Popen([
                "qemu-storage-daemon",
                "--blockdev", f"driver=file,node-name=file,filename={self.qcow2}{self.file_opts}",
                "--blockdev", "driver=qcow2,node-name=qcow2,file=file",
                "--export", f"type=fuse,id=exp,node-name=qcow2,mountpoint={self.image},writable=on",
                "--chardev", f"socket,id=qmp0,path={self.sock},server=on,wait=off",
                "--monitor", "chardev=qmp0"],
                stdout=lf, stderr=lf, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        wait_mounted(self.image, self.proc, 15, self.logfile)
        self.qmp = snaplat.QMP(self.sock)

    def snapshot(self, name):
        self.qmp.cmd("blockdev-snapshot-internal-sync", device="qcow2", name=name)

    def space_bytes(self):
        return du_bytes(self.qcow2)

    def clone_paths(self):
        return self.image, os.path.join(self.dir, "clone.img")

    def stop(self):
        self.stopped = True
        if self.qmp:
            try:
                self.qmp.cmd("quit")
            except Exception:  # noqa: BLE001
                pass
            self.qmp.close()
            self.qmp = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        super().stop()


class Snapdisk(Target):
    key = "sd"
    label = "snapdisk"
    can_snapshot = True

    def __init__(self, work, image_size, binary, opts):
        super().__init__(work, image_size)
        self.binary = binary
        self.opts = opts
        self.img_name = "disk.img"

    def start(self):
        if not self.binary or not os.access(self.binary, os.X_OK):
            raise RuntimeError(f"binary {self.binary} not found (not built?)")
        self.store = os.path.join(self.dir, "store")
        self.mnt = os.path.join(self.dir, "mnt")
        os.makedirs(self.mnt, exist_ok=True)
        self.logfile = os.path.join(self.dir, "daemon.log")
        cmd = [self.binary, "mount", self.store, self.mnt, "-f"]
        if self.opts:
            cmd += ["-o", self.opts]
        log(f"snapdisk: {' '.join(cmd)}")
        with open(self.logfile, "w") as lf:
            self.proc = subprocess.Popen(cmd, stdout=lf, stderr=lf, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        wait_mounted(self.mnt, self.proc, 60, self.logfile)
        self.image = os.path.join(self.mnt, self.img_name)
        create_image(self.image, self.image_size)

    def snapdir(self, img_name=None):
        return os.path.join(self.mnt, ".snapshots", img_name or self.img_name)

    def snapshot(self, name, img_name=None):
        os.mkdir(os.path.join(self.snapdir(img_name), name))

    def frozen(self, name, img_name=None):
        img_name = img_name or self.img_name
        return os.path.join(self.snapdir(img_name), name, img_name)

    def unique_bytes(self, name, img_name=None):
        """user.snapdisk.unique of a snapshot, or None if the xattr does not exist."""
        p = os.path.join(self.snapdir(img_name), name)
        for attr in ("user.snapdisk.unique",):
            try:
                v = os.getxattr(p, attr)
            except OSError:
                continue
            try:
                return int(v.decode().strip().split()[0])
            except ValueError:
                return None
        return None

    def store_bytes(self):
        return du_bytes(self.store)

    def clone_paths(self):
        return self.image, os.path.join(self.mnt, "clone.img")


# --------------------------------------------------------------------------
# fio
# --------------------------------------------------------------------------

FIO_JOBS = [
    # key, label, unit, fio args (beyond the common ones), time_based?
    ("seqwrite", "seq write 1M + end_fsync", "MiB/s", ["--rw=write", "--bs=1M", "--end_fsync=1"], False),
    ("seqread", "seq read 1M, cold", "MiB/s", ["--rw=read", "--bs=1M"], False),
    ("randread", "rand read 4k, cold", "IOPS", ["--rw=randread", "--bs=4k"], True),
    ("randwrite1", "rand write 4k, 1 job", "IOPS", ["--rw=randwrite", "--bs=4k"], True),
    ("randwrite2", "rand write 4k, 2 jobs", "IOPS", ["--rw=randwrite", "--bs=4k", "--numjobs=2"], True),
    ("randwrite_fsync", "rand write 4k, fsync every 32", "IOPS", ["--rw=randwrite", "--bs=4k", "--fsync=32"], True),
    ("randwrite_snap", "rand write 4k right after a snapshot", "IOPS", ["--rw=randwrite", "--bs=4k"], True),
]


SEQ_CAP_S = 120


def fio(path, size, args, runtime, time_based, outdir, tag, io_size=None, timeout=900):
    out = os.path.join(outdir, f"fio-{tag}.json")
    cmd = ["fio", "--name=job", f"--filename={path}", f"--size={size}",
           "--ioengine=psync", "--direct=0", "--iodepth=1", "--fallocate=none",
           "--group_reporting", "--output-format=json", f"--output={out}"] + args
    if time_based:
        cmd += ["--time_based", f"--runtime={runtime}"]
    elif not any(x.startswith("--runtime=") for x in args):
        cmd += [f"--runtime={SEQ_CAP_S}"]  # without time_based: an upper bound only
    if io_size:
        cmd += [f"--io_size={io_size}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"fio rc={r.returncode}: {(r.stderr or r.stdout).strip()[-400:]}")
    with open(out) as f:
        txt = f.read()
    # fio may print notes before the JSON object
    data = json.loads(txt[txt.index("{"):])
    job = data["jobs"][0]
    if job.get("error"):
        raise RuntimeError(f"fio job error {job['error']}")
    rw = "read" if "read" in [a for a in args if a.startswith("--rw=")][0] else "write"
    st = job[rw]
    return {"MiB/s": st["bw_bytes"] / MiB, "IOPS": st["iops"], "runtime_ms": st["runtime"]}


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------

class Results:
    def __init__(self):
        self.v = {}      # row -> target -> list of numbers | str (error/n-a note)
        self.notes = []

    def add(self, row, tgt, value):
        cur = self.v.setdefault(row, {}).get(tgt)
        if isinstance(value, str):
            if not isinstance(cur, list) or not cur:
                self.v[row][tgt] = value
            return
        if not isinstance(cur, list):
            cur = []
            self.v[row][tgt] = cur
        cur.append(value)

    MAX_ROWS = ("stall", "stall_series", "stall_base")  # worst case over runs, not the median

    def get(self, row, tgt):
        x = self.v.get(row, {}).get(tgt)
        if isinstance(x, list) and x:
            return max(x) if row in self.MAX_ROWS else median(x)
        return None

    def raw(self, row, tgt):
        return self.v.get(row, {}).get(tgt)


# --------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------

class Bench:
    def __init__(self, a):
        self.a = a
        self.res = Results()
        self.work = a.work
        self.fio_dir = os.path.join(self.work, "fio")
        os.makedirs(self.fio_dir, exist_ok=True)
        self.size = a.image_size
        self.targets = []
        self.phase_times = {}

    # ---------------------------------------------------------------- helpers
    def guard(self, t, row, what, fn):
        """Runs fn(); on failure records the error for (row, t) and returns None."""
        if not t.ok:
            self.res.add(row, t.key, f"n/a ({t.error})")
            return None
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            msg = t.fail(what, f"{type(e).__name__}: {e}")
            if self.a.verbose:
                traceback.print_exc()
            if not t.alive():
                t.error = msg
            self.res.add(row, t.key, f"error: {msg}")
            return None

    def phase(self, name):
        now = time.monotonic()
        if getattr(self, "_phase", None):
            self.phase_times[self._phase[0]] = now - self._phase[1]
        self._phase = (name, now) if name else None
        if name:
            log(f"== {name}")

    def over_budget(self, what):
        left = self.a.budget - (time.monotonic() - T0)
        if left < 0:
            log(f"time budget exhausted; skipping {what}")
            return True
        return False

    # ---------------------------------------------------------------- phases
    def start_targets(self):
        self.phase("start targets")
        a = self.a
        self.raw = Raw(self.work, self.size)
        self.pt = Passthrough(self.work, self.size, a.passthrough)
        self.qsd = Qsd(self.work, self.size)
        self.sd = Snapdisk(self.work, self.size, a.snapdisk, a.snapdisk_opts)
        self.targets = [self.raw, self.pt, self.qsd, self.sd]
        if not a.passthrough:
            self.pt.error = "passthrough_ll not built"
        for t in self.targets:
            if not t.ok:
                continue
            try:
                t.start()
                log(f"{t.label}: ready ({t.image})")
            except Exception as e:  # noqa: BLE001
                t.error = t.fail("start", f"{type(e).__name__}: {e}")
                try:
                    t.stop()
                except Exception:  # noqa: BLE001
                    pass

    def fio_rounds(self):
        a = self.a
        t_round = None
        self.rounds_done = 0
        for r in range(a.rounds):
            if t_round is not None:
                elapsed = time.monotonic() - T0
                if a.budget and elapsed + t_round + a.reserve > a.budget:
                    self.res.notes.append(
                        f"fio: ran {r} of {a.rounds} rounds: one more round (~{t_round:.0f} s) would not leave "
                        f"the {a.reserve:.0f} s the other phases need within the {a.budget:.0f} s budget")
                    log(f"skipping fio rounds {r + 1}..{a.rounds}: time budget")
                    break
            t_start = time.monotonic()
            self.phase(f"fio round {r + 1}/{a.rounds}")
            order = self.targets[r % 4:] + self.targets[:r % 4]
            for (key, label, unit, args, tb) in FIO_JOBS:
                for t in order:
                    if key == "randwrite_snap" and not t.can_snapshot:
                        continue
                    if not t.ok:
                        self.res.add(key, t.key, f"n/a ({t.error})")
                        continue

                    def job(t=t, key=key, args=args, tb=tb, unit=unit):
                        if key == "randwrite_snap":
                            t.snapshot(f"fio-r{r + 1}")
                        drop_caches()
                        v = fio(t.image, self.size, args, a.runtime, tb, self.fio_dir, f"{key}-{t.key}-{r}")
                        return v[unit]
                    v = self.guard(t, key, f"fio {key}", job)
                    if v is not None:
                        self.res.add(key, t.key, v)
                        log(f"  {key:16s} {t.label:20s} {v:12.1f} {unit}")
            t_round = time.monotonic() - t_start
            self.rounds_done = r + 1

    def clones(self):
        self.phase("cp clone of the fio image")
        for t in self.targets:
            if not t.ok:
                self.res.add("clone", t.key, f"n/a ({t.error})")
                continue

            def do(t=t):
                src, dst = t.clone_paths()
                if t is self.sd:
                    t.snapshot("clone-src")
                    src = t.frozen("clone-src")
                return self.timed_cp(src, dst, timeout=self.a.cp_timeout)
            v = self.guard(t, "clone", "cp clone", do)
            if v is not None:
                self.res.add("clone", t.key, v)
                log(f"  cp clone {t.label:20s} {v:10.1f} ms")
            if t is self.sd and t.ok:
                def do_live(t=t):
                    src, dst = t.clone_paths()
                    return self.timed_cp(src, dst, timeout=self.a.cp_timeout)
                v = self.guard(t, "clone_live", "cp live clone", do_live)
                if v is not None:
                    self.res.add("clone_live", t.key, v)
                    log(f"  cp clone (live) {t.label:12s} {v:10.1f} ms")

    def timed_cp(self, src, dst, timeout):
        drop_caches()
        # Page the cp program itself back in (its binary and libraries were
        # dropped too): reading /usr/bin/cp from disk took 9-11 ms here, as long
        # as a whole clone, and says nothing about the filesystem under test.
        subprocess.run(["cp", "--version"], capture_output=True)
        t0 = time.monotonic_ns()
        try:
            p = subprocess.run(["cp", src, dst], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.rm(dst)
            raise RuntimeError(f"cp took more than {timeout} s (killed)")
        ms = (time.monotonic_ns() - t0) / 1e6
        if p.returncode != 0:
            self.rm(dst)
            raise RuntimeError(f"cp failed: {p.stderr.strip()}")
        self.rm(dst)
        return ms

    @staticmethod
    def rm(p):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        except OSError as e:
            log(f"rm {p}: {e}")

    def stop_peers(self):
        """Record peak RSS of the peer daemons, stop them and free their space."""
        self.phase("stop peers")
        for t in (self.pt, self.qsd):
            if t.ok and t.proc:
                self.res.add("rss", t.key, t.rss())
        for t in (self.raw, self.pt, self.qsd):
            try:
                t.stop()
            except Exception as e:  # noqa: BLE001
                log(f"stopping {t.label}: {e}")
            shutil.rmtree(t.dir, ignore_errors=True)
            if t.ok:
                t.error = "stopped"  # no further use
        line = wait_io_quiet("after deleting the peers' files")
        log("  " + line)
        self.res.notes.append(line)

    def fill(self, path, size, tag):
        # No drop_caches first: nothing here is timed, and on a guest that
        # reports free memory to its host a drop sets off up to 20 s of the
        # host taking that memory back, which the series after the fill would
        # then wait out (wait_host_quiet) or time.
        fio(path, size, ["--rw=write", "--bs=1M", "--end_fsync=1", "--runtime=1800"], 0, False, self.fio_dir,
            f"fill-{tag}", timeout=1900)

    # space held by a snapshot after 240 MiB of 4k random writes ----------
    def space(self):
        self.phase("snapshot space after 240 MiB of 4k random writes")
        size = self.a.space_image
        # snapdisk: a fresh image in the mount
        t = self.sd
        if t.ok:
            def do():
                img = "space.img"
                path = os.path.join(t.mnt, img)
                create_image(path, size)
                self.fill(path, size, "space-sd")
                os.sync()
                before = t.store_bytes()
                t.snapshot("space", img)
                fio(path, size, ["--rw=randwrite", "--bs=4k", "--end_fsync=1"], 0, False, self.fio_dir,
                    "space-sd", io_size="240m")
                os.sync()
                time.sleep(1)
                delta = t.store_bytes() - before
                uniq = t.unique_bytes("space", img)
                self.res.notes.append(
                    f"snapdisk space test: store grew by {delta / MiB:.1f} MiB after the snapshot and 240 MiB "
                    f"of 4k random writes; user.snapdisk.unique = "
                    + ("absent" if uniq is None else f"{uniq / MiB:.1f} MiB"))
                self.sd_space_img = img
                return (uniq if uniq is not None else delta) / MiB
            v = self.guard(t, "space", "space", do)
            if v is not None:
                self.res.add("space", t.key, v)
                log(f"  space snapdisk {v:.1f} MiB")
        else:
            self.res.add("space", t.key, f"n/a ({t.error})")
        # qemu: a fresh qemu-storage-daemon with its own qcow2
        # cache.no-flush=on: qcow2 flushes between refcount and L2 updates on every cluster
        # allocation, which makes 61,440 COW writes take minutes; space use is the same.
        q = Qsd(self.work, size, key="qsd-space", file_opts=",cache.no-flush=on")
        q.label = "qemu-storage-daemon (space)"

        def doq():
            q.start()
            try:
                self.fill(q.image, size, "space-qsd")
                os.sync()
                before = q.space_bytes()
                q.snapshot("space")
                fio(q.image, size, ["--rw=randwrite", "--bs=4k", "--end_fsync=1"], 0, False, self.fio_dir,
                    "space-qsd", io_size="240m")
                os.sync()
                return (q.space_bytes() - before) / MiB
            finally:
                q.stop()
                shutil.rmtree(q.dir, ignore_errors=True)
        v = self.guard(q, "space", "space", doq)
        if v is not None:
            self.res.add("space", "qsd", v)
            log(f"  space qemu {v:.1f} MiB")
        elif isinstance(self.res.raw("space", q.key), str):
            self.res.add("space", "qsd", self.res.raw("space", q.key))

    # snapshot latency / stall / 32 GiB clone ---------------------------------
    def latency(self):
        a = self.a
        sizes = [("1g", 1 * GiB, a.image_size)]
        if not a.quick:
            sizes.append(("32g", 32 * GiB, 32 * GiB))
        for tag, written, imgsize in sizes:
            self.phase(f"snapshot latency, {tag} written")
            # snapdisk
            t = self.sd
            skip = None
            if t.ok and tag == "32g":
                rate = self.res.get("seqwrite", "sd") or 200.0
                est = written / MiB / rate + 60
                left = a.budget - (time.monotonic() - T0) - (90 if "many" in a.only_set else 20)
                if not self.space_ok(written * 1.15, "snapdisk 32 GiB image"):
                    skip = "skipped (not enough free space)"
                elif a.budget and est > left:
                    skip = (f"skipped: time budget (filling 32 GiB at {rate:.0f} MiB/s needs ~{est:.0f} s, "
                            f"{max(left, 0):.0f} s left of --budget {a.budget:.0f}; --budget 0 runs it)")
                    log(skip)
            if skip:
                t_skip = skip
                for k in ("idle", "load"):
                    self.res.add(f"snap_{tag}_{k}_p50", t.key, t_skip)
                    self.res.add(f"snap_{tag}_{k}_p99", t.key, t_skip)
                self.res.add("clone_32g", t.key, t_skip)
            elif t.ok:
                img = f"lat{tag}.img"
                path = os.path.join(t.mnt, img)

                def prep():
                    create_image(path, imgsize)
                    self.fill(path, written, f"lat-{tag}")
                    return True
                if self.guard(t, f"snap_{tag}_idle_p99", "prepare image", prep):
                    self.snap_lat(t, tag, lambda n: t.snapshot(n, img), path, written)
                    if tag == "1g":
                        self.raw_stall(tag, written)
                    if tag == "32g":
                        def c32():
                            return self.timed_cp(t.frozen(f"{tag}-idle-0000", img),
                                                 os.path.join(t.mnt, "clone32.img"), timeout=a.cp_timeout * 4)
                        v = self.guard(t, "clone_32g", "cp clone 32 GiB", c32)
                        if v is not None:
                            self.res.add("clone_32g", t.key, v)
                            log(f"  cp clone 32 GiB snapdisk {v:.1f} ms")
                    # Keep the image: deleting it would start snapdisk's background reclaim during
                    # the next phases. Delete it only if space is short.
                    if shutil.disk_usage(self.work).free < 40 * GiB:
                        self.delete_image(t, img)
            else:
                for k in ("idle", "load"):
                    self.res.add(f"snap_{tag}_{k}_p99", t.key, f"n/a ({t.error})")
            # qemu: a fresh daemon per size; 32 GiB is metadata-preallocated
            opts = None if tag == "1g" else "preallocation=metadata"
            q = Qsd(self.work, imgsize, key=f"qsd-lat{tag}", create_opts=opts)
            q.label = f"qemu-storage-daemon ({tag})"

            def doq(q=q, tag=tag, written=written):
                q.start()
                try:
                    if tag == "1g":
                        self.fill(q.image, written, f"lat-qsd-{tag}")
                    self.snap_lat(q, tag, q.snapshot, q.image, written, store_as="qsd")
                    self.res.add("rss_lat", "qsd", q.rss())
                finally:
                    q.stop()
                    shutil.rmtree(q.dir, ignore_errors=True)
            self.guard(q, f"snap_{tag}_idle_p99", "snapshot latency", doq)
            if isinstance(self.res.raw(f"snap_{tag}_idle_p99", q.key), str):
                self.res.add(f"snap_{tag}_idle_p99", "qsd", self.res.raw(f"snap_{tag}_idle_p99", q.key))
            if tag == "32g":
                self.res.notes.append("qemu-storage-daemon 32 GiB case: qcow2 created with "
                                      "preallocation=metadata (every cluster allocated, data not written), "
                                      "which is what an internal snapshot's refcount work depends on.")

    def series(self, take, prefix, path, span, load, state):
        """One timed series of a.snapshots calls of take(name), once I/O has
        settled; with `load`, under the 4k writer on `path` and 10 ms apart."""
        os.sync()
        host = wait_host_quiet("before the series")
        state["settle"] = wait_io_quiet("before the series", max_s=60) + (f"; {host}" if host else "")
        state["psi"] = psi("avg10")  # the last seconds before the series
        return snaplat.snapshot_latency(
            take, prefix, self.a.snapshots, load_path=path if load else None, load_span=span,
            tmpdir=self.work, spacing_s=0.01 if load else 0.0, deadline_s=self.a.snap_cap)

    def raw_stall(self, tag, written):
        """The write stall's baseline: the same writer and the same series on a
        raw file, where each "snapshot" call does nothing. Whatever gaps it sees
        are the machine's (the kernel, the host), not any filesystem's above it."""
        t = self.raw
        path = os.path.join(self.work, "raw-stall.img")
        state = {}

        def do():
            create_image(path, written)
            try:
                self.fill(path, written, f"stall-raw-{tag}")
                return self.series(lambda n: None, f"raw-{tag}", path, written, True, state)
            finally:
                self.rm(path)
        try:
            r = do()
        except Exception as e:  # noqa: BLE001
            self.res.notes.append(f"raw file stall baseline ({tag}): failed: {e}")
            log(f"raw file stall baseline: {e}")
            return
        self.res.add("stall_series", t.key, r["series_gap_ms"])
        self.res.add("stall_base", t.key, r["baseline_gap_ms"])
        line = (f"raw file {tag} load (the same writer and series, each call a no-op): longest gap in the series "
                f"{r['series_gap_ms']:.2f} ms (in the 1 s before it {r['baseline_gap_ms']:.2f} ms, "
                f"{r['write_iops']:.0f} writes/s); gaps over 5 ms during the series: {r['long_gaps']}"
                + self.host_note(r) + f"; {state.get('settle', '')}")
        log("  " + line)
        self.res.notes.append("write stall baseline, " + line)

    @staticmethod
    def host_note(r):
        out = ""
        if r.get("host_reported_mib") is not None:
            out += f"; free memory the guest reported to the host during the series: {r['host_reported_mib']:.0f} MiB"
        if r.get("steal_ms") is not None:
            out += f"; CPU time the host took from the vCPUs during the series (steal): {r['steal_ms']:.0f} ms"
        return out

    def snap_lat(self, t, tag, take, path, span, store_as=None):
        key = store_as or t.key
        state = {}
        for mode in ("idle", "load"):
            def do(mode=mode):
                return self.series(take, f"{tag}-{mode}", path, span, mode == "load", state)
            r = self.guard(t, f"snap_{tag}_{mode}_p99", f"snapshots {tag} {mode}", do)
            if r is None:
                if isinstance(self.res.raw(f"snap_{tag}_{mode}_p99", t.key), str) and key != t.key:
                    self.res.add(f"snap_{tag}_{mode}_p99", key, self.res.raw(f"snap_{tag}_{mode}_p99", t.key))
                continue
            self.res.add(f"snap_{tag}_{mode}_p50", key, r["p50_ms"])
            self.res.add(f"snap_{tag}_{mode}_p99", key, r["p99_ms"])
            extra = ""
            if mode == "load":
                self.res.add("stall", key, r["stall_ms"])
                self.res.add("stall_series", key, r["series_gap_ms"])
                self.res.add("stall_base", key, r["baseline_gap_ms"])
                self.res.add(f"load_iops_{tag}", key, r["write_iops"])
                extra = (f" stall {r['stall_ms']:.2f} ms (no-snapshot max gap {r['baseline_gap_ms']:.2f} ms,"
                         f" {r['write_iops']:.0f} writes/s)")
                if r.get("stall_where"):
                    extra += (f"; {r['stall_where']}; gaps over 5 ms during the series: {r['long_gaps']}, "
                              f"{r['long_gaps_overlapping']} of them overlapping a snapshot call")
                if r.get("writer_error"):
                    extra += f" writer error: {r['writer_error']}"
            extra += self.host_note(r)
            if r.get("truncated"):
                self.res.notes.append(f"{t.label} {tag} {mode}: {r['truncated']}")
            if r.get("error"):
                self.res.notes.append(f"{t.label} {tag} {mode}: {r['error']} after {r['n']} snapshots")
            line = (f"{t.label} {tag} {mode}: n={r['n']} p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms "
                    f"max {r['max_ms']:.3f} ms{extra}; pressure (PSI some avg10, cpu / io) at the start: "
                    f"{state.get('psi', '?')}; {state.get('settle', '')}")
            log("  " + line)
            self.res.notes.append("snapshot latency, " + line)

    def space_ok(self, need, what):
        free = shutil.disk_usage(self.work).free
        if free < need:
            self.res.notes.append(f"{what}: skipped, {free / GiB:.1f} GiB free < {need / GiB:.1f} GiB needed")
            log(f"skipping {what}: not enough free space")
            return False
        return True

    def delete_image(self, t, img):
        d = t.snapdir(img)
        try:
            for n in os.listdir(d):
                try:
                    os.rmdir(os.path.join(d, n))
                except OSError as e:
                    log(f"rmdir snapshot {n}: {e}")
                    return
            os.unlink(os.path.join(t.mnt, img))
        except OSError as e:
            log(f"deleting {img}: {e}")

    # 10,000 snapshots ----------------------------------------------------------
    def many(self):
        a = self.a
        self.phase(f"{a.many} snapshots on one image")
        t = self.sd
        if not t.ok:
            for row in ("many_mkdir_p99", "many_ls", "many_read"):
                self.res.add(row, t.key, f"n/a ({t.error})")
            return
        img = "many.img"
        path = os.path.join(t.mnt, img)
        size = a.many_image
        state = {}

        # Two twins, filled the same way and left at one snapshot, read
        # alternately with the image at 10,000 snapshots (the same
        # drop_caches before each), so that the machine's drift between
        # states (reads of one state spread ±15 % here) is not in a ratio:
        # - the twin gets the same 4 KiB writes as the image, at the same
        #   offsets and in the same order, all after its one snapshot. Only
        #   the number of snapshots differs: the bar's baseline.
        # - the plain twin gets none of them: what the image read before
        #   the writes, for the record (the writes after a snapshot leave
        #   each written block in two versions, and a read of the block
        #   reads both, with 1 snapshot as with 10,000).
        twin = "many-twin.img"
        twin_path = os.path.join(t.mnt, twin)
        plain = "many-plain.img"
        plain_path = os.path.join(t.mnt, plain)

        def prep():
            for p, name in ((path, img), (twin_path, twin), (plain_path, plain)):
                create_image(p, size)
                self.fill(p, size, "many")
                t.snapshot("base", name)
            os.sync()
            time.sleep(1)
            return True
        if not self.guard(t, "many_mkdir_p99", "prepare", prep):
            return
        import random
        rng = random.Random(7)
        buf = os.urandom(4096)
        nblk = size // 4096

        rmdir_ok = True

        def probe(name, label, i, lat):
            # One probe: mkdir timed, then rmdir it again.
            nonlocal rmdir_ok
            p = os.path.join(t.snapdir(name), f"probe-{label}-{i:04d}")
            t0 = time.monotonic_ns()
            os.mkdir(p)
            lat.append((time.monotonic_ns() - t0) / 1e6)
            if rmdir_ok:
                try:
                    os.rmdir(p)
                except OSError as e:
                    rmdir_ok = False
                    self.res.notes.append(f"rmdir of a snapshot failed ({e}); probes accumulate")

        def measure(label, n_existing):
            # mkdir latency with n_existing snapshots: many_probes probes; at
            # N they alternate, probe by probe, with probes of the twin (1
            # snapshot), the bar's baseline. A p99 of 100 tiny figures (about
            # 0.1 ms) is the second-worst, which one scheduling hiccup moves
            # by half; measured an hour apart, the machine's drift was in the
            # ratio too (bench/README.md, "What each figure means").
            host = wait_host_quiet(f"before the mkdir probes at {n_existing} snapshot(s)")
            if host:
                self.res.notes.append(host)
            lat, twin_lat = [], []
            for i in range(a.many_probes):
                probe(img, label, i, lat)
                if label == "N":
                    probe(twin, "twin", i, twin_lat)
            self.res.add(f"many_mkdir_p50_{label}", t.key, percentile(lat, 50))
            self.res.add(f"many_mkdir_p99_{label}", t.key, percentile(lat, 99))
            if twin_lat:
                self.res.add("many_mkdir_p99_twin", t.key, percentile(twin_lat, 99))
                self.res.notes.append(
                    f"mkdir probes at {n_existing} snapshots and of the 1-snapshot twin, alternating: "
                    f"p50 {percentile(lat, 50):.3f} / {percentile(twin_lat, 50):.3f} ms, "
                    f"p99 {percentile(lat, 99):.3f} / {percentile(twin_lat, 99):.3f} ms, "
                    f"max {max(lat):.3f} / {max(twin_lat):.3f} ms ({len(lat)} each)")
            d = t.snapdir(img)
            drop_caches()
            t0 = time.monotonic_ns()
            r = subprocess.run(["ls", "-l", d], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
            ls_ms = (time.monotonic_ns() - t0) / 1e6
            if r.returncode != 0:
                raise RuntimeError(f"ls -l failed: {r.stderr.strip()}")
            self.res.add(f"many_ls_{label}", t.key, ls_ms)
            # Cold seq reads of the live image; at N, alternately with the twins.
            # First the background work of the snapshots just made (the
            # index's compactions, write-back) settles, as before every
            # latency series: a read that shares the disk with it measures it.
            os.sync()
            # (No wait for the host here: every read below follows its own
            # drop_caches, and what that sets off spills into the next read
            # anyway; the rotating order spreads it over the images.)
            self.res.notes.append(wait_io_quiet(f"before the reads at {n_existing} snapshot(s)", max_s=60))
            reads, twin_reads, plain_reads = [], [], []
            targets = [(path, reads, label)]
            if label == "N":
                targets[:0] = [(twin_path, twin_reads, "twin"), (plain_path, plain_reads, "plain")]
            for rnd in range(5 if label == "N" else 3):
                # Each read follows its own drop_caches, whose aftermath (the
                # host taking back the freed memory) spills into the reads after
                # it: the order rotates so that no image always reads third.
                for p, out, tag in targets[rnd % len(targets):] + targets[:rnd % len(targets)]:
                    drop_caches()
                    out.append(fio(p, size, ["--rw=read", "--bs=1M"], 0, False, self.fio_dir,
                                   f"many-read-{tag}")["MiB/s"])
                if size / MiB / reads[0] > 5:
                    break  # slow machine: one round of reads is all the time allows
            rd = median(reads)
            if label == "N":
                self.res.add("many_read_N", t.key, rd)
                self.res.add("many_read_1", t.key, median(twin_reads))
                self.res.add("many_read_plain", t.key, median(plain_reads))
                self.res.notes.append(f"live read with {n_existing} snapshots, cold fio seq reads alternating "
                                      "with the 1-snapshot twins (same writes / no writes): "
                                      + ", ".join(f"{x:.0f} ({y:.0f} / {z:.0f})"
                                                  for x, y, z in zip(reads, twin_reads, plain_reads))
                                      + " MiB/s")
            else:
                self.res.add("many_read_before", t.key, rd)
                self.res.notes.append(f"live read with 1 snapshot, before the {a.many:,}, cold fio seq reads: "
                                      + ", ".join(f"{x:.0f}" for x in reads) + " MiB/s")
            log(f"  {n_existing} snapshots: mkdir p50 {percentile(lat, 50):.3f} p99 {percentile(lat, 99):.3f} ms,"
                f" ls -l {ls_ms:.1f} ms, live read {rd:.0f} MiB/s"
                + (f" (twin with 1 snapshot {median(twin_reads):.0f})" if twin_reads else ""))

        if self.guard(t, "many_mkdir_p99_1", "measure at 1 snapshot", lambda: measure("1", 1) or True) is None:
            return

        def create_many():
            t0 = time.monotonic()
            made = 1
            d = t.snapdir(img)
            while made < a.many:
                at = rng.randrange(nblk) * 4096
                os.pwrite(fd, buf, at)
                os.pwrite(twin_fd, buf, at)
                os.mkdir(os.path.join(d, f"s{made:05d}"))
                made += 1
                if made % 2000 == 0:
                    log(f"  {made} snapshots ({time.monotonic() - t0:.1f} s)")
                if time.monotonic() - t0 > a.many_cap:
                    self.res.notes.append(f"10k test: stopped creating at {made} snapshots ({a.many_cap:.0f} s cap)")
                    break
            state["made"] = made
            state["secs"] = time.monotonic() - t0
            return True
        fd = os.open(path, os.O_WRONLY)
        twin_fd = os.open(twin_path, os.O_WRONLY)
        try:
            ok = self.guard(t, "many_mkdir_p99_N", "create snapshots", create_many)
        finally:
            os.close(fd)
            os.close(twin_fd)
        if not ok:
            return
        made = state["made"]
        self.many_made = made
        log(f"  created {made} snapshots in {state['secs']:.1f} s")
        self.res.add("many_create_rate", t.key, made / max(state["secs"], 1e-9))
        self.guard(t, "many_mkdir_p99_N", f"measure at {made}", lambda: measure("N", made) or True)

        def oldest():
            drop_caches()
            return fio(t.frozen("base", img), size, ["--rw=read", "--bs=1M", "--readonly"], 0, False,
                       self.fio_dir, "many-read-old")["MiB/s"]
        v = self.guard(t, "many_read_old", "read oldest snapshot", oldest)
        if v is not None:
            self.res.add("many_read_old", t.key, v)

    def final_rss(self):
        self.phase("snapdisk peak RSS")
        if self.sd.ok:
            self.res.add("rss", "sd", self.sd.rss())
            # store size, for the record
            try:
                self.res.notes.append(f"snapdisk store at the end: {du_bytes(self.sd.store) / GiB:.2f} GiB on disk")
            except OSError:
                pass
        else:
            self.res.add("rss", "sd", f"n/a ({self.sd.error})")

    def stop_all(self):
        self.phase("stop")
        for t in self.targets:
            try:
                t.stop()
            except Exception as e:  # noqa: BLE001
                log(f"stopping {t.label}: {e}")
        sd = self.sd if self.targets else None
        if sd is not None and sd.proc is not None:
            if sd.stop_note:
                self.res.notes.append(sd.stop_note)
            elif sd.exit_s is not None:
                self.res.notes.append(f"snapdisk exited {sd.exit_s:.1f} s after its unmount")
            try:
                with open(sd.logfile, errors="replace") as f:
                    served = [ln.strip() for ln in f if "serving over" in ln]
            except OSError:
                served = []
            if served:  # the transport each mount used (docs/transport.md)
                self.res.notes.append("snapdisk transport: " + "; ".join(sorted(set(served))))
            self.res.notes.append("snapdisk daemon log, last lines: `" + tail(sd.logfile, 8).replace("`", "'") + "`")
        self.phase(None)


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

COLS = [("raw", "raw file"), ("pt", "passthrough_ll"), ("qsd", "qemu-storage-daemon"), ("sd", "snapdisk")]


def fmt(v, unit):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if unit in ("IOPS",):
        return f"{v:,.0f}"
    if unit in ("MiB/s", "MiB"):
        return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"
    if unit == "ms":
        if v >= 1000:
            return f"{v / 1000:,.2f} s"
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    if unit == "/s":
        return f"{v:,.0f}"
    return f"{v:g}"


FOOTNOTES = {}


def footnote(msg):
    msg = " ".join(msg.replace("|", "/").split())
    if msg not in FOOTNOTES:
        FOOTNOTES[msg] = len(FOOTNOTES) + 1
    return FOOTNOTES[msg]


def cell(res, row, tgt, unit):
    x = res.raw(row, tgt)
    if isinstance(x, list) and x:
        return fmt(res.get(row, tgt), unit)
    if isinstance(x, str):
        if x.startswith("n/a (") and x.endswith(")"):
            return f"n/a [{footnote(x[5:-1])}]"
        if x.startswith("error: "):
            return f"error [{footnote(x[7:])}]"
        if x.startswith("skipped"):
            return f"skipped [{footnote(x)}]"
        return f"[{footnote(x)}]"
    return "—"


def report(b, meta):
    res = b.res
    a = b.a
    q = a.quick
    sz = f"{a.image_size // GiB} GiB"
    many = getattr(b, "many_made", a.many)
    rows = []  # (row key, label, unit, bar)

    def sd_over(peer, row, k, ge=True):
        s, p = res.get(row, "sd"), res.get(row, peer)
        if s is None or p is None or p == 0:
            return None, "—"
        ratio = s / p
        return (ratio >= k) if ge else (ratio <= k), f"{ratio:.2f}×"

    def abs_bar(row, lim, le=True, strict=False):
        s = res.get(row, "sd")
        if s is None:
            return None, "—"
        if strict:
            return (s < lim) if le else (s > lim), None
        return (s <= lim) if le else (s >= lim), None

    def rel_bar(row_new, row_old, k, ge=True):
        s, o = res.get(row_new, "sd"), res.get(row_old, "sd")
        if s is None or o is None or o == 0:
            return None, "—"
        return (s / o >= k) if ge else (s / o <= k), f"{s / o:.2f}×"

    rows += [
        ("seqwrite", f"seq write 1M + end_fsync ({sz}), MiB/s", "MiB/s",
         ("≥1.25× qemu-storage-daemon", lambda: sd_over("qsd", "seqwrite", 1.25))),
        ("seqread", f"seq read 1M, cold ({sz}), MiB/s", "MiB/s",
         ("≥1.0× passthrough_ll", lambda: sd_over("pt", "seqread", 1.0))),
        ("randwrite1", "rand write 4k, 1 job, IOPS", "IOPS",
         ("≥1.0× passthrough_ll", lambda: sd_over("pt", "randwrite1", 1.0))),
        ("randwrite2", "rand write 4k, 2 jobs, IOPS", "IOPS", None),
        ("randread", "rand read 4k, cold, IOPS", "IOPS", ("≥0.9× raw", lambda: sd_over("raw", "randread", 0.9))),
        ("randwrite_fsync", "rand write 4k, fsync every 32, IOPS", "IOPS",
         ("≥1.0× passthrough_ll", lambda: sd_over("pt", "randwrite_fsync", 1.0))),
        ("randwrite_snap", "rand write 4k right after a snapshot, IOPS", "IOPS",
         ("≥0.8× own rate before (rand write 4k, 1 job)", lambda: rel_bar("randwrite_snap", "randwrite1", 0.8))),
    ]
    sizes = ["1g"] + ([] if q else ["32g"])
    for tag in sizes:
        w = "1 GiB" if tag == "1g" else "32 GiB"
        for mode in ("idle", "load"):
            ml = "idle" if mode == "idle" else "under 4k write load"
            rows.append((f"snap_{tag}_{mode}_p50", f"snapshot create p50, {w} written, {ml}, ms", "ms", None))
            rows.append((f"snap_{tag}_{mode}_p99", f"snapshot create p99, {w} written, {ml}, ms", "ms",
                         ("<1 ms", lambda r=f"snap_{tag}_{mode}_p99": abs_bar(r, 1.0, strict=True))))
    rows += [
        ("stall", "longest 4k write stall during a snapshot, ms", "ms", ("<5 ms", lambda: abs_bar("stall", 5.0, strict=True))),
        ("stall_series", "longest 4k write gap anywhere in a load series (raw file: the same series with "
         "no-op calls, 1 GiB only), ms", "ms", None),
        ("stall_base", "longest 4k write gap with no snapshot (noise floor), ms", "ms", None),
        ("clone", f"cp clone, {sz} fully written image, ms", "ms", ("≤10 ms", lambda: abs_bar("clone", 10.0))),
        ("clone_live", f"cp clone of the live image ({sz}), ms", "ms", None),
    ]
    if not q:
        rows.append(("clone_32g", "cp clone, 32 GiB fully written image, ms", "ms",
                     ("≤10 ms", lambda: abs_bar("clone_32g", 10.0))))
    rows += [
        ("space", "space a snapshot holds after 240 MiB of 4k random writes, MiB", "MiB",
         ("≤360 MiB", lambda: abs_bar("space", 360.0))),
        ("rss", "daemon peak RSS (VmHWM), MiB", "MiB", ("≤256 MiB", lambda: abs_bar("rss", 256.0))),
        ("many_mkdir_p99_1", f"snapshot mkdir p99 with 1 snapshot, before the {many:,}, ms", "ms", None),
        ("many_mkdir_p99_twin", "snapshot mkdir p99 of a twin with 1 snapshot, alternating with the next row, ms",
         "ms", None),
        ("many_mkdir_p99_N", f"snapshot mkdir p99 with {many:,} snapshots, ms", "ms",
         ("≤1.1× with 1 snapshot", lambda: rel_bar("many_mkdir_p99_N", "many_mkdir_p99_twin", 1.1, ge=False))),
        ("many_ls_1", "`ls -l .snapshots/IMG` with 1 snapshot, ms", "ms", None),
        ("many_ls_N", f"`ls -l .snapshots/IMG` with {many:,} snapshots, ms", "ms", None),
        ("many_read_before", f"live image seq read ({a.many_image // MiB} MiB) with 1 snapshot, before the "
         f"{many:,}, MiB/s", "MiB/s", None),
        ("many_read_plain", "live seq read of a twin with 1 snapshot and none of the writes, alternating "
         "with the next two rows, MiB/s", "MiB/s", None),
        ("many_read_1", "live seq read of a twin with 1 snapshot and the same writes after it, "
         "alternating with the next row, MiB/s", "MiB/s", None),
        ("many_read_N", f"live image seq read with {many:,} snapshots, MiB/s", "MiB/s",
         ("≥0.9× with 1 snapshot", lambda: rel_bar("many_read_N", "many_read_1", 0.9))),
        ("many_read_old", f"oldest snapshot seq read with {many:,} snapshots, MiB/s", "MiB/s", None),
        ("many_create_rate", "snapshots created per second (each after one 4k write)", "/s", None),
    ]

    out = []
    hdr = "| measurement | " + " | ".join(c[1] for c in COLS) + \
          " | snapdisk ÷ raw | snapdisk ÷ passthrough_ll | snapdisk ÷ qemu | bar | verdict |"
    out.append(hdr)
    out.append("|---|" + "---:|" * len(COLS) + "---:|---:|---:|---|---|")
    verdicts = []
    for key, label, unit, bar in rows:
        cells = [cell(res, key, c[0], unit) for c in COLS]
        ratios = []
        s = res.get(key, "sd")
        for peer in ("raw", "pt", "qsd"):
            p = res.get(key, peer)
            ratios.append(f"{s / p:.2f}" if (s is not None and p) else "")
        btxt, verdict = "", ""
        if bar:
            btxt = bar[0]
            try:
                ok, _ = bar[1]()
            except Exception:  # noqa: BLE001
                ok = None
            if ok is None:
                rawv = res.raw(key, "sd")
                verdict = "SKIP" if isinstance(rawv, str) and rawv.startswith("skipped") else "n/a"
            else:
                verdict = "PASS" if ok else "FAIL"
            verdicts.append((label, btxt, verdict))
        out.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + f" | {btxt} | {verdict} |")
    table = "\n".join(out)

    lines = []
    lines.append(f"# snapdisk benchmark — {meta['date']}{' (--quick)' if q else ''}\n")
    lines.append(f"Command: `{meta['command']}`  ")
    lines.append(f"Duration: {meta['duration']}  ")
    lines.append(f"Commit: {meta['commit']}\n")
    lines.append("## Machine and versions\n")
    for k, v in meta["machine"].items():
        lines.append(f"- {k}: {v}")
    lines.append("")
    lines.append("## Method\n")
    lines.append(
        f"- fio {meta['versions'].get('fio', '?')}, ioengine=psync, direct=0 (buffered), iodepth=1, one {sz} image per "
        f"target, caches dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before every job; seq jobs cover the "
        f"whole image once, 4k jobs are time-based ({a.runtime} s). {getattr(b, 'rounds_done', a.rounds)} of "
        f"{a.rounds} round(s), jobs interleaved "
        f"round-robin across targets (the start target rotates each round); figures are medians over rounds.")
    lines.append(
        "- raw: a sparse file on the host filesystem. passthrough_ll: libfuse's example, built with "
        "-DHAVE_COPY_FILE_RANGE -DHAVE_FALLOCATE -DHAVE_POSIX_FALLOCATE -DHAVE_SETXATTR, default options "
        "(no writeback cache), multithreaded. qemu-storage-daemon: a qcow2 image (64 KiB clusters, defaults) "
        "exported as a FUSE file, writable=on, snapshots are qcow2 internal snapshots over QMP "
        "(blockdev-snapshot-internal-sync). snapdisk: `snapdisk mount STORE MNT -f"
        + (f" -o {a.snapdisk_opts}" if a.snapdisk_opts else "") + "`, snapshots are `mkdir .snapshots/IMG/NAME`.")
    lines.append(
        f"- Snapshot latency: {a.snapshots} snapshots timed one by one (mkdir or the QMP round trip) on an image "
        "with 1 GiB (and 32 GiB) written; p50/p99 by nearest rank. \"Under load\" = a separate process doing "
        "4k pwrite()s at random offsets of the written range in a loop (no fsync) meanwhile, snapshots 10 ms "
        "apart; the write stall is the longest gap between two write completions that overlaps a snapshot call, "
        "over all load runs; the noise floor is the longest gap in the 1 s of load before the first snapshot. "
        "The raw file gets the same writer and the same 1 GiB series with calls that do nothing, right after "
        "snapdisk's: its longest gap anywhere in the series is the machine's own share of a stall (the kernel, "
        "the host), and the row beside the stall gives every target's figure on that footing. "
        "Each series starts once I/O has settled (under 5 % of a second stalled on I/O, at most 60 s; "
        "after the peers' files are deleted, at most 120 s) and, where the kernel counts it, once the guest "
        "has reported under 16 MiB of free memory to its host over 3 s (at most 40 s): the host's discarding of the memory "
        "a drop_caches freed stalls the vCPUs, whatever runs on them.")
    lines.append(
        "- cp clone: wall time of GNU `cp SRC DST` (snapdisk: SRC is the frozen view of a fresh snapshot, DST a "
        "new image in the mount; passthrough_ll: both in its mount; qemu: the export file copied to the host "
        "filesystem, as it has no namespace of its own), caches dropped first and then the cp binary paged in again "
        "(`cp --version`, untimed); the copy is deleted after.")
    lines.append(
        "- Snapshot space: fresh image fully written, one snapshot, then 240 MiB of 4k random writes (each block "
        "once, end_fsync). snapdisk: `user.snapdisk.unique` of the snapshot if present, else the store directory's "
        "growth (du); qemu: the qcow2 file's growth (du), with cache.no-flush=on on that daemon to keep "
        "the run short (space use does not depend on flushes).")
    lines.append(
        f"- Many snapshots: a {a.many_image // MiB} MiB fully written image; at 1 snapshot and again at "
        f"{many:,} snapshots (each created after one 4k random write), {a.many_probes}× (mkdir + rmdir of a probe "
        "snapshot, once the host's reporting has paused as before a latency series; at "
        f"{many:,}, each probe followed by one of the twin below, whose p99 is the bar's baseline), then `ls -l` of the "
        "snapshot folder (cold) and, once I/O has settled as before a latency "
        "series, cold fio seq reads (1M) of the live image: "
        f"3 at 1 snapshot; at {many:,}, 5 rounds that alternate with reads of two twins filled the same way "
        "(the order rotating each round) and "
        f"left at 1 snapshot: one got the same {many:,} writes (same offsets, same order) after its snapshot, "
        "the baseline of the bar, so that only the number of snapshots differs; the plain one got none "
        "(medians; one read per image if a read takes over 5 s).")
    lines.append("- Ratios are snapdisk's figure divided by the peer's, whatever the unit (for times and sizes, "
                 "lower is better).\n")
    lines.append("## Results\n")
    lines.append(table)
    lines.append("")
    lines.append("## Bars\n")
    for label, btxt, verdict in verdicts:
        lines.append(f"- {verdict}: {label} — {btxt}")
    lines.append("")
    if res.notes or meta.get("errors") or FOOTNOTES:
        lines.append("## Notes\n")
        for msg, k in sorted(FOOTNOTES.items(), key=lambda kv: kv[1]):
            lines.append(f"- [{k}] {msg}")
        for n in res.notes:
            lines.append(f"- {n}")
        for t, e in meta.get("errors", {}).items():
            lines.append(f"- {t}: {e}" if t == "run" else f"- {t} unusable: {e}")
        lines.append("")
    per_round = []
    for key, label, unit, bar in rows:
        vals = []
        for c in COLS:
            x = res.raw(key, c[0])
            if isinstance(x, list) and len(x) > 1:
                vals.append(", ".join(fmt(v, unit) for v in x))
            else:
                vals.append("")
        if any(vals):
            per_round.append(f"| {label} | " + " | ".join(vals) + " |")
    if per_round:
        lines.append("## Per-round values\n")
        lines.append("| measurement | " + " | ".join(c[1] for c in COLS) + " |")
        lines.append("|---|" + "---|" * len(COLS))
        lines += per_round
        lines.append("")
    lines.append("## Phase durations\n")
    for k, v in b.phase_times.items():
        lines.append(f"- {k}: {v:.1f} s")
    lines.append("")
    return "\n".join(lines), verdicts, table


def pressure_some(kind):
    """The "some" line of /proc/pressure/KIND as a dict (avg10, avg60, avg300: %, total: µs), or None."""
    try:
        with open(f"/proc/pressure/{kind}") as f:
            return dict(kv.split("=") for kv in f.readline().split()[1:])
    except (OSError, ValueError):
        return None


def psi(avg="avg60"):
    """"cpu% / io%" of /proc/pressure's "some" line, averaged over avg (avg10, avg60 or avg300)."""
    out = []
    for k in ("cpu", "io"):
        some = pressure_some(k)
        out.append(some[avg] + "%" if some and avg in some else "?")
    return " / ".join(out)


def io_stall_us():
    """Microseconds some task stalled on I/O since boot (/proc/pressure/io, "some" total), or None."""
    some = pressure_some("io")
    try:
        return int(some["total"]) if some else None
    except (KeyError, ValueError):
        return None


def wait_host_quiet(what, max_s=40.0, quiet_s=3.0, trickle_mib=16):
    """Waits until the guest has reported less than trickle_mib of free memory
    to its host over the last quiet_s, or max_s passed. A drop_caches (before
    every cold read) frees memory that this machine's kernel then reports in
    passes about 2 s apart for up to 20 s, hundreds of MiB each, and while the
    host discards it the vCPUs stall for up to tens of ms, whatever runs on
    them: a series timed then times the host (bench/README.md, "Since 10:00
    on 2026-12-05"). A few MiB now and then is the machine's steady trickle.
    Returns a clause for the notes, or "" on a kernel without the counter."""
    last = snaplat.host_reported_kib()
    if last is None:
        return ""
    t0 = time.monotonic()
    events = []  # (time, KiB reported since the previous reading)
    total = 0
    while True:
        now = time.monotonic()
        recent = sum(k for t, k in events if t > now - quiet_s)
        if now - t0 >= quiet_s and recent < trickle_mib * 1024:
            return (f"{what}: waited {now - t0:.0f} s for the host's free page reporting to pause "
                    f"({total / 1024:.0f} MiB meanwhile)")
        if now - t0 >= max_s:
            return (f"{what}: the host's free page reporting still active after {now - t0:.0f} s "
                    f"({total / 1024:.0f} MiB meanwhile); measured anyway")
        time.sleep(0.1)
        cur = snaplat.host_reported_kib()
        if cur is not None and cur != last:
            events.append((time.monotonic(), cur - last))
            total += cur - last
            last = cur


def wait_io_quiet(what, max_s=120.0, share=0.05):
    """Waits until, over one second, tasks stalled on I/O less than `share` of it,
    or max_s passed, so that a timed series does not also time other I/O on the
    machine (such as discards after the peers' files are deleted on a file system
    mounted with discard). Returns a line for the notes."""
    t0 = time.monotonic()
    while True:
        a = io_stall_us()
        if a is None:
            return f"{what}: no /proc/pressure/io, did not wait for I/O to settle"
        time.sleep(1.0)
        b = io_stall_us()
        last = (b - a) / 1e6
        waited = time.monotonic() - t0
        if last < share:
            return f"{what}: waited {waited:.0f} s for I/O to settle (I/O stall {last * 100:.1f} % of the last second)"
        if waited >= max_s:
            return (f"{what}: I/O still busy after {waited:.0f} s (stall {last * 100:.0f} % of the last second); "
                    "measured anyway")


def read_text(path):
    """A small /proc or /sys file's text, stripped, or None if unreadable."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def cpu_sharing():
    """What else takes this machine's CPUs from a daemon's pinned ring
    threads, and how the scheduler hands them out: the kernel's DAMON
    threads (a kdamond running a pageout scheme held a vCPU for 0.5-0.9 ms
    every 0.5 s and 3.4-3.9 ms every 5 s), the host's vCPU packing, autogroup
    (bench/README.md, "Since 12:45 on 2026-12-05")."""
    parts = []
    damon = "/sys/kernel/mm/damon/admin/kdamonds"
    for k in sorted(os.listdir(damon)) if os.path.isdir(damon) else []:
        kd = os.path.join(damon, k)
        if not os.path.isdir(kd) or read_text(os.path.join(kd, "state")) != "on":
            continue
        ctx = os.path.join(kd, "contexts", "0")
        ops = read_text(os.path.join(ctx, "operations")) or "?"
        iv = os.path.join(ctx, "monitoring_attrs", "intervals")
        sample, aggr = read_text(os.path.join(iv, "sample_us")), read_text(os.path.join(iv, "aggr_us"))
        schemes = os.path.join(ctx, "schemes")
        actions = [read_text(os.path.join(schemes, n, "action")) or "?"
                   for n in sorted(os.listdir(schemes)) if n.isdigit()] if os.path.isdir(schemes) else []
        desc = f"kdamond {k} ({ops}"
        if sample and sample.isdigit() and aggr and aggr.isdigit():
            desc += f", samples every {int(sample) / 1000:.0f} ms, aggregates every {int(aggr) / 1000:.0f} ms"
        parts.append(desc + (f", schemes: {', '.join(actions)})" if actions else ")"))
    pack = read_text("/proc/sys/kernel/sched_vcpu_pack")
    if pack is not None:
        parts.append(f"sched_vcpu_pack {pack}")
    autogroup = read_text("/proc/sys/kernel/sched_autogroup_enabled")
    if autogroup is not None:
        parts.append("autogroup " + ("on" if autogroup == "1" else "off"))
    return "; ".join(parts) or None


def host_page_reporting():
    """How this guest hands free memory back to its host, if it does: the
    virtio balloon's free page reporting, which makes the host discard each
    reported block (bench/README.md, "Since 10:00 on 2026-12-05")."""
    d = "/sys/module/page_reporting/parameters"
    try:
        balloons = [n for n in os.listdir("/sys/bus/virtio/drivers/virtio_balloon") if n.startswith("virtio")]
    except OSError:
        balloons = []
    if not os.path.isdir(d) or not balloons:
        return None

    def val(name):
        return read_text(os.path.join(d, name))
    order = val("page_reporting_order")
    out = f"on, blocks of order {order} ({4 << int(order)} KiB) and up" if order and order.isdigit() else "on"
    if val("min_free_ms") is not None:
        out += f", reported after {val('min_free_ms')} ms free"
    kib = snaplat.host_reported_kib()
    if kib is not None:
        out += f", {kib / (1 << 30):.0f} TiB reported since boot"
    return out


def metadata(a, duration):
    def first(cmd):
        return sh_out(cmd).splitlines()[0] if sh_out(cmd) else "?"
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / (1 << 20):.1f} GiB"
    except OSError:
        pass
    cpu = sh_out("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    work_fs = sh_out(f"df -T {a.work} | tail -1 | awk '{{print $1\" \"$2}}'")
    tmp_fs = sh_out("df -T /tmp | tail -1 | awk '{print $1\" \"$2}'")
    rev = sh_out(f"git -C {a.repo} rev-parse --short HEAD")
    dirty = sh_out(f"git -C {a.repo} status --porcelain --untracked-files=no | wc -l")
    commit = f"{rev}" + (f" (+{dirty} modified tracked files)" if dirty not in ("0", "") else "")
    sdv = "n/a (not built)"
    if a.snapdisk and os.access(a.snapdisk, os.X_OK):
        v = sh_out(f"{a.snapdisk} --version")
        mt = datetime.datetime.fromtimestamp(os.stat(a.snapdisk).st_mtime, datetime.timezone.utc)
        sdv = f"{v.splitlines()[0] if v else '?'} (binary {a.snapdisk}, built {mt:%Y-%m-%d %H:%M} UTC, tree {commit})"
    versions = {
        "fio": first("fio --version"),
        "qemu-storage-daemon": first("qemu-storage-daemon --version"),
        "libfuse": first("pkg-config --modversion fuse3"),
        "snapdisk": sdv,
        "coreutils cp": first("cp --version"),
    }
    machine = {
        "host": platform.node(),
        "cpu": f"{os.cpu_count()} × {cpu}",
        "memory": mem,
        "kernel": platform.release(),
        "filesystem of the work dir": f"{work_fs} ({a.work})",
        "filesystem of /tmp": tmp_fs,
        "load average at start / end": a.load_start + " / " + sh_out("cut -d' ' -f1-3 /proc/loadavg"),
        "pressure (PSI some avg60, cpu / io) at start / end": a.psi_start + " / " + psi(),
    }
    reporting = host_page_reporting()
    if reporting:
        machine["free page reporting to the host (virtio balloon)"] = reporting
    sharing = cpu_sharing()
    if sharing:
        machine["what else shares the CPUs (DAMON, vCPU packing, autogroup)"] = sharing
    for k, v in versions.items():
        machine[f"version: {k}"] = v
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": a.command,
        "duration": f"{duration:.0f} s ({duration / 60:.1f} min)",
        "commit": commit,
        "rev": rev if rev and "?" not in rev else "norev",
        "machine": machine,
        "versions": versions,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--snapdisk", default="")
    p.add_argument("--snapdisk-opts", default="")
    p.add_argument("--passthrough", default="")
    p.add_argument("--command", default="bench/run.sh")
    p.add_argument("--rounds", type=int)
    p.add_argument("--runtime", type=float)
    p.add_argument("--image-size-gib", type=int)
    p.add_argument("--snapshots", type=int)
    p.add_argument("--many", type=int)
    p.add_argument("--only", default="", help="comma list of phases: " + ",".join(PHASES))
    p.add_argument("--budget", type=float, help="seconds; fewer fio rounds / no 32 GiB part if short (0: no limit)")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args()
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.runtime = a.runtime or (2 if a.quick else 4)
    a.image_size = (a.image_size_gib or (1 if a.quick else 4)) * GiB
    a.snapshots = a.snapshots or (30 if a.quick else 100)
    # mkdir probes per image in the 10,000-snapshot phase: 2,000, so that the
    # p99 is the 20th-worst figure (500 left the ratio of two p99s near 0.1 ms
    # swinging by ±10 % between runs: bench/README.md, "10,000 snapshots").
    a.many_probes = 20 * a.snapshots
    a.many = a.many or (500 if a.quick else 10000)
    a.many_image = 256 * MiB if a.quick else 1 * GiB
    a.space_image = 1 * GiB if a.quick else 4 * GiB
    a.cp_timeout = 60 if a.quick else 120
    a.snap_cap = 20
    a.many_cap = 60 if a.quick else 240
    a.budget = a.budget if a.budget is not None else (420 if a.quick else 870)
    a.reserve = 120 if a.quick else 470  # seconds the phases after fio need (estimate; 428 at 11:02 on 2026-12-05)
    a.load_start = sh_out("cut -d' ' -f1-3 /proc/loadavg")
    a.psi_start = psi()
    only = set(x for x in a.only.split(",") if x) or set(PHASES)
    a.only_set = only

    def stop_signal(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")
    # run.sh starts us in the background, where SIGINT is ignored: handle it explicitly.
    signal.signal(signal.SIGTERM, stop_signal)
    signal.signal(signal.SIGINT, stop_signal)

    b = Bench(a)
    interrupted = None
    try:
        b.start_targets()
        if "fio" in only:
            b.fio_rounds()
        if "clone" in only:
            b.clones()
        b.stop_peers()
        if "space" in only:
            b.space()
        if "latency" in only:
            b.latency()
        if "many" in only:
            b.many()
        b.final_rss()
    except KeyboardInterrupt as e:
        interrupted = e
        log(f"interrupted ({e}); writing a partial report")
    finally:
        b.stop_all()
    duration = time.monotonic() - T0
    meta = metadata(a, duration)
    errors = {t.label: t.error for t in b.targets if t.error and t.error != "stopped"}
    if interrupted:
        errors["run"] = f"interrupted: {interrupted}"
    meta["errors"] = errors
    md, verdicts, table = report(b, meta)
    os.makedirs(a.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M")
    # Only full runs get a plain name (and are the ones to commit): a quick
    # run, or one limited by --only or interrupted, says so in its name.
    partial = interrupted or a.only_set != set(PHASES)
    name = ("quick-" if a.quick else "partial-" if partial else "") + f"{stamp}-{meta['rev']}.md"
    path = os.path.join(a.out, name)
    with open(path, "w") as f:
        f.write(md)
    print(table)
    for msg, k in sorted(FOOTNOTES.items(), key=lambda kv: kv[1]):
        print(f"[{k}] {msg}")
    print()
    for label, btxt, verdict in verdicts:
        print(f"{verdict:4s}  {label}  [{btxt}]")
    print(f"\nreport: {path}  ({duration:.0f} s)")
    return 1 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
