// The dirty log (see dirty_log.h). Entry: the 24-byte version key followed
// by the XXH3-64 of those bytes, little-endian (32 bytes).
#include "dirty_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <xxhash.h>

#include "coding.h"
#include "keys.h"

namespace snapdisk::engine {

namespace {
constexpr size_t kEntrySize = keys::kVersionKeySize + 8;

Status LogError(int err, const std::string& what) {
  std::string msg = fmt::format("{}: {}", what, std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) return Status::NoSpace(msg + " (free space in the store's file system)");
  return Status::IOError(msg);
}
}  // namespace

DirtyLog::~DirtyLog() {
  if (fd_ >= 0) ::close(fd_);
}

Status DirtyLog::Open(const std::string& path, std::vector<std::string>* logged_keys) {
  std::lock_guard l(mu_);
  path_ = path;
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) return LogError(errno, "open " + path);
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return LogError(errno, "stat " + path);
  std::string buf(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pread(fd_, buf.data() + done, buf.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return LogError(errno, "read " + path);
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  logged_keys->clear();
  for (size_t off = 0; off + kEntrySize <= done; off += kEntrySize) {
    const char* e = buf.data() + off;
    uint64_t sum = XXH3_64bits(e, keys::kVersionKeySize);
    uint64_t stored = 0;
    std::memcpy(&stored, e + keys::kVersionKeySize, 8);
    if (sum != stored) break;  // a torn tail: nothing after it was ever completed
    logged_keys->emplace_back(e, keys::kVersionKeySize);
  }
  size_ = done;
  return Status::OK();
}

namespace {
void EncodeEntry(const std::string& key, char* e) {
  std::memcpy(e, key.data(), keys::kVersionKeySize);
  uint64_t sum = XXH3_64bits(e, keys::kVersionKeySize);
  std::memcpy(e + keys::kVersionKeySize, &sum, 8);
}

Status WriteAll(int fd, const char* p, size_t len, uint64_t at, const std::string& path) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pwrite(fd, p + done, len - done, static_cast<off_t>(at + done));
    if (n < 0 && errno == EINTR) continue;
    // A short append leaves a torn entry that Open() stops at; it is overwritten next time.
    if (n <= 0) return LogError(n < 0 ? errno : ENOSPC, "append to " + path);
    done += static_cast<size_t>(n);
  }
  return Status::OK();
}
}  // namespace

Status DirtyLog::Append(const std::string& version_key) {
  char e[kEntrySize];
  EncodeEntry(version_key, e);
  std::lock_guard l(mu_);
  if (live_.count(version_key)) return Status::OK();
  SNAPDISK_RETURN_IF_ERROR(WriteAll(fd_, e, kEntrySize, size_, path_));
  size_ += kEntrySize;
  live_.insert(version_key);
  return Status::OK();
}

void DirtyLog::Release(const std::vector<std::string>& version_keys) {
  std::lock_guard l(mu_);
  for (const std::string& k : version_keys) live_.erase(k);
  if (size_ == 0) return;
  // Nothing is dirty: the whole log is stale. A failed truncate or compaction
  // only means extra checksum recomputation at the next open.
  if (live_.empty()) {
    if (::ftruncate(fd_, 0) == 0) size_ = 0;
  } else if (size_ > (1u << 20) && size_ > 8 * kEntrySize * live_.size()) {
    (void)CompactLocked();
  }
}

// Writes the live entries to a new file and renames it over the log, so that
// a crash at any point leaves one complete log listing every live key.
Status DirtyLog::CompactLocked() {
  const std::string tmp = path_ + ".new";
  int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return LogError(errno, "create " + tmp);
  std::string buf(live_.size() * kEntrySize, '\0');
  size_t off = 0;
  for (const std::string& k : live_) {
    EncodeEntry(k, buf.data() + off);
    off += kEntrySize;
  }
  Status st = WriteAll(fd, buf.data(), buf.size(), 0, tmp);
  if (st.ok() && ::rename(tmp.c_str(), path_.c_str()) != 0) st = LogError(errno, "rename " + tmp);
  if (!st.ok()) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return st;
  }
  ::close(fd_);
  fd_ = fd;
  size_ = buf.size();
  return Status::OK();
}

Status DirtyLog::Reset() {
  std::lock_guard l(mu_);
  if (::ftruncate(fd_, 0) != 0) return LogError(errno, "truncate " + path_);
  size_ = 0;
  live_.clear();
  return Status::OK();
}

}  // namespace snapdisk::engine
