// Write-behind (DataFile::WriteBehind): whole-block writes leave the page
// cache once they are on their way to the disk; 4 KiB pieces stay.
#include <fcntl.h>
#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "data_file.h"
#include "test_util.h"

namespace snapdisk::test {
namespace {

using engine::DataFile;
using engine::DataFileIo;

constexpr uint32_t kBlock = 64 * 1024;

// The real calls, with every Evict recorded.
class EvictRecordingIo final : public DataFileIo {
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
  int64_t CachedPages(int fd, off_t pos, off_t len) override { return posix_->CachedPages(fd, pos, len); }
  int Evict(int fd, off_t pos, off_t len) override {
    evicted.emplace_back(pos, len);
    return posix_->Evict(fd, pos, len);
  }
  std::vector<std::pair<off_t, off_t>> evicted;

 private:
  DataFileIo* const posix_ = DataFileIo::Posix();
};

std::string Block(char fill) { return std::string(kBlock, fill); }

TEST(WriteBehindTest, WholeBlocksAreEvictedTwiceSixteenRangesBehind) {
  TempDir dir;
  EvictRecordingIo io;
  DataFile f;
  f.UseIo(&io);
  ASSERT_TRUE(f.Open(dir.path() + "/blocks.dat", kBlock).ok());
  // Every other slot: no two writes are adjacent, so each is a range of its own.
  const std::string data = Block('x');
  for (uint64_t i = 0; i < 40; ++i) ASSERT_TRUE(f.Write(2 * i, 0, data.data(), kBlock).ok());
  // Ranges 0..23 are 16 or more behind the newest (39): evicted once each;
  // ranges 0..7 are 32 or more behind: evicted a second time.
  std::vector<int> times(40, 0);
  for (const auto& [pos, len] : io.evicted) {
    EXPECT_EQ(len, off_t{kBlock});
    ASSERT_EQ(pos % (2 * kBlock), 0);
    ++times.at(static_cast<size_t>(pos / (2 * kBlock)));
  }
  for (size_t r = 0; r < 40; ++r) EXPECT_EQ(times[r], r < 8 ? 2 : r < 24 ? 1 : 0) << "range " << r;
}

TEST(WriteBehindTest, AdjacentBlocksMergeIntoOneMebibyteRanges) {
  TempDir dir;
  EvictRecordingIo io;
  DataFile f;
  f.UseIo(&io);
  ASSERT_TRUE(f.Open(dir.path() + "/blocks.dat", kBlock).ok());
  const std::string data = Block('y');
  // 17 MiB written sequentially: 17 ranges of 1 MiB; the first is 16 behind.
  for (uint64_t slot = 0; slot < 17 * 16; ++slot) ASSERT_TRUE(f.Write(slot, 0, data.data(), kBlock).ok());
  ASSERT_EQ(io.evicted.size(), 1u);
  EXPECT_EQ(io.evicted[0], std::make_pair(off_t{0}, off_t{1} << 20));
}

TEST(WriteBehindTest, PieceWritesStayCached) {
  TempDir dir;
  EvictRecordingIo io;
  DataFile f;
  f.UseIo(&io);
  const std::string path = dir.path() + "/blocks.dat";
  ASSERT_TRUE(f.Open(path, kBlock).ok());
  const std::string piece(4096, 'z');
  for (uint64_t slot = 0; slot < 100; ++slot) ASSERT_TRUE(f.Write(2 * slot, 4096, piece.data(), 4096).ok());
  EXPECT_TRUE(io.evicted.empty());
  const int fd = io.Open(path, O_RDONLY, 0);
  ASSERT_GE(fd, 0);
  const int64_t cached = io.CachedPages(fd, 0, 200 * off_t{kBlock});
  io.Close(fd);
  ASSERT_NE(cached, -1) << "this kernel has no cachestat(2) (Linux 6.5+)";
  EXPECT_EQ(cached, 100);
}

// The point of it, on the real file system: what was written in bulk before
// a sync is out of the page cache once enough was written after it.
TEST(WriteBehindTest, BulkWrittenDataLeavesThePageCache) {
  TempDir dir;
  EvictRecordingIo io;
  DataFile f;
  f.UseIo(&io);
  const std::string path = dir.path() + "/blocks.dat";
  ASSERT_TRUE(f.Open(path, kBlock).ok());
  const std::string data = Block('w');
  const uint64_t per_mib = (1 << 20) / kBlock;
  for (uint64_t slot = 0; slot < 16 * per_mib; ++slot) ASSERT_TRUE(f.Write(slot, 0, data.data(), kBlock).ok());
  ASSERT_TRUE(f.Sync().ok());  // the first 16 MiB are clean now
  for (uint64_t slot = 16 * per_mib; slot < 48 * per_mib; ++slot)
    ASSERT_TRUE(f.Write(slot, 0, data.data(), kBlock).ok());
  // Every range of the first 16 MiB has had its second eviction, after it was
  // clean: none of its pages is cached. The last 16 MiB are all cached.
  const int fd = io.Open(path, O_RDONLY, 0);
  ASSERT_GE(fd, 0);
  const int64_t first = io.CachedPages(fd, 0, 16 << 20);
  const int64_t last = io.CachedPages(fd, 32 << 20, 16 << 20);
  io.Close(fd);
  ASSERT_NE(first, -1) << "this kernel has no cachestat(2) (Linux 6.5+)";
  EXPECT_EQ(first, 0);
  EXPECT_EQ(last, (16 << 20) / 4096);
}

}  // namespace
}  // namespace snapdisk::test
