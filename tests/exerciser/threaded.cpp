// The threaded run: N threads each own a disjoint, page-aligned range of one
// image (boundaries deliberately not block-aligned, so neighbours share
// engine blocks) and apply random writes, reads, mmap, discards and
// copy_file_range to it, while the main thread takes snapshots mid-flight.
//
// A snapshot taken while threads write is checked per thread range: an
// operation that completed before mkdir started must be in it, one that
// started after mkdir returned must not, and every byte touched only by
// operations that overlapped the mkdir must hold either its value before
// them or a value one of them wrote (a write in flight may be torn, never
// garbage).
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>

#include "runs.h"
#include "util.h"

namespace snapdisk::exerciser {
namespace {

constexpr uint64_t kMaxIo = 300 * KiB;
constexpr uint64_t kOpsPerRound = 25;
constexpr size_t kKeepSnapshots = 3;
constexpr uint64_t kSourceSize = 2 * MiB;

// What one operation changed in its thread's range: enough to undo it and to
// know which values it may have left.
struct Change {
  uint64_t off = 0;
  std::vector<uint8_t> before;
  std::vector<uint8_t> after;
};

struct Worker {
  unsigned index = 0;
  uint64_t start = 0, len = 0;   // the owned range [start, start + len)
  int fd = -1;
  std::unique_ptr<Rng> rng;
  std::vector<Change> changes;   // this round, one entry per op (empty for reads)
  std::atomic<uint64_t> started{0}, done{0};  // ops of this round begun / finished
};

struct Snapshot {
  std::string name;
  std::vector<uint8_t> bytes;
};

class ThreadedRun {
 public:
  ThreadedRun(const Config& config, OpLog& log, Counters& counters)
      : config_(config), log_(log), counters_(counters), rng_(config.seed ^ 0x5eedULL) {}
  void Run();

 private:
  std::string Path(const std::string& image) const { return ImagePath(config_, image); }
  std::string FrozenPath(const std::string& snap) const {
    return SnapshotDir(config_, image_, snap) + "/" + image_;
  }
  void WorkerRound(Worker& w, uint64_t ops);
  void WorkerOp(Worker& w);
  void VerifyLive(const std::string& why, bool with_snapshots);
  std::vector<uint8_t> ReadFrozen(const std::string& snap);
  void CheckConcurrentSnapshot(const std::string& snap, const std::vector<uint64_t>& done_before,
                               const std::vector<uint64_t>& started_after);

  const Config& config_;
  OpLog& log_;
  Counters& counters_;
  Rng rng_;
  const std::string image_ = "mt.img";
  const std::string source_ = "mt-src.img";
  uint64_t size_ = 0;
  std::vector<uint8_t> model_;   // the image; worker i writes only its range
  std::vector<uint8_t> source_model_;
  int source_fd_ = -1;           // read-only use by all workers (pread is thread-safe)
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<Snapshot> snapshots_;
  uint64_t next_snapshot_ = 0;
};

void ThreadedRun::WorkerOp(Worker& w) {
  Rng& rng = *w.rng;
  uint64_t r = rng.Below(100);
  uint64_t len = std::min(RandomLength(rng, kMaxIo), w.len);
  uint64_t off = w.start + rng.Below(w.len - len + 1);
  if (rng.OneIn(3)) off = std::max(w.start, off & ~(kPage - 1));
  uint8_t* model = model_.data() + off;
  Change change;
  auto mutate = [&](const uint8_t* after) {  // after the syscall succeeded
    change.off = off;
    change.before.assign(model, model + len);
    change.after.assign(after, after + len);
    std::memcpy(model, after, len);
  };
  std::string what = fmt::format("t{} ", w.index);
  w.started.store(w.changes.size() + 1, std::memory_order_release);

  if (r < 30) {
    std::vector<uint8_t> data(len);
    FillPattern(rng, data.data(), len);
    what += fmt::format("pwrite off={} len={}", off, len);
    log_.Add(what);
    PWriteAll(w.fd, data.data(), len, off, what);
    mutate(data.data());
    counters_.Count("mt_pwrite");
  } else if (r < 50) {
    what += fmt::format("pread off={} len={}", off, len);
    log_.Add(what);
    std::vector<uint8_t> got(len);
    if (PReadUpTo(w.fd, got.data(), len, off, what) != len) Fail("{}: short read", what);
    ExpectBytes(got.data(), model, len, off, what);
    counters_.Count("mt_pread");
  } else if (r < 66 && !(r >= 58 ? config_.skip.count("mmap_write") : config_.skip.count("mmap_read"))) {
    bool writing = r >= 58;
    uint64_t map_off = off & ~(kPage - 1), map_len = off + len - map_off;
    what += fmt::format("mmap_{} off={} len={}", writing ? "write" : "read", off, len);
    log_.Add(what);
    void* p = mmap(nullptr, map_len, writing ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED,
                   w.fd, static_cast<off_t>(map_off));
    if (p == MAP_FAILED) Fail("{}: mmap: {}", what, ErrnoStr(errno));
    uint8_t* at = static_cast<uint8_t*>(p) + (off - map_off);
    std::vector<uint8_t> data(len);
    if (writing) {
      FillPattern(rng, data.data(), len);
      std::memcpy(at, data.data(), len);
      if (msync(p, map_len, MS_SYNC) != 0) Fail("{}: msync: {}", what, ErrnoStr(errno));
    } else {
      std::memcpy(data.data(), at, len);
    }
    munmap(p, map_len);
    if (writing) {
      mutate(data.data());
    } else {
      ExpectBytes(data.data(), model, len, off, what);
    }
    counters_.Count(writing ? "mt_mmap_write" : "mt_mmap_read");
  } else if (r < 74) {
    bool punch = r < 70;
    int mode = FALLOC_FL_KEEP_SIZE | (punch ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE);
    what += fmt::format("{} off={} len={}", punch ? "punch_hole" : "zero_range", off, len);
    log_.Add(what);
    if (fallocate(w.fd, mode, static_cast<off_t>(off), static_cast<off_t>(len)) != 0) {
      Fail("{}: {}", what, ErrnoStr(errno));
    }
    std::vector<uint8_t> zeros(len, 0);
    mutate(zeros.data());
    counters_.Count(punch ? "mt_punch_hole" : "mt_zero_range");
  } else if (r < 84) {
    uint64_t copy_len = std::min(len, kSourceSize);
    uint64_t src_off = rng.Below(kSourceSize - copy_len + 1);
    if (rng.OneIn(2)) {  // block-aligned source and destination where the range allows
      uint64_t aligned = (off + 64 * KiB - 1) & ~(64 * KiB - 1);
      if (aligned + copy_len <= w.start + w.len) off = aligned;
      src_off &= ~(64 * KiB - 1);
    }
    len = copy_len;
    model = model_.data() + off;
    what += fmt::format("copy_file_range {}@{} -> off={} len={}", source_, src_off, off, len);
    log_.Add(what);
    uint64_t copied = 0;
    while (copied < len) {
      loff_t in = static_cast<loff_t>(src_off + copied), out = static_cast<loff_t>(off + copied);
      ssize_t n = copy_file_range(source_fd_, &in, w.fd, &out, len - copied, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) Fail("{}: copy_file_range: {}", what, n == 0 ? "returned 0" : ErrnoStr(errno));
      copied += static_cast<uint64_t>(n);
    }
    mutate(source_model_.data() + src_off);
    counters_.Count("mt_copy_range");
  } else if (r < 92) {
    what += "fsync";
    log_.Add(what);
    if (fsync(w.fd) != 0) Fail("{}: {}", what, ErrnoStr(errno));
    counters_.Count("mt_fsync");
  } else {
    what += "close+open";
    log_.Add(what);
    if (close(w.fd) != 0) Fail("{}: close: {}", what, ErrnoStr(errno));
    w.fd = open(Path(image_).c_str(), O_RDWR | O_CLOEXEC);
    if (w.fd < 0) Fail("{}: open: {}", what, ErrnoStr(errno));
    counters_.Count("mt_reopen");
  }
  w.changes.push_back(std::move(change));
  w.done.store(w.changes.size(), std::memory_order_release);
}

void ThreadedRun::WorkerRound(Worker& w, uint64_t ops) {
  for (uint64_t i = 0; i < ops; ++i) WorkerOp(w);
}

std::vector<uint8_t> ThreadedRun::ReadFrozen(const std::string& snap) {
  const std::string path = FrozenPath(snap);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail("open frozen view {}: {}", path, ErrnoStr(errno));
  std::vector<uint8_t> bytes(size_ + 1);
  size_t got = PReadUpTo(fd, bytes.data(), bytes.size(), 0, "read " + path);
  close(fd);
  if (got != size_) Fail("frozen view {}: {} bytes, want {}", path, got, size_);
  bytes.resize(size_);
  return bytes;
}

void ThreadedRun::CheckConcurrentSnapshot(const std::string& snap,
                                          const std::vector<uint64_t>& done_before,
                                          const std::vector<uint64_t>& started_after) {
  std::vector<uint8_t> frozen = ReadFrozen(snap);
  // Outside every worker's range nothing changed this round.
  std::vector<bool> owned(size_, false);
  for (const auto& w : workers_) std::fill_n(owned.begin() + w->start, w->len, true);
  for (uint64_t b = 0; b < size_; ++b) {
    if (!owned[b] && frozen[b] != model_[b]) {
      Fail("snapshot {}: byte {} outside all thread ranges is {:#x}, want {:#x}", snap, b,
           frozen[b], model_[b]);
    }
  }
  for (size_t t = 0; t < workers_.size(); ++t) {
    const Worker& w = *workers_[t];
    // The range as it was when op done_before[t] had completed.
    std::vector<uint8_t> base(model_.begin() + w.start, model_.begin() + w.start + w.len);
    for (size_t k = w.changes.size(); k-- > done_before[t];) {
      const Change& c = w.changes[k];
      std::copy(c.before.begin(), c.before.end(), base.begin() + (c.off - w.start));
    }
    for (uint64_t i = 0; i < w.len; ++i) {
      uint8_t got = frozen[w.start + i];
      if (got == base[i]) continue;
      bool explained = false;
      for (uint64_t k = done_before[t]; k < started_after[t] && !explained; ++k) {
        const Change& c = w.changes[k];
        uint64_t at = w.start + i;
        explained = at >= c.off && at < c.off + c.after.size() && c.after[at - c.off] == got;
      }
      if (!explained) {
        Fail("snapshot {} taken while thread {} ran: byte {} is {:#x}, want {:#x} (the range "
             "after its op {}) or a value written by its ops [{}, {}) in flight during mkdir",
             snap, t, w.start + i, got, base[i], done_before[t], done_before[t],
             started_after[t]);
      }
    }
  }
  snapshots_.push_back({snap, std::move(frozen)});
}

void ThreadedRun::VerifyLive(const std::string& why, bool with_snapshots) {
  log_.Add("verify " + image_ + ": " + why);
  int fd = open(Path(image_).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail("open {}: {}", image_, ErrnoStr(errno));
  std::vector<uint8_t> bytes(size_ + 1);
  size_t got = PReadUpTo(fd, bytes.data(), bytes.size(), 0, "verify " + image_);
  close(fd);
  if (got != size_) Fail("{} ({}): {} bytes, want {}", image_, why, got, size_);
  ExpectBytes(bytes.data(), model_.data(), size_, 0, fmt::format("{} ({})", image_, why));
  for (const Snapshot& s : snapshots_) {
    if (!with_snapshots) break;
    std::vector<uint8_t> frozen = ReadFrozen(s.name);
    ExpectBytes(frozen.data(), s.bytes.data(), size_, 0,
                fmt::format("frozen view {}@{} ({})", image_, s.name, why));
  }
}

void ThreadedRun::Run() {
  size_ = config_.max_size & ~(kPage - 1);
  const unsigned n = config_.threads;
  uint64_t range = ((size_ / n) - 3 * kPage) & ~(kPage - 1);
  if (size_ / n < 64 * KiB) Fail("--max-size {} is too small for {} threads", size_, n);

  // A static source for copy_file_range, and the shared image.
  source_model_.resize(kSourceSize);
  rng_.Fill(source_model_.data(), kSourceSize);
  int fd = open(Path(source_).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) Fail("create {}: {}", source_, ErrnoStr(errno));
  PWriteAll(fd, source_model_.data(), kSourceSize, 0, "fill " + source_);
  if (fsync(fd) != 0) Fail("fsync {}: {}", source_, ErrnoStr(errno));
  source_fd_ = fd;
  fd = open(Path(image_).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) Fail("create {}: {}", image_, ErrnoStr(errno));
  if (ftruncate(fd, static_cast<off_t>(size_)) != 0) Fail("ftruncate {}: {}", image_, ErrnoStr(errno));
  close(fd);
  model_.assign(size_, 0);

  for (unsigned i = 0; i < n; ++i) {
    auto w = std::make_unique<Worker>();
    w->index = i;
    w->start = 2 * kPage + i * range;  // page-aligned, not 64 KiB-aligned
    w->len = range;
    w->rng = std::make_unique<Rng>(config_.seed * 1000003ULL + i + 1);
    w->fd = open(Path(image_).c_str(), O_RDWR | O_CLOEXEC);
    if (w->fd < 0) Fail("open {}: {}", image_, ErrnoStr(errno));
    workers_.push_back(std::move(w));
  }
  std::printf("threaded: %u threads on %s, %llu bytes each\n", n, image_.c_str(),
              static_cast<unsigned long long>(range));

  uint64_t remaining = config_.ops;
  for (uint64_t round = 0; remaining > 0; ++round) {
    uint64_t per_thread = std::min<uint64_t>(kOpsPerRound, (remaining + n - 1) / n);
    remaining -= std::min(remaining, per_thread * n);
    for (auto& w : workers_) {
      w->changes.clear();
      w->started.store(0);
      w->done.store(0);
    }
    std::vector<std::thread> threads;
    for (auto& w : workers_) threads.emplace_back([this, &w, per_thread] { WorkerRound(*w, per_thread); });

    bool snap_now = snapshots_.size() < kKeepSnapshots || !rng_.OneIn(3);
    std::string snap;
    std::vector<uint64_t> done_before(n), started_after(n);
    if (snap_now) {
      // Let the workers get going: wait (bounded) until each has done a few ops.
      uint64_t target = rng_.Below(per_thread / 2 + 1);
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
      for (auto& w : workers_) {
        while (w->done.load(std::memory_order_acquire) < target) {
          if (std::chrono::steady_clock::now() > deadline) {
            Fail("thread {} made no progress for 120 s (done {} ops)", w->index, w->done.load());
          }
          sched_yield();
        }
      }
      if (snapshots_.size() >= kKeepSnapshots) {
        // Delete the oldest while the workers write.
        std::string dir = SnapshotDir(config_, image_, snapshots_.front().name);
        log_.Add("rmdir " + dir);
        if (rmdir(dir.c_str()) != 0) Fail("rmdir {}: {}", dir, ErrnoStr(errno));
        snapshots_.erase(snapshots_.begin());
        counters_.Count("mt_snap_delete");
      }
      snap = fmt::format("r{}", next_snapshot_++);
      for (unsigned i = 0; i < n; ++i) done_before[i] = workers_[i]->done.load(std::memory_order_acquire);
      log_.Add("mkdir snapshot " + image_ + "@" + snap + " while threads write");
      if (mkdir(SnapshotDir(config_, image_, snap).c_str(), 0755) != 0) {
        Fail("mkdir snapshot {}: {}", snap, ErrnoStr(errno));
      }
      for (unsigned i = 0; i < n; ++i) started_after[i] = workers_[i]->started.load(std::memory_order_acquire);
      counters_.Count("mt_snapshot");
    }
    for (auto& t : threads) t.join();
    if (snap_now) CheckConcurrentSnapshot(snap, done_before, started_after);
    if (rng_.OneIn(3)) {
      counters_.Count("drop_caches");
      DropCaches();
    }
    VerifyLive(fmt::format("after round {}", round), round % 4 == 3);
  }
  for (auto& w : workers_) close(w->fd);
  close(source_fd_);
  DropCaches();
  VerifyLive("end of threaded run, caches dropped", true);
}

}  // namespace

void RunThreaded(const Config& config, OpLog& log, Counters& counters) {
  ThreadedRun run(config, log, counters);
  run.Run();
}

}  // namespace snapdisk::exerciser
