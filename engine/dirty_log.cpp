// The dirty log (see dirty_log.h). Entry: the 24-byte version key followed
// by the XXH3-64 of those bytes, little-endian (32 bytes). The file is a
// run of entries followed by zeros up to its mapped capacity.
#include "dirty_log.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <xxhash.h>

#include "keys.h"

namespace snapdisk::engine {

namespace {
constexpr size_t kEntrySize = keys::kVersionKeySize + 8;
constexpr uint64_t kInitialCapacity = 1u << 20;  // 32,768 entries

Status LogError(int err, const std::string& what) {
  std::string msg = fmt::format("{}: {}", what, std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) return Status::NoSpace(msg + " (free space in the store's file system)");
  return Status::IOError(msg);
}

void EncodeEntry(const keys::VersionKeyBytes& key, char* e) {
  std::memcpy(e, key.data(), keys::kVersionKeySize);
  uint64_t sum = XXH3_64bits(e, keys::kVersionKeySize);
  std::memcpy(e + keys::kVersionKeySize, &sum, 8);
}

bool EntryValid(const char* e) {
  uint64_t stored = 0;
  std::memcpy(&stored, e + keys::kVersionKeySize, 8);
  return XXH3_64bits(e, keys::kVersionKeySize) == stored;
}

// Writes zeros over [from, to) of the file, so that its blocks exist before
// they are mapped (a store into a hole would allocate, and SIGBUS on ENOSPC).
Status WriteZeros(int fd, uint64_t from, uint64_t to, const std::string& path) {
  static const std::vector<char> zeros(64 * 1024, 0);
  while (from < to) {
    size_t len = static_cast<size_t>(std::min<uint64_t>(zeros.size(), to - from));
    ssize_t n = ::pwrite(fd, zeros.data(), len, static_cast<off_t>(from));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return LogError(n < 0 ? errno : ENOSPC, "extend " + path);
    from += static_cast<uint64_t>(n);
  }
  return Status::OK();
}
}  // namespace

size_t DirtyLog::KeySet::ShardOf(const keys::VersionKeyBytes& k) {
  // The high bits: absl's tables index by the low bits of their own hash,
  // and this one is independent of it anyway.
  return static_cast<size_t>(XXH3_64bits(k.data(), k.size()) >> 58);
}

void DirtyLog::KeySet::clear() {
  for (Shard& s : shards_) s.clear();
  count_ = 0;
}

DirtyLog::~DirtyLog() {
  if (map_ != nullptr) ::munmap(map_, capacity_);
  if (fd_ >= 0) ::close(fd_);
}

Status DirtyLog::Open(const std::string& path, std::vector<std::string>* logged_keys) {
  std::unique_lock l(mu_);
  path_ = path;
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) return LogError(errno, "open " + path);
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return LogError(errno, "stat " + path);
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  SNAPDISK_RETURN_IF_ERROR(ReserveLocked(l, std::max(file_size, kInitialCapacity)));
  logged_keys->clear();
  uint64_t off = 0;
  for (; off + kEntrySize <= file_size; off += kEntrySize) {
    const char* e = map_ + off;
    if (!EntryValid(e)) break;  // a torn tail or the zeros: nothing after it was completed
    logged_keys->emplace_back(e, keys::kVersionKeySize);
  }
  size_ = off;
  NoteFillLocked();
  // Keep "zeros past size_" true: a torn entry (or an older build's
  // leftovers) must not be read as valid after later appends.
  std::memset(map_ + size_, 0, static_cast<size_t>(std::min(file_size, capacity_) - std::min(file_size, size_)));
  return Status::OK();
}

Status DirtyLog::ReserveLocked(std::unique_lock<std::mutex>& l, uint64_t bytes) {
  if (bytes <= capacity_) return Status::OK();
  grown_.wait(l, [&] { return !growing_; });
  if (bytes <= capacity_) return Status::OK();  // that growth was enough
  uint64_t want = std::max<uint64_t>(capacity_ * 2, kInitialCapacity);
  while (want < bytes) want *= 2;
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return LogError(errno, "stat " + path_);
  // Only the part beyond the current file needs writing; entries and zeros
  // below it are kept as they are.
  SNAPDISK_RETURN_IF_ERROR(WriteZeros(fd_, std::max<uint64_t>(static_cast<uint64_t>(st.st_size), capacity_), want, path_));
  return MapLocked(want);
}

Status DirtyLog::MapLocked(uint64_t bytes) {
  void* m = map_ == nullptr ? ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0)
                            : ::mremap(map_, capacity_, bytes, MREMAP_MAYMOVE);
  if (m == MAP_FAILED) return LogError(errno, "map " + path_);
  map_ = static_cast<char*>(m);
  capacity_ = bytes;
  ++growths_;
  NoteFillLocked();
  return Status::OK();
}

void DirtyLog::NoteFillLocked() {
  wants_growth_.store(size_ * 2 >= capacity_ && capacity_ != failed_at_capacity_, std::memory_order_relaxed);
}

Status DirtyLog::GrowAhead() {
  uint64_t from = 0, want = 0;
  {
    std::lock_guard l(mu_);
    if (growing_ || map_ == nullptr || size_ * 2 < capacity_) return Status::OK();
    growing_ = true;
    from = capacity_;
    want = capacity_ * 2;
  }
  // Appends store below capacity_ only, and a ReserveLocked waits for this
  // growth to end: nothing else touches [from, want) meanwhile.
  struct stat st {};
  Status s = ::fstat(fd_, &st) == 0 ? Status::OK() : LogError(errno, "stat " + path_);
  if (s.ok()) s = WriteZeros(fd_, std::max<uint64_t>(static_cast<uint64_t>(st.st_size), from), want, path_);
  std::lock_guard l(mu_);
  growing_ = false;
  if (s.ok() && capacity_ < want) s = MapLocked(want);
  if (!s.ok()) {
    // Not asked again at this capacity (a full disk would have the
    // flusher write zeros over and over): the append that fills the log
    // grows it itself and reports the error.
    failed_at_capacity_ = capacity_;
    NoteFillLocked();
  }
  grown_.notify_all();
  return s;
}

Status DirtyLog::Append(const keys::VersionKeyBytes& version_key) {
  std::unique_lock l(mu_);
  if (!live_.insert(version_key)) return Status::OK();  // one hash lookup for both questions
  if (Status s = ReserveLocked(l, size_ + kEntrySize); !s.ok()) {
    live_.erase(version_key);
    return s;
  }
  EncodeEntry(version_key, map_ + size_);
  size_ += kEntrySize;
  NoteFillLocked();
  return Status::OK();
}

void DirtyLog::Release(const std::vector<keys::VersionKeyBytes>& version_keys) {
  std::lock_guard r(rewrite_mu_);
  std::lock_guard l(mu_);
  for (const keys::VersionKeyBytes& k : version_keys) live_.erase(k);
  if (size_ == 0) return;
  if (live_.empty()) {
    // Nothing is dirty: the whole log is stale.
    std::memset(map_, 0, static_cast<size_t>(size_));
    size_ = 0;
  } else if (size_ > (1u << 20) && size_ > 8 * kEntrySize * live_.size()) {
    CompactLocked();
  }
  NoteFillLocked();
}

// Moves the live entries to the front, in order, then zeroes the rest. Each
// entry is written at or before the place it is read from, and read before
// anything overwrites it, so a crash at any instant leaves every live key
// listed (at its old place or its new one); stale entries left over by a
// crash only cost a checksum recomputation at the next open.
void DirtyLog::CompactLocked() {
  uint64_t out = 0;
  for (uint64_t in = 0; in + kEntrySize <= size_; in += kEntrySize) {
    const char* e = map_ + in;
    keys::VersionKeyBytes key;
    std::memcpy(key.data(), e, key.size());
    if (!live_.contains(key)) continue;
    if (out != in) std::memmove(map_ + out, e, kEntrySize);
    out += kEntrySize;
  }
  std::memset(map_ + out, 0, static_cast<size_t>(size_ - out));
  size_ = out;
}

Status DirtyLog::Reset() {
  std::lock_guard r(rewrite_mu_);
  std::lock_guard l(mu_);
  std::memset(map_, 0, static_cast<size_t>(size_));
  size_ = 0;
  live_.clear();
  NoteFillLocked();
  return Status::OK();
}

void DirtyLog::StartWriteback() { (void)::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE); }

Status DirtyLog::MakeDurable(bool flush_follows) {
  std::lock_guard r(rewrite_mu_);
  uint64_t growths = 0;
  bool metadata_durable = false;
  {
    std::lock_guard l(mu_);
    growths = growths_;
    metadata_durable = durable_growths_ == growths_;
  }
  if (flush_follows && metadata_durable && dir_synced_) {
    // Appends meanwhile need not be covered: they belong to later writes.
    const int flags = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
    if (::sync_file_range(fd_, 0, 0, flags) != 0) return LogError(errno, "write back " + path_);
    return Status::OK();
  }
  if (::fdatasync(fd_) != 0) return LogError(errno, "fdatasync " + path_);
  if (!dir_synced_) {
    const std::string dir = path_.substr(0, path_.find_last_of('/') + 1);
    const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return LogError(errno, "open " + dir);
    const int rc = ::fsync(dfd);
    const int err = errno;
    ::close(dfd);
    if (rc != 0) return LogError(err, "fsync " + dir);
    dir_synced_ = true;
  }
  std::lock_guard l(mu_);
  durable_growths_ = std::max(durable_growths_, growths);
  return Status::OK();
}

size_t DirtyLog::Listed() {
  std::lock_guard l(mu_);
  return live_.size();
}

}  // namespace snapdisk::engine
