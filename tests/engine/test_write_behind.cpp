// Write-behind (DataFile::WriteBehind, Options::write_behind_bytes): whole
// blocks written in bulk leave the page cache once enough was written after
// them; 4 KiB pieces stay.
#include <fcntl.h>
#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "data_file.h"
#include "forwarding_io.h"
#include "test_util.h"

namespace snapdisk::test {
namespace {

using engine::DataFile;

constexpr uint32_t kBlock = 64 * 1024;
constexpr uint64_t kBlocksPerMiB = (1 << 20) / kBlock;

// The real calls, with every Evict recorded.
class EvictRecordingIo final : public ForwardingIo {
 public:
  int Evict(int fd, off_t pos, off_t len) override {
    evicted.emplace_back(pos, len);
    return posix_->Evict(fd, pos, len);
  }
  std::vector<std::pair<off_t, off_t>> evicted;
};

class WriteBehindTest : public ::testing::Test {
 protected:
  // Opens the data file keeping the last `keep` bytes of whole blocks cached.
  void Open(uint64_t keep) {
    f_.UseIo(&io_);
    ASSERT_TRUE(f_.Open(path_, kBlock, 0, keep).ok());
  }
  void WriteBlock(uint64_t slot) { ASSERT_TRUE(f_.Write(slot, 0, block_.data(), kBlock).ok()); }
  // Pages of the data file's [pos, pos+len) in the page cache (cachestat(2)).
  int64_t Cached(off_t pos, off_t len) {
    const int fd = io_.Open(path_, O_RDONLY, 0);
    EXPECT_GE(fd, 0);
    const int64_t n = io_.CachedPages(fd, pos, len);
    io_.Close(fd);
    EXPECT_NE(n, -1) << "this kernel has no cachestat(2) (Linux 6.5+)";
    return n;
  }

  TempDir dir_;
  const std::string path_ = dir_.path() + "/blocks.dat";
  const std::string block_ = std::string(kBlock, 'x');
  EvictRecordingIo io_;
  DataFile f_;  // after io_, which it uses until it is destroyed
};

TEST_F(WriteBehindTest, WholeBlocksAreEvictedOnceKeepBytesBehindAndAgainTwiceAsFar) {
  ASSERT_NO_FATAL_FAILURE(Open(16 * kBlock));
  // Every other slot: no two writes are adjacent, so each is a range of its own.
  for (uint64_t i = 0; i < 40; ++i) WriteBlock(2 * i);
  // After ranges 0..23 came 16 blocks or more: evicted once each; after
  // ranges 0..7, 32 or more: evicted a second time.
  std::vector<int> times(40, 0);
  for (const auto& [pos, len] : io_.evicted) {
    EXPECT_EQ(len, off_t{kBlock});
    ASSERT_EQ(pos % (2 * kBlock), 0);
    ++times.at(static_cast<size_t>(pos / (2 * kBlock)));
  }
  for (size_t r = 0; r < 40; ++r) EXPECT_EQ(times[r], r < 8 ? 2 : r < 24 ? 1 : 0) << "range " << r;
}

TEST_F(WriteBehindTest, AdjacentBlocksMergeIntoOneMebibyteRanges) {
  ASSERT_NO_FATAL_FAILURE(Open(16 << 20));
  // 17 MiB written sequentially: 17 ranges of 1 MiB; 16 MiB came after the first.
  for (uint64_t slot = 0; slot < 17 * kBlocksPerMiB; ++slot) WriteBlock(slot);
  ASSERT_EQ(io_.evicted.size(), 1u);
  EXPECT_EQ(io_.evicted[0], std::make_pair(off_t{0}, off_t{1} << 20));
}

TEST_F(WriteBehindTest, OffKeepsEverything) {
  ASSERT_NO_FATAL_FAILURE(Open(0));
  for (uint64_t slot = 0; slot < 40 * kBlocksPerMiB; ++slot) WriteBlock(slot);
  EXPECT_TRUE(io_.evicted.empty());
}

TEST_F(WriteBehindTest, PieceWritesStayCached) {
  ASSERT_NO_FATAL_FAILURE(Open(16 * kBlock));
  const std::string piece(4096, 'z');
  for (uint64_t slot = 0; slot < 100; ++slot) ASSERT_TRUE(f_.Write(2 * slot, 4096, piece.data(), 4096).ok());
  EXPECT_TRUE(io_.evicted.empty());
  EXPECT_EQ(Cached(0, 200 * off_t{kBlock}), 100);
}

// The point of it, on the real file system: what was written in bulk before
// a sync is out of the page cache once enough was written after it.
TEST_F(WriteBehindTest, BulkWrittenDataLeavesThePageCache) {
  ASSERT_NO_FATAL_FAILURE(Open(16 << 20));
  for (uint64_t slot = 0; slot < 16 * kBlocksPerMiB; ++slot) WriteBlock(slot);
  ASSERT_TRUE(f_.Sync().ok());  // the first 16 MiB are clean now
  for (uint64_t slot = 16 * kBlocksPerMiB; slot < 48 * kBlocksPerMiB; ++slot) WriteBlock(slot);
  // Every range of the first 16 MiB has had its second eviction, after it was
  // clean: none of its pages is cached. The last 16 MiB are all cached.
  EXPECT_EQ(Cached(0, 16 << 20), 0);
  EXPECT_EQ(Cached(32 << 20, 16 << 20), (16 << 20) / 4096);
}

}  // namespace
}  // namespace snapdisk::test
