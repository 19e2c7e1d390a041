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
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "snapdisk/status.h"

namespace snapdisk::engine {

class DataFile {
 public:
  DataFile() = default;
  ~DataFile();
  DataFile(const DataFile&) = delete;
  DataFile& operator=(const DataFile&) = delete;

  Status Open(const std::string& path, uint32_t block_size);
  Status Read(uint64_t slot, uint32_t offset, uint32_t len, char* buf) const;
  Status Write(uint64_t slot, uint32_t offset, const char* data, uint32_t len);
  // Deallocates the bytes (they read back as zeros) without changing the size.
  Status Punch(uint64_t slot, uint32_t offset, uint32_t len);
  Status Sync();
  uint64_t AllocatedBytes() const;  // st_blocks * 512
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  uint32_t block_size_ = 0;
  std::string path_;
};

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
  mutable std::mutex mu_;
  std::vector<bool> used_;       // during load only
  std::vector<uint64_t> free_;   // slots below high_water_ that are free
  uint64_t high_water_ = 0;
  uint64_t in_use_ = 0;
};

}  // namespace snapdisk::engine
