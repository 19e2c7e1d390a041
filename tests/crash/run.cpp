// The crash workload's `run` mode: writer threads put self-verifying records
// into the images and journal each write once an fsync acknowledged it; the
// main thread takes and deletes snapshots and makes and deletes clones with
// cp, journaling each one once it is durable. Runs until the daemon is killed
// under it.
#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "journal.h"
#include "record.h"
#include "workload.h"

extern char** environ;

namespace snapdisk::crash {
namespace {

constexpr size_t kMaxSnapshotsPerImage = 4;
constexpr size_t kMaxClones = 3;
constexpr unsigned kMaxRecordsPerWrite = 8;

struct Stats {
  std::atomic<uint64_t> writes{0}, records{0}, syncs{0}, acked{0};
  std::atomic<uint64_t> snapshots{0}, snapshot_deletes{0}, clones{0}, clone_deletes{0};
};

class Workload {
 public:
  explicit Workload(const WorkloadConfig& config)
      : config_(config), journal_(config.journal), state_(ReadJournal(config.journal)) {}
  int Run();

 private:
  std::string Path(const std::string& rel) const { return config_.mnt + "/" + rel; }
  std::string ImageName(uint32_t id) const { return "img" + std::to_string(id) + ".img"; }
  // Records why the run stops. An error other than a dead connection while
  // the mount still answers is a real failure.
  void Stop(const std::string& what, int err);
  bool Stopped() const { return stop_.load(std::memory_order_relaxed); }
  bool SetUp();
  void CleanLeftovers();
  void Writer(unsigned thread);
  void TakeSnapshot(std::mt19937_64& rng);
  void DeleteSnapshot(uint32_t id, const std::string& name);
  void MakeClone(std::mt19937_64& rng);
  void DeleteClone(const std::string& name);

  const WorkloadConfig& config_;
  JournalWriter journal_;
  JournalState state_;
  Stats stats_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> unexpected_{false};
  std::mutex stop_mu_;
  std::string stop_reason_;  // GUARDED_BY(stop_mu_)
  // Main thread only: live snapshots (oldest first) per image, live clones.
  std::vector<std::deque<std::string>> snapshots_;
  std::deque<std::string> clones_;
  uint64_t next_name_ = 0;
};

void Workload::Stop(const std::string& what, int err) {
  bool expected = err == ENOTCONN || err == ECONNABORTED;
  if (!expected) {
    // statfs always reaches the daemon (stat may be answered from the
    // kernel's attribute cache); after the lazy unmount MNT is no longer FUSE.
    struct statfs sfs;
    constexpr decltype(sfs.f_type) kFuseSuperMagic = 0x65735546;
    expected = statfs(config_.mnt.c_str(), &sfs) != 0 || sfs.f_type != kFuseSuperMagic;
  }
  std::lock_guard lock(stop_mu_);
  if (!stop_.exchange(true)) {
    stop_reason_ = what + ": " + ErrnoName(err);
    if (!expected) {
      unexpected_ = true;
      stop_reason_ = "UNEXPECTED (the mount still answers): " + stop_reason_;
    }
  }
}

bool Workload::SetUp() {
  for (uint32_t id = 0; id < config_.images; ++id) {
    if (state_.images.count(id) != 0) continue;
    // Not journaled yet: (re)create it; a file left by a crashed set-up is fine.
    std::string name = ImageName(id);
    int fd = open(Path(name).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return Stop("create " + name, errno), false;
    if (ftruncate(fd, static_cast<off_t>(config_.image_size)) != 0 || fsync(fd) != 0) {
      int err = errno;
      close(fd);
      return Stop("size " + name, err), false;
    }
    close(fd);
    journal_.Append(fmt::format("image {} {} {}\n", name, id, config_.image_size));
    ImageFacts f{name, config_.image_size, {}};
    f.acked.assign(config_.image_size / kRecordSize, 0);
    state_.images[id] = std::move(f);
  }
  snapshots_.resize(config_.images);
  for (const auto& [key, facts] : state_.snapshots) {
    if (!facts.deleting) snapshots_[key.first].push_back(key.second);
  }
  for (const auto& [name, facts] : state_.clones) {
    if (!facts.deleting) clones_.push_back(name);
  }
  return true;
}

// Snapshots and clones that a crash left unjournaled or half-deleted.
void Workload::CleanLeftovers() {
  for (uint32_t id = 0; id < config_.images && !Stopped(); ++id) {
    std::string dir = Path(".snapshots/" + ImageName(id));
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) return Stop("opendir " + dir, errno);
    std::vector<std::string> names;
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    closedir(d);
    for (const std::string& n : names) {
      auto it = state_.snapshots.find({id, n});
      if (it != state_.snapshots.end() && !it->second.deleting) continue;
      if (it != state_.snapshots.end()) journal_.Append(fmt::format("snapdel {} {}\n", id, n));
      if (rmdir((dir + "/" + n).c_str()) != 0) return Stop("rmdir leftover " + dir + "/" + n, errno);
    }
  }
  DIR* d = opendir(config_.mnt.c_str());
  if (d == nullptr) return Stop("opendir " + config_.mnt, errno);
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind("clone-", 0) == 0) names.push_back(n);
  }
  closedir(d);
  for (const std::string& n : names) {
    auto it = state_.clones.find(n);
    if (it != state_.clones.end() && !it->second.deleting) continue;
    if (unlink(Path(n).c_str()) != 0) return Stop("unlink leftover " + n, errno);
  }
}

void Workload::Writer(unsigned thread) {
  std::mt19937_64 rng(config_.seed * 7919 + thread);
  const uint64_t slots = config_.image_size / kRecordSize;
  const uint64_t first = slots * thread / config_.threads;
  const uint64_t end = slots * (thread + 1) / config_.threads;
  std::vector<int> fds(config_.images, -1);
  for (uint32_t id = 0; id < config_.images; ++id) {
    fds[id] = open(Path(ImageName(id)).c_str(), O_RDWR | O_CLOEXEC);
    if (fds[id] < 0) {
      Stop("open " + ImageName(id), errno);
      break;
    }
  }
  std::vector<std::string> pending(config_.images);  // ack lines waiting for an fsync
  std::vector<uint8_t> buf(kMaxRecordsPerWrite * kRecordSize);
  uint64_t counter = 0;
  while (!Stopped()) {
    uint32_t id = static_cast<uint32_t>(rng() % config_.images);
    uint64_t slot = first + rng() % (end - first);
    uint64_t count = 1 + rng() % std::min<uint64_t>(kMaxRecordsPerWrite, end - slot);
    uint64_t seq = (config_.cycle << 40) | ++counter;
    for (uint64_t i = 0; i < count; ++i) {
      MakeRecord(id, thread, slot + i, seq, buf.data() + i * kRecordSize);
    }
    size_t len = count * kRecordSize;
    ssize_t n = pwrite(fds[id], buf.data(), len, static_cast<off_t>(slot * kRecordSize));
    if (n != static_cast<ssize_t>(len)) {
      Stop(fmt::format("pwrite {} slot {} x{}", ImageName(id), slot, count), n < 0 ? errno : EIO);
      break;
    }
    ++stats_.writes;
    stats_.records += count;
    for (uint64_t i = 0; i < count; ++i) pending[id] += fmt::format("ack {} {} {}\n", id, slot + i, seq);
    if (rng() % 3 == 0) {
      int rc = rng() % 2 == 0 ? fsync(fds[id]) : fdatasync(fds[id]);
      if (rc != 0) {
        Stop("fsync " + ImageName(id), errno);
        break;
      }
      ++stats_.syncs;
      stats_.acked += static_cast<uint64_t>(std::count(pending[id].begin(), pending[id].end(), '\n'));
      journal_.Append(pending[id]);
      pending[id].clear();
    }
  }
  for (int fd : fds) {
    if (fd >= 0) close(fd);
  }
}

void Workload::DeleteSnapshot(uint32_t id, const std::string& name) {
  journal_.Append(fmt::format("snapdel {} {}\n", id, name));
  std::string dir = Path(".snapshots/" + ImageName(id) + "/" + name);
  if (rmdir(dir.c_str()) != 0) return Stop("rmdir " + dir, errno);
  auto& list = snapshots_[id];
  list.erase(std::find(list.begin(), list.end(), name));
  ++stats_.snapshot_deletes;
}

void Workload::TakeSnapshot(std::mt19937_64& rng) {
  uint32_t id = static_cast<uint32_t>(rng() % config_.images);
  if (snapshots_[id].size() >= kMaxSnapshotsPerImage) DeleteSnapshot(id, snapshots_[id].front());
  if (Stopped()) return;
  std::string name = fmt::format("c{}-s{}", config_.cycle, next_name_++);
  std::string dir = Path(".snapshots/" + ImageName(id) + "/" + name);
  if (mkdir(dir.c_str(), 0755) != 0) return Stop("mkdir " + dir, errno);
  // Durable from here: journal that before spending time on the hash.
  journal_.Append(fmt::format("snapmade {} {}\n", id, name));
  snapshots_[id].push_back(name);
  // The frozen view never changes, so hashing it now gives its bytes at mkdir.
  std::string sha;
  if (!Sha256File(dir + "/" + ImageName(id), &sha)) return Stop("sha256 of " + dir, EIO);
  journal_.Append(fmt::format("snap {} {} {}\n", id, name, sha));
  ++stats_.snapshots;
}

void Workload::DeleteClone(const std::string& name) {
  journal_.Append(fmt::format("clonedel {}\n", name));
  if (unlink(Path(name).c_str()) != 0) return Stop("unlink " + name, errno);
  clones_.erase(std::find(clones_.begin(), clones_.end(), name));
  ++stats_.clone_deletes;
}

void Workload::MakeClone(std::mt19937_64& rng) {
  if (clones_.size() >= kMaxClones) DeleteClone(clones_.front());
  if (Stopped()) return;
  uint32_t id = static_cast<uint32_t>(rng() % config_.images);
  std::string name = fmt::format("clone-c{}-{}.img", config_.cycle, next_name_++);
  std::string src = Path(ImageName(id)), dst = Path(name);
  const char* argv[] = {"cp", src.c_str(), dst.c_str(), nullptr};
  pid_t pid;
  if (posix_spawnp(&pid, "cp", nullptr, nullptr, const_cast<char* const*>(argv), environ) != 0) {
    return Stop("spawn cp", errno);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return Stop("cp " + src + " " + dst, EIO);
  clones_.push_back(name);
  int fd = open(dst.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Stop("open " + dst, errno);
  int rc = fsync(fd);
  int err = errno;
  close(fd);
  if (rc != 0) return Stop("fsync " + dst, err);
  std::string sha;
  if (!Sha256File(dst, &sha)) return Stop("sha256 of " + dst, EIO);
  journal_.Append(fmt::format("clone {} {}\n", name, sha));
  ++stats_.clones;
}

int Workload::Run() {
  auto start = std::chrono::steady_clock::now();
  if (SetUp()) CleanLeftovers();
  std::vector<std::thread> writers;
  if (!Stopped()) {
    for (unsigned t = 0; t < config_.threads; ++t) writers.emplace_back([this, t] { Writer(t); });
    // crash_loop.sh starts the random kill delay only now: loading a long
    // journal can take longer than the delay, and a kill before this point
    // would crash an idle daemon.
    std::printf("workload cycle %llu: running\n", static_cast<unsigned long long>(config_.cycle));
    std::fflush(stdout);
  }
  std::mt19937_64 rng(config_.seed);
  while (!Stopped()) {
    if (std::chrono::steady_clock::now() - start > std::chrono::duration<double>(config_.max_seconds)) {
      std::lock_guard lock(stop_mu_);
      stop_reason_ = "time limit";
      stop_ = true;
      break;
    }
    uint64_t r = rng() % 100;
    if (r < 45) {
      TakeSnapshot(rng);
    } else if (r < 70) {
      uint32_t id = static_cast<uint32_t>(rng() % config_.images);
      if (!snapshots_[id].empty()) DeleteSnapshot(id, snapshots_[id][rng() % snapshots_[id].size()]);
    } else if (r < 85) {
      MakeClone(rng);
    } else if (!clones_.empty()) {
      DeleteClone(clones_[rng() % clones_.size()]);
    }
  }
  for (auto& t : writers) t.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("workload cycle %llu: %.2f s, %llu writes (%llu records), %llu fsyncs acked %llu "
              "records; snapshots +%llu -%llu, clones +%llu -%llu; stopped: %s\n",
              static_cast<unsigned long long>(config_.cycle), secs,
              static_cast<unsigned long long>(stats_.writes.load()),
              static_cast<unsigned long long>(stats_.records.load()),
              static_cast<unsigned long long>(stats_.syncs.load()),
              static_cast<unsigned long long>(stats_.acked.load()),
              static_cast<unsigned long long>(stats_.snapshots.load()),
              static_cast<unsigned long long>(stats_.snapshot_deletes.load()),
              static_cast<unsigned long long>(stats_.clones.load()),
              static_cast<unsigned long long>(stats_.clone_deletes.load()), stop_reason_.c_str());
  std::fflush(stdout);
  return unexpected_ ? 3 : 0;
}

}  // namespace

int RunWorkload(const WorkloadConfig& config) {
  Workload w(config);
  return w.Run();
}

}  // namespace snapdisk::crash
