// The seal log (see seal_log.h).
#include "seal_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include <fmt/format.h>
#include <xxhash.h>

#include "coding.h"

namespace snapdisk::engine {

namespace {
constexpr uint32_t kBatch = 1, kDone = 2;
constexpr size_t kHeader = 16, kTrailer = 8;

Status LogError(int err, const std::string& what) {
  std::string msg = fmt::format("{}: {}", what, std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) return Status::NoSpace(msg + " (free space in the store's file system)");
  return Status::IOError(msg);
}
}  // namespace

SealLog::~SealLog() {
  if (fd_ >= 0) ::close(fd_);
}

Status SealLog::Open(const std::string& path, std::vector<Record>* unflushed) {
  std::lock_guard l(mu_);
  path_ = path;
  unflushed->clear();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) return LogError(errno, "open " + path);
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return LogError(errno, "stat " + path);
  std::string buf(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = ::pread(fd_, buf.data() + got, buf.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return LogError(errno, "read " + path);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  std::map<uint64_t, std::vector<Record>> batches;
  size_t off = 0;
  while (off + kHeader + kTrailer <= got) {
    coding::Reader head(std::string_view(buf.data() + off, kHeader));
    const uint32_t type = head.U32(), len = head.U32();
    const uint64_t seq = head.U64();
    if (len > got - off - kHeader - kTrailer) break;  // torn
    uint64_t sum = 0;
    std::memcpy(&sum, buf.data() + off + kHeader + len, 8);
    if (XXH3_64bits(buf.data() + off, kHeader + len) != sum) break;  // torn or stale
    coding::Reader body(std::string_view(buf.data() + off + kHeader, len));
    if (type == kBatch) {
      const uint64_t image = body.U64(), gen = body.U64();
      const uint32_t count = body.U32();
      std::vector<Record>& recs = batches[seq];
      for (uint32_t i = 0; i < count && body.ok(); ++i) {
        Record r{image, gen, body.U64(), body.Str()};
        recs.push_back(std::move(r));
      }
      if (!body.ok()) return Status::Corruption(fmt::format("{}: damaged batch {}", path, seq));
    } else if (type == kDone) {
      batches.erase(seq);
    } else {
      return Status::Corruption(fmt::format("{}: unknown entry type {}", path, type));
    }
    off += kHeader + len + kTrailer;
  }
  for (auto& [seq, recs] : batches)
    for (Record& r : recs) unflushed->push_back(std::move(r));
  size_ = off;
  return Status::OK();
}

Status SealLog::Reset() {
  std::lock_guard l(mu_);
  if (::ftruncate(fd_, 0) != 0) return LogError(errno, "truncate " + path_);
  size_ = 0;
  open_batches_.clear();
  return Status::OK();
}

Status SealLog::AppendLocked(uint32_t type, uint64_t seq, const std::string& payload) {
  coding::Writer w;
  w.U32(type);
  w.U32(static_cast<uint32_t>(payload.size()));
  w.U64(seq);
  std::string& e = w.buffer();
  e += payload;
  const uint64_t sum = XXH3_64bits(e.data(), e.size());
  e.append(reinterpret_cast<const char*>(&sum), 8);
  size_t done = 0;
  while (done < e.size()) {
    ssize_t n = ::pwrite(fd_, e.data() + done, e.size() - done, static_cast<off_t>(size_ + done));
    if (n < 0 && errno == EINTR) continue;
    // A short append is a torn entry that Open stops at; the next append
    // overwrites it (size_ is not advanced).
    if (n <= 0) return LogError(n < 0 ? errno : ENOSPC, "append to " + path_);
    done += static_cast<size_t>(n);
  }
  size_ += e.size();
  return Status::OK();
}

Status SealLog::AppendBatch(uint64_t image, uint64_t gen, const std::vector<std::pair<uint64_t, std::string>>& records,
                            uint64_t* seq) {
  coding::Writer w;
  w.U64(image);
  w.U64(gen);
  w.U32(static_cast<uint32_t>(records.size()));
  for (const auto& [block, value] : records) {
    w.U64(block);
    w.Str(value);
  }
  std::lock_guard l(mu_);
  const uint64_t s = next_seq_++;
  SNAPDISK_RETURN_IF_ERROR(AppendLocked(kBatch, s, w.buffer()));
  open_batches_.insert(s);
  *seq = s;
  return Status::OK();
}

Status SealLog::MarkDone(uint64_t seq) {
  std::lock_guard l(mu_);
  if (!open_batches_.count(seq)) return Status::OK();
  open_batches_.erase(seq);
  if (open_batches_.empty()) {
    // Nothing left to replay: empty the file instead of marking.
    if (::ftruncate(fd_, 0) == 0) {
      size_ = 0;
      return Status::OK();
    }
  }
  Status s = AppendLocked(kDone, seq, std::string());
  if (!s.ok()) open_batches_.insert(seq);  // still replayable: try again next time
  return s;
}

}  // namespace snapdisk::engine
