// The crash workload's `verify` mode: after a crash and a remount, every
// journaled fact must hold.
//   - each slot of each image: zero if no write to it was acknowledged, else a
//     valid record whose sequence number is at least the acknowledged one (a
//     later write, acknowledged or not, may have replaced it; nothing older,
//     torn, misplaced or foreign may appear);
//   - each journaled snapshot (mkdir returned) exists and its frozen view hashes as recorded
//     (one whose rmdir had started may be gone, but if present it is intact);
//     every frozen view, journaled or not, holds only zeros or valid records;
//   - each journaled clone exists with its recorded hash.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <set>
#include <vector>

#include "journal.h"
#include "record.h"
#include "workload.h"

namespace snapdisk::crash {
namespace {

class Verifier {
 public:
  Verifier(const WorkloadConfig& config) : config_(config), state_(ReadJournal(config.journal)) {}
  int Run();

 private:
  void Problem(const std::string& what) {
    if (++problems_ <= 30) std::printf("VERIFY FAILURE: %s\n", what.c_str());
  }
  bool ReadAll(const std::string& path, uint64_t want_size, std::vector<uint8_t>* bytes);
  // Checks slots of a file read from image `id` (live or frozen). `acked`
  // null: only zero-or-valid is required.
  void CheckSlots(const std::string& what, uint32_t id, const std::vector<uint8_t>& bytes,
                  const std::vector<uint64_t>* acked);
  void CheckHash(const std::string& what, const std::string& path, const std::string& sha,
                 bool may_be_gone);

  const WorkloadConfig& config_;
  JournalState state_;
  uint64_t problems_ = 0;
  uint64_t slots_checked_ = 0, acked_slots_ = 0, newer_than_acked_ = 0;
  uint64_t snapshots_checked_ = 0, clones_checked_ = 0, frozen_views_scanned_ = 0;
};

bool Verifier::ReadAll(const std::string& path, uint64_t want_size, std::vector<uint8_t>* bytes) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    Problem(fmt::format("open {}: {}", path, ErrnoName(errno)));
    return false;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != want_size) {
    Problem(fmt::format("{}: size {}, want {}", path, st.st_size, want_size));
    close(fd);
    return false;
  }
  bytes->assign(want_size, 0);
  uint64_t done = 0;
  while (done < want_size) {
    ssize_t n = pread(fd, bytes->data() + done, want_size - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      Problem(fmt::format("read {} at {}: {}", path, done, n == 0 ? "early EOF" : ErrnoName(errno)));
      close(fd);
      return false;
    }
    done += static_cast<uint64_t>(n);
  }
  close(fd);
  return true;
}

void Verifier::CheckSlots(const std::string& what, uint32_t id, const std::vector<uint8_t>& bytes,
                          const std::vector<uint64_t>* acked) {
  const uint64_t max_seq = (config_.cycle + 1) << 40;  // nothing from the future
  for (uint64_t slot = 0; slot * kRecordSize < bytes.size(); ++slot) {
    uint64_t seq = 0, want = acked != nullptr ? (*acked)[slot] : 0;
    std::string why;
    SlotState s = Classify(bytes.data() + slot * kRecordSize, id, slot, &seq, &why);
    ++slots_checked_;
    if (want != 0) ++acked_slots_;
    if (s == SlotState::kGarbage) {
      Problem(fmt::format("{} slot {} (offset {}): {}; acknowledged seq {:#x}", what, slot,
                          slot * kRecordSize, why, want));
    } else if (s == SlotState::kZero && want != 0) {
      Problem(fmt::format("{} slot {} (offset {}): zeros, but seq {:#x} (cycle {}) was "
                          "acknowledged by fsync", what, slot, slot * kRecordSize, want, want >> 40));
    } else if (s == SlotState::kValid && seq < want) {
      Problem(fmt::format("{} slot {} (offset {}): seq {:#x} (cycle {}) is older than the "
                          "acknowledged {:#x} (cycle {})", what, slot, slot * kRecordSize, seq,
                          seq >> 40, want, want >> 40));
    } else if (s == SlotState::kValid && seq >= max_seq) {
      Problem(fmt::format("{} slot {}: seq {:#x} from a future cycle", what, slot, seq));
    } else if (s == SlotState::kValid && seq > want && acked != nullptr) {
      ++newer_than_acked_;
    }
  }
}

void Verifier::CheckHash(const std::string& what, const std::string& path, const std::string& sha,
                         bool may_be_gone) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT && may_be_gone) return;
    Problem(fmt::format("{} {}: {}", what, path, errno == ENOENT ? "lost in the crash" : ErrnoName(errno)));
    return;
  }
  std::string got;
  if (sha.empty()) return;  // made, not hashed before the crash: existing is all we know
  if (!Sha256File(path, &got)) {
    Problem(fmt::format("{} {}: cannot be read", what, path));
  } else if (got != sha) {
    Problem(fmt::format("{} {}: sha256 {} but {} when journaled", what, path, got, sha));
  }
}

int Verifier::Run() {
  std::vector<uint8_t> bytes;
  for (const auto& [id, facts] : state_.images) {
    if (ReadAll(config_.mnt + "/" + facts.name, facts.size, &bytes)) {
      CheckSlots(facts.name, id, bytes, &facts.acked);
    }
  }
  for (const auto& [key, facts] : state_.snapshots) {
    const std::string& image = state_.images[key.first].name;
    std::string path = config_.mnt + "/.snapshots/" + image + "/" + key.second + "/" + image;
    CheckHash("snapshot", path, facts.sha256, facts.deleting);
    ++snapshots_checked_;
  }
  for (const auto& [name, facts] : state_.clones) {
    CheckHash("clone", config_.mnt + "/" + name, facts.sha256, facts.deleting);
    ++clones_checked_;
  }
  // Every frozen view present, journaled or not, holds only zeros and valid records.
  for (const auto& [id, facts] : state_.images) {
    std::string dir = config_.mnt + "/.snapshots/" + facts.name;
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) {
      Problem(fmt::format("opendir {}: {}", dir, ErrnoName(errno)));
      continue;
    }
    std::vector<std::string> names;
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    closedir(d);
    for (const std::string& n : names) {
      std::string path = dir + "/" + n + "/" + facts.name;
      if (ReadAll(path, facts.size, &bytes)) CheckSlots("frozen view " + path, id, bytes, nullptr);
      ++frozen_views_scanned_;
    }
  }
  std::printf("verify: %zu images, %llu slots checked (%llu with an acknowledged write, %llu "
              "holding a newer unacknowledged one), %llu journaled snapshots, %llu clones, %llu "
              "frozen views scanned: %s\n",
              state_.images.size(), static_cast<unsigned long long>(slots_checked_),
              static_cast<unsigned long long>(acked_slots_),
              static_cast<unsigned long long>(newer_than_acked_),
              static_cast<unsigned long long>(snapshots_checked_),
              static_cast<unsigned long long>(clones_checked_),
              static_cast<unsigned long long>(frozen_views_scanned_),
              problems_ == 0 ? "OK" : fmt::format("{} PROBLEMS", problems_).c_str());
  std::fflush(stdout);
  return problems_ == 0 ? 0 : 1;
}

}  // namespace

int VerifyMount(const WorkloadConfig& config) {
  Verifier v(config);
  return v.Run();
}

}  // namespace snapdisk::crash
