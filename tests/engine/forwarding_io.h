// A DataFileIo that forwards every call to the real system calls
// (DataFileIo::Posix()): a test derives from it and overrides only the
// calls it watches or breaks.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "data_file.h"

namespace snapdisk::test {

class ForwardingIo : public engine::DataFileIo {
 public:
  int Open(const std::string& path, int flags, mode_t mode) override { return posix_->Open(path, flags, mode); }
  int Close(int fd) override { return posix_->Close(fd); }
  ssize_t Pread(int fd, void* buf, size_t len, off_t pos) override { return posix_->Pread(fd, buf, len, pos); }
  ssize_t Pwrite(int fd, const void* buf, size_t len, off_t pos) override {
    return posix_->Pwrite(fd, buf, len, pos);
  }
  int PunchHole(int fd, off_t pos, off_t len) override { return posix_->PunchHole(fd, pos, len); }
  int Fdatasync(int fd) override { return posix_->Fdatasync(fd); }
  int Writeback(int fd) override { return posix_->Writeback(fd); }
  int StartWriteback(int fd) override { return posix_->StartWriteback(fd); }
  int Prefetch(int fd, off_t pos, off_t len) override { return posix_->Prefetch(fd, pos, len); }
  int Evict(int fd, off_t pos, off_t len) override { return posix_->Evict(fd, pos, len); }
  int64_t CachedPages(int fd, off_t pos, off_t len) override { return posix_->CachedPages(fd, pos, len); }
  ssize_t PolledPread(int fd, void* buf, size_t len, off_t pos, uint64_t poll_ns, uint64_t* waited_ns) override {
    return posix_->PolledPread(fd, buf, len, pos, poll_ns, waited_ns);
  }

 protected:
  engine::DataFileIo* const posix_ = engine::DataFileIo::Posix();
};

}  // namespace snapdisk::test
