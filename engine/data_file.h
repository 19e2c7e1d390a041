// Block data: one sparse file of fixed-size slots, and the slot allocator.
//
// A slot holds the bytes of one block version; only its pieces with data are
// ever written, so an unwritten piece costs no disk space (the file is
// sparse) and a freed slot is punched out. The allocator lives in memory and
// is rebuilt at open from the index (a slot is in use iff a version record
// names it), so a crash can never leak a slot or hand out a used one.
//
// Thread-safety: DataFile's I/O calls are safe from many threads (pread /
// pwrite on one fd). SlotAllocator is internally locked.
//
// All raw I/O goes through a DataFileIo (the POSIX calls by default), the seam
// through which tests inject ENOSPC, EIO, short writes and lost unsynced data
// (engine/fault_injection.h). It costs one virtual call per system call.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "snapdisk/status.h"

namespace snapdisk::engine {

// The system calls under DataFile, with their POSIX contracts: -1 and errno
// on failure, and Pwrite / Pread may transfer fewer bytes than asked.
// Implementations must be safe to call from many threads at once.
class DataFileIo {
 public:
  virtual ~DataFileIo() = default;
  virtual int Open(const std::string& path, int flags, mode_t mode) = 0;
  virtual int Close(int fd) = 0;
  virtual ssize_t Pread(int fd, void* buf, size_t len, off_t pos) = 0;
  virtual ssize_t Pwrite(int fd, const void* buf, size_t len, off_t pos) = 0;
  // fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE).
  virtual int PunchHole(int fd, off_t pos, off_t len) = 0;
  virtual int Fdatasync(int fd) = 0;
  // sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER) over the whole file:
  // the dirty pages reach the device, with no metadata and no cache flush.
  virtual int Writeback(int fd) = 0;
  // sync_file_range(WRITE): starts writing the dirty pages back and returns
  // without waiting. A hint (a later Writeback or Fdatasync waits and
  // reports errors), so doing nothing is a valid implementation.
  virtual int StartWriteback(int fd) { return 0; }
  // posix_fadvise(WILLNEED): starts reading the range into the page cache
  // and returns without waiting. A hint, like StartWriteback.
  virtual int Prefetch(int fd, off_t pos, off_t len) { return 0; }
  // posix_fadvise(DONTNEED): starts writing the range's dirty pages back
  // (without waiting) and drops its clean ones from the page cache. A hint.
  virtual int Evict(int fd, off_t pos, off_t len) { return 0; }
  // How many pages of [pos, pos+len) the page cache holds, or -1 if unknown
  // (then DataFile never polls: it must not bypass cached data blindly).
  virtual int64_t CachedPages(int fd, off_t pos, off_t len) { return -1; }
  // Pread whose thread polls for up to `poll_ns` before sleeping
  // (polled_read.h); *waited_ns gets the time the read took.
  virtual ssize_t PolledPread(int fd, void* buf, size_t len, off_t pos, uint64_t poll_ns,
                              uint64_t* waited_ns) {
    *waited_ns = 0;
    return Pread(fd, buf, len, pos);
  }

  // The real system calls; a process-wide object that is never destroyed.
  static DataFileIo* Posix();
};

class DataFile {
 public:
  DataFile() = default;
  ~DataFile();
  DataFile(const DataFile&) = delete;
  DataFile& operator=(const DataFile&) = delete;

  // Replaces the I/O under this file (tests); call before Open. `io` must
  // outlive the DataFile.
  void UseIo(DataFileIo* io) { io_ = io; }
  // `read_poll_us` > 0: small reads of uncached data bypass the page cache
  // and poll for up to that long (Options::read_poll_us). `write_behind` >
  // 0: whole-block writes leave the page cache that many bytes of whole
  // blocks later (Options::write_behind_bytes; WriteBehind).
  Status Open(const std::string& path, uint32_t block_size, uint32_t read_poll_us = 0,
              uint64_t write_behind = 0);
  // `random_access`: a small read among scattered ones (no readahead). Such
  // a read of pages the page cache does not hold is polled (see Open) when
  // `buf`, the position and `len` are 4 KiB-aligned.
  Status Read(uint64_t slot, uint32_t offset, uint32_t len, char* buf, bool random_access = false) const;
  // Reads that were polled since Open (tests, diagnostics).
  uint64_t polled_reads() const { return polled_reads_.load(std::memory_order_relaxed); }
  // `fills_hole`: some of the bytes land where the file has no block yet
  // (a new slot, or a piece never written or punched), so the file's
  // metadata changes and only an fdatasync makes them durable.
  Status Write(uint64_t slot, uint32_t offset, const char* data, uint32_t len, bool fills_hole = true);
  // Starts reading [offset, offset+len) of `slot` into the page cache
  // (no wait, no error: the Read that follows does the real work). Lets the
  // scattered pieces of one request reach the device together instead of
  // one after another.
  void Prefetch(uint64_t slot, uint32_t offset, uint32_t len) const;
  // Deallocates the bytes (they read back as zeros) without changing the size.
  Status Punch(uint64_t slot, uint32_t offset, uint32_t len);
  // fdatasync: every completed write is durable.
  Status Sync();
  // The first half of a sync that an index log sync completes. If no write
  // since the last sync changed the file's metadata (pure overwrites, the
  // common case for a disk image) and the file system overwrites in place
  // (ext4, xfs, tmpfs), only writes the dirty pages back and sets *flushed
  // to false: the index log's fdatasync that must follow issues the device
  // cache flush that makes both durable, one flush instead of two.
  // Otherwise it is Sync() and sets *flushed to true.
  Status SyncBeforeIndex(bool* flushed);
  // Starts the dirty pages on their way to the device, so that a sync
  // (SyncBeforeIndex) that follows waits for I/O already under way while
  // its caller writes the index. Errors are left to that sync.
  void StartWriteback();
  // The file system writes a page back over its old blocks (checked at
  // Open): a device cache flush then covers pages written back earlier.
  bool overwrites_in_place() const { return overwrites_in_place_; }
  uint64_t AllocatedBytes() const;  // st_blocks * 512
  const std::string& path() const { return path_; }

 private:
  DataFileIo* io_ = DataFileIo::Posix();
  int fd_ = -1;
  int random_fd_ = -1;  // the same file, read-only, POSIX_FADV_RANDOM
  int direct_fd_ = -1;  // the same file, read-only, O_DIRECT: polled reads
  // Whole-block writes are written behind: their pages leave the page cache
  // once write_behind_ bytes of whole blocks were written after them.
  void WriteBehind(off_t pos, off_t len);
  struct BehindRange {
    off_t pos, len;
    uint64_t end;  // behind_total_ once its last byte was written
  };
  uint64_t write_behind_ = 0;
  std::mutex behind_mu_;
  std::deque<BehindRange> behind_;  // guarded by behind_mu_, as are the two below: oldest first
  uint64_t behind_total_ = 0;       // bytes of whole blocks written since Open
  size_t behind_evicted_ = 0;       // the first this many ranges were evicted once
  // Whether a polled read of uncached pages is worth it (ShouldPoll).
  bool ShouldPoll(uint64_t pos, uint32_t len, const char* buf) const;
  void NotePolled(uint64_t waited_ns) const;
  uint64_t poll_ns_ = 0;
  // Recent polled reads' time (an average weighted 1/8 to the latest), and
  // the reads skipped since polling last looked too slow to be worth it.
  mutable std::atomic<uint64_t> poll_avg_ns_{0};
  mutable std::atomic<uint32_t> poll_skipped_{0};
  mutable std::atomic<uint64_t> polled_reads_{0};
  bool overwrites_in_place_ = false;  // the file system (checked at Open) allows SyncBeforeIndex's shortcut
  // Some write or punch since the last sync changed the file's metadata.
  std::atomic<bool> metadata_dirty_{true};
  uint32_t block_size_ = 0;
  std::string path_;
};

// Hands out the lowest free slot. A freed image's slots are then reused in
// ascending order, so an image written sequentially after a delete lies
// sequentially in the file and reads back at the disk's streaming speed
// (a LIFO free list handed such an image its slots in descending order:
// about 30 % slower to read back, measured with fio seq read 1M).
class SlotAllocator {
 public:
  // Load phase: report every slot a version record names, then Finish().
  void MarkUsed(uint64_t slot);
  void Finish();
  uint64_t Allocate();
  void Free(uint64_t slot);
  uint64_t high_water() const;
  uint64_t used() const;

 private:
  void SetFree(uint64_t slot);  // mu_ held

  mutable std::mutex mu_;
  std::vector<bool> used_;  // during load only
  // A bit per slot below high_water_, set when free; summary_ has a bit per
  // word of free_bits_, set when that word has a free slot, so finding the
  // lowest free slot reads one word in 4096 slots.
  std::vector<uint64_t> free_bits_;
  std::vector<uint64_t> summary_;
  uint64_t first_summary_ = 0;  // no summary word below it is non-zero
  uint64_t free_count_ = 0;     // free slots below high_water_
  uint64_t high_water_ = 0;
  uint64_t in_use_ = 0;
};

}  // namespace snapdisk::engine
