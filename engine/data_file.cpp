// Block data file I/O and slot allocation (see data_file.h).
#include "data_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "polled_read.h"

namespace snapdisk::engine {

namespace {
Status FromErrno(int err, const std::string& what) {
  std::string msg = fmt::format("{}: {}", what, std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) return Status::NoSpace(msg + " (free space in the store's file system)");
  return Status::IOError(msg);
}
class PosixDataFileIo final : public DataFileIo {
 public:
  int Open(const std::string& path, int flags, mode_t mode) override {
    return ::open(path.c_str(), flags, mode);
  }
  int Close(int fd) override { return ::close(fd); }
  ssize_t Pread(int fd, void* buf, size_t len, off_t pos) override { return ::pread(fd, buf, len, pos); }
  ssize_t Pwrite(int fd, const void* buf, size_t len, off_t pos) override {
    return ::pwrite(fd, buf, len, pos);
  }
  int PunchHole(int fd, off_t pos, off_t len) override {
    return ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, pos, len);
  }
  int Fdatasync(int fd) override { return ::fdatasync(fd); }
  int Writeback(int fd) override {
    return ::sync_file_range(fd, 0, 0,
                             SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
  }
  int StartWriteback(int fd) override { return ::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE); }
  int Prefetch(int fd, off_t pos, off_t len) override { return ::posix_fadvise(fd, pos, len, POSIX_FADV_WILLNEED); }
  int Evict(int fd, off_t pos, off_t len) override { return ::posix_fadvise(fd, pos, len, POSIX_FADV_DONTNEED); }
  int64_t CachedPages(int fd, off_t pos, off_t len) override {
    return engine::CachedPages(fd, static_cast<uint64_t>(pos), static_cast<uint64_t>(len));
  }
  ssize_t PolledPread(int fd, void* buf, size_t len, off_t pos, uint64_t poll_ns,
                      uint64_t* waited_ns) override {
    return engine::PolledPread(fd, buf, len, pos, poll_ns, waited_ns);
  }
};

// File systems on which an overwrite of an allocated block is written in
// place, so that writing the pages back and a later device cache flush make
// it durable without the file's metadata. Not btrfs or zfs (copy on write:
// every overwrite changes metadata), nor anything unknown.
bool OverwritesInPlace(int fd) {
  struct statfs sf {};
  if (::fstatfs(fd, &sf) != 0) return false;
  switch (static_cast<unsigned long>(sf.f_type)) {
    case 0xEF53:      // ext2/3/4
    case 0x58465342:  // xfs
    case 0x01021994:  // tmpfs (nothing survives a reboot anyway)
      return true;
    default:
      return false;
  }
}
}  // namespace

DataFileIo* DataFileIo::Posix() {
  static PosixDataFileIo* const posix = new PosixDataFileIo;  // never destroyed
  return posix;
}

DataFile::~DataFile() {
  if (direct_fd_ >= 0) io_->Close(direct_fd_);
  if (random_fd_ >= 0) io_->Close(random_fd_);
  if (fd_ >= 0) io_->Close(fd_);
}

Status DataFile::Open(const std::string& path, uint32_t block_size, uint32_t read_poll_us,
                      uint64_t write_behind) {
  path_ = path;
  block_size_ = block_size;
  write_behind_ = write_behind;
  fd_ = io_->Open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) return FromErrno(errno, "open " + path);
  // A second descriptor for scattered small reads, with readahead off: on a
  // shared descriptor, interleaved random reads from many threads can look
  // sequential to the kernel, which then reads far more than asked. Large
  // reads keep the first descriptor and its readahead.
  random_fd_ = io_->Open(path, O_RDONLY | O_CLOEXEC, 0);
  if (random_fd_ < 0) return FromErrno(errno, "open " + path);
  (void)::posix_fadvise(random_fd_, 0, 0, POSIX_FADV_RANDOM);
  overwrites_in_place_ = OverwritesInPlace(fd_);
  // Polled reads need O_DIRECT (a buffered read's completion reaches the
  // polling thread later: measured, it saved a quarter of what O_DIRECT
  // saves) and cachestat(2), which says when the page cache has nothing to
  // offer. A file system without O_DIRECT just keeps buffered reads.
  if (read_poll_us > 0 && io_->CachedPages(random_fd_, 0, 4096) >= 0) {
    direct_fd_ = io_->Open(path, O_RDONLY | O_DIRECT | O_CLOEXEC, 0);
    if (direct_fd_ >= 0) poll_ns_ = uint64_t{read_poll_us} * 1000;
  }
  return Status::OK();
}

// A polled read skips the page cache, so it is only for pages the cache does
// not hold (a read of cached data costs a copy; of dirty data, a write-back
// first). And only while reads complete within the poll time: on a device
// that is slower, polling would burn its whole budget on every read and
// sleep anyway. Then one read in 64 still polls, to notice a faster device.
bool DataFile::ShouldPoll(uint64_t pos, uint32_t len, const char* buf) const {
  constexpr uint64_t kAlign = 4096;  // O_DIRECT: within any device's logical block size
  if (direct_fd_ < 0 || pos % kAlign || len % kAlign || reinterpret_cast<uintptr_t>(buf) % kAlign)
    return false;
  if (poll_avg_ns_.load(std::memory_order_relaxed) > poll_ns_ &&
      poll_skipped_.fetch_add(1, std::memory_order_relaxed) % 64 != 63)
    return false;
  return io_->CachedPages(random_fd_, static_cast<off_t>(pos), len) == 0;
}

void DataFile::NotePolled(uint64_t waited_ns) const {
  polled_reads_.fetch_add(1, std::memory_order_relaxed);
  // Racy read-modify-write on purpose: a lost update between two readers
  // only delays the average by one sample.
  const uint64_t avg = poll_avg_ns_.load(std::memory_order_relaxed);
  poll_avg_ns_.store(avg == 0 ? waited_ns : (avg * 7 + waited_ns) / 8, std::memory_order_relaxed);
}

Status DataFile::Read(uint64_t slot, uint32_t offset, uint32_t len, char* buf, bool random_access) const {
  off_t pos = static_cast<off_t>(slot * block_size_ + offset);
  if (random_access && ShouldPoll(static_cast<uint64_t>(pos), len, buf)) {
    uint64_t waited_ns = 0;
    ssize_t n = io_->PolledPread(direct_fd_, buf, len, pos, poll_ns_, &waited_ns);
    if (n == static_cast<ssize_t>(len)) {
      NotePolled(waited_ns);
      return Status::OK();
    }
    // A short read (the slot's end punched out) or an error: the buffered
    // loop below handles both as it always has.
  }
  const int fd = random_access ? random_fd_ : fd_;
  size_t done = 0;
  while (done < len) {
    ssize_t n = io_->Pread(fd, buf + done, len - done, pos + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return FromErrno(errno, fmt::format("read slot {} of {}", slot, path_));
    }
    if (n == 0) {  // past EOF: a punched tail reads as zeros
      std::memset(buf + done, 0, len - done);
      break;
    }
    done += static_cast<size_t>(n);
  }
  return Status::OK();
}

namespace {
// Adjacent whole-block writes merge into one range up to this size, so that
// a bulk write costs two posix_fadvise calls per MiB.
constexpr off_t kBehindRange = 1 << 20;
}  // namespace

// Why: a disk image written in bulk (an install, a restore, a fill) left its
// data in the page cache until it filled all free memory, and the writes
// after it had to make room in a full cache. Fresh store, 32 GiB image
// filled with fio (1 MiB writes, end_fsync) on this 24 GiB machine, then the
// harness's latency series under a 4 KiB write load, twice each: without
// write-behind the fill ran at 307-312 MiB/s, left 23 GiB cached, and the
// load ran at 34-48k writes/s with snapshot p99 1.8-6.4 ms and write stalls
// of 12.5 ms; with it (16 MiB behind then) the fill ran at 1,737-1,768
// MiB/s, left 0.6 GiB cached, and the load ran at 42-54k writes/s, p99
// 0.38-1.5 ms, stalls 0.5-2.8 ms (bench/README.md, "Since 12:45 on
// 2026-12-05"). It keeps the last write_behind_ bytes (16 MiB by default;
// keeping 1 GiB, the same test gave p99 2.12 ms and the harness 2.10 ms).
// Whole blocks are what bulk writes are made of; 4 KiB pieces, which
// random small writes make, stay cached.
//
// A range is evicted a first time once write_behind_ bytes were written
// after it (posix_fadvise(DONTNEED) starts the writeback of its dirty pages
// and drops its clean ones), and a second time as far behind again, for
// the pages that were still dirty or under writeback the first time.
void DataFile::WriteBehind(off_t pos, off_t len) {
  if (write_behind_ == 0) return;
  std::vector<std::pair<off_t, off_t>> evict;
  {
    std::lock_guard l(behind_mu_);
    behind_total_ += static_cast<uint64_t>(len);
    BehindRange* last = behind_.empty() ? nullptr : &behind_.back();
    if (last != nullptr && behind_evicted_ < behind_.size() && last->pos + last->len == pos &&
        last->len + len <= kBehindRange) {
      last->len += len;
      last->end = behind_total_;
    } else {
      behind_.push_back({pos, len, behind_total_});
    }
    for (; behind_evicted_ < behind_.size() && behind_total_ - behind_[behind_evicted_].end >= write_behind_;
         ++behind_evicted_)
      evict.emplace_back(behind_[behind_evicted_].pos, behind_[behind_evicted_].len);
    for (; !behind_.empty() && behind_total_ - behind_.front().end >= 2 * write_behind_; --behind_evicted_) {
      evict.emplace_back(behind_.front().pos, behind_.front().len);
      behind_.pop_front();
    }
  }
  for (const auto& [p, n] : evict) (void)io_->Evict(fd_, p, n);
}

Status DataFile::Write(uint64_t slot, uint32_t offset, const char* data, uint32_t len, bool fills_hole) {
  // Marked once the write is done (whatever its outcome): a sync that
  // starts after this call returns must see it. A sync that cleared the
  // mark while the write was under way was not asked to cover it.
  struct MarkAfter {
    DataFile* f;
    bool on;
    ~MarkAfter() {
      if (on) f->metadata_dirty_ = true;
    }
  } mark{this, fills_hole};
  off_t pos = static_cast<off_t>(slot * block_size_ + offset);
  size_t done = 0;
  while (done < len) {
    // A short write (a signal, or the file system filling up) continues
    // where it stopped; the next call reports the error, if there is one.
    ssize_t n = io_->Pwrite(fd_, data + done, len - done, pos + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return FromErrno(errno, fmt::format("write slot {} of {}", slot, path_));
    }
    if (n == 0)  // no progress and no error: do not spin
      return Status::IOError(fmt::format("write slot {} of {}: wrote 0 of {} bytes", slot, path_,
                                         len - done));
    done += static_cast<size_t>(n);
  }
  if (len == block_size_) WriteBehind(pos, len);
  return Status::OK();
}

Status DataFile::Punch(uint64_t slot, uint32_t offset, uint32_t len) {
  off_t pos = static_cast<off_t>(slot * block_size_ + offset);
  const int punched = io_->PunchHole(fd_, pos, len);
  metadata_dirty_ = true;  // after the punch, as in Write
  if (punched != 0) {
    if (errno == EOPNOTSUPP) {  // file system without hole punching: zero instead
      std::vector<char> zeros(len, 0);
      return Write(slot, offset, zeros.data(), len);
    }
    return FromErrno(errno, fmt::format("punch slot {} of {}", slot, path_));
  }
  return Status::OK();
}

Status DataFile::Sync() {
  metadata_dirty_ = false;
  if (io_->Fdatasync(fd_) != 0) {
    metadata_dirty_ = true;
    return FromErrno(errno, "fdatasync " + path_);
  }
  return Status::OK();
}

Status DataFile::SyncBeforeIndex(bool* flushed) {
  *flushed = true;
  if (!overwrites_in_place_ || metadata_dirty_.load()) return Sync();
  if (io_->Writeback(fd_) != 0) return FromErrno(errno, "write back " + path_);
  *flushed = false;
  return Status::OK();
}

void DataFile::StartWriteback() { (void)io_->StartWriteback(fd_); }

void DataFile::Prefetch(uint64_t slot, uint32_t offset, uint32_t len) const {
  (void)io_->Prefetch(fd_, static_cast<off_t>(slot * block_size_ + offset), static_cast<off_t>(len));
}

uint64_t DataFile::AllocatedBytes() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

void SlotAllocator::MarkUsed(uint64_t slot) {
  std::lock_guard lock(mu_);
  if (slot >= used_.size()) used_.resize(std::max<uint64_t>(slot + 1, used_.size() * 2), false);
  used_[slot] = true;
  high_water_ = std::max(high_water_, slot + 1);
  ++in_use_;
}

void SlotAllocator::Finish() {
  std::lock_guard lock(mu_);
  free_bits_.assign((high_water_ + 63) / 64, 0);
  summary_.assign((free_bits_.size() + 63) / 64, 0);
  first_summary_ = summary_.size();
  free_count_ = 0;
  for (uint64_t s = 0; s < high_water_; ++s)
    if (!used_[s]) SetFree(s);
  used_.clear();
  used_.shrink_to_fit();
}

void SlotAllocator::SetFree(uint64_t slot) {
  const uint64_t w = slot / 64;
  const uint64_t bit = uint64_t{1} << (slot % 64);
  if (free_bits_[w] & bit) return;  // already free: count it once
  free_bits_[w] |= bit;
  summary_[w / 64] |= uint64_t{1} << (w % 64);
  first_summary_ = std::min(first_summary_, w / 64);
  ++free_count_;
}

uint64_t SlotAllocator::Allocate() {
  std::lock_guard lock(mu_);
  ++in_use_;
  if (free_count_ == 0) {
    const uint64_t s = high_water_++;
    if (free_bits_.size() * 64 < high_water_) {
      free_bits_.push_back(0);
      if (summary_.size() * 64 < free_bits_.size()) summary_.push_back(0);
    }
    return s;
  }
  // free_count_ > 0, so some summary word at or past first_summary_ is set.
  while (summary_[first_summary_] == 0) ++first_summary_;
  const uint64_t w = first_summary_ * 64 + static_cast<uint64_t>(std::countr_zero(summary_[first_summary_]));
  const uint64_t s = w * 64 + static_cast<uint64_t>(std::countr_zero(free_bits_[w]));
  free_bits_[w] &= free_bits_[w] - 1;  // clears the lowest set bit
  if (free_bits_[w] == 0) summary_[w / 64] &= ~(uint64_t{1} << (w % 64));
  --free_count_;
  return s;
}

void SlotAllocator::Free(uint64_t slot) {
  std::lock_guard lock(mu_);
  --in_use_;
  SetFree(slot);
}

uint64_t SlotAllocator::high_water() const {
  std::lock_guard lock(mu_);
  return high_water_;
}

uint64_t SlotAllocator::used() const {
  std::lock_guard lock(mu_);
  return in_use_;
}

}  // namespace snapdisk::engine
