// Polled reads (engine/polled_read.h, DataFile::Read): a small read of pages
// the page cache does not hold goes around it and is polled; anything else,
// and every read when polling is off, stays buffered. The bytes are the
// same either way.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "data_file.h"
#include "forwarding_io.h"
#include "polled_read.h"
#include "test_util.h"

namespace snapdisk::test {
namespace {

using engine::DataFile;

constexpr uint32_t kBlock = 64 * 1024;

// A page-aligned buffer, as O_DIRECT needs.
struct AlignedBuffer {
  explicit AlignedBuffer(size_t n) : p(static_cast<char*>(std::aligned_alloc(4096, n))) {}
  ~AlignedBuffer() { std::free(p); }
  char* p;
};

std::vector<char> Pattern(uint64_t slot, uint32_t len) {
  std::vector<char> v(len);
  for (uint32_t i = 0; i < len; ++i) v[i] = static_cast<char>((slot * 131 + i * 7 + i / 4096) & 0xff);
  return v;
}

class PolledReadTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()); }

  // Opens `f` (polling for up to `poll_us`) on a data file of `slots` cold slots.
  void OpenCold(DataFile& f, uint32_t poll_us, uint64_t slots) {
    ASSERT_TRUE(f.Open(path_, kBlock, poll_us).ok());
    WriteCold(f, slots);
  }
  // Writes `slots` whole slots, makes them durable and drops them from the
  // page cache (POSIX_FADV_DONTNEED drops clean pages; no root needed).
  void WriteCold(DataFile& f, uint64_t slots) {
    for (uint64_t s = 0; s < slots; ++s) {
      std::vector<char> data = Pattern(s, kBlock);
      ASSERT_TRUE(f.Write(s, 0, data.data(), kBlock).ok());
    }
    ASSERT_TRUE(f.Sync().ok());
    int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    ASSERT_EQ(engine::CachedPages(fd, 0, slots * kBlock), 0) << "the pages did not leave the page cache";
    close(fd);
  }
  // Reads through `f` into `buf` and compares with what was written there.
  void ReadExact(const DataFile& f, uint64_t slot, uint32_t offset, uint32_t len, char* buf,
                 bool random_access = true) {
    ASSERT_TRUE(f.Read(slot, offset, len, buf, random_access).ok()) << "slot " << slot << " offset " << offset;
    std::vector<char> want = Pattern(slot, kBlock);
    EXPECT_EQ(std::memcmp(buf, want.data() + offset, len), 0) << "slot " << slot << " offset " << offset;
  }

  TempDir dir_;
  const std::string path_ = dir_.path() + "/blocks.dat";
};

TEST_F(PolledReadTest, UncachedSmallReadIsPolledAndExact) {
  DataFile f;
  ASSERT_NO_FATAL_FAILURE(OpenCold(f, 200, 2));
  AlignedBuffer buf(kBlock);
  ReadExact(f, 1, 8192, 4096, buf.p);
  EXPECT_EQ(f.polled_reads(), 1u);
  // A polled read does not fill the page cache, so the same read polls again.
  ReadExact(f, 1, 8192, 16384, buf.p);
  EXPECT_EQ(f.polled_reads(), 2u);
}

TEST_F(PolledReadTest, CachedUnalignedOrLargeReadsStayBuffered) {
  DataFile f;
  ASSERT_NO_FATAL_FAILURE(OpenCold(f, 200, 2));
  AlignedBuffer buf(kBlock + 4096);
  // Not a small scattered read: the buffered descriptor and its readahead.
  ReadExact(f, 0, 0, kBlock, buf.p, false);
  // Now cached: served from the page cache.
  ReadExact(f, 0, 4096, 4096, buf.p);
  // Not 4 KiB-aligned (buffer, then offset): O_DIRECT would refuse it.
  ReadExact(f, 1, 0, 4096, buf.p + 512);
  ReadExact(f, 1, 512, 4096, buf.p);
  EXPECT_EQ(f.polled_reads(), 0u);
  // Freshly written (dirty) pages are read from the cache, not the disk.
  std::vector<char> fresh = Pattern(3, kBlock);
  ASSERT_TRUE(f.Write(3, 0, fresh.data(), kBlock).ok());
  ReadExact(f, 3, 4096, 4096, buf.p);
  EXPECT_EQ(f.polled_reads(), 0u);
}

TEST_F(PolledReadTest, ZeroPollTimeKeepsEveryReadBuffered) {
  DataFile f;
  ASSERT_NO_FATAL_FAILURE(OpenCold(f, 0, 1));
  AlignedBuffer buf(kBlock);
  ReadExact(f, 0, 4096, 4096, buf.p);
  EXPECT_EQ(f.polled_reads(), 0u);
}

// The real calls, except that a polled read comes back short or failing.
class ShortPolledIo final : public ForwardingIo {
 public:
  explicit ShortPolledIo(bool fail) : fail_(fail) {}
  ssize_t PolledPread(int fd, void* buf, size_t len, off_t pos, uint64_t, uint64_t* waited_ns) override {
    *waited_ns = 0;
    ++calls;
    if (fail_) {
      errno = EIO;
      return -1;
    }
    return posix_->Pread(fd, buf, len / 2, pos);
  }
  int calls = 0;

 private:
  const bool fail_;
};

TEST_F(PolledReadTest, ShortOrFailedPolledReadFallsBackToBufferedRead) {
  for (bool fail : {false, true}) {
    SCOPED_TRACE(fail ? "polled read fails" : "polled read comes back short");
    ShortPolledIo io(fail);
    DataFile f;
    f.UseIo(&io);
    ASSERT_NO_FATAL_FAILURE(OpenCold(f, 200, 1));
    AlignedBuffer buf(kBlock);
    ReadExact(f, 0, 4096, 8192, buf.p);
    EXPECT_EQ(io.calls, 1);
    EXPECT_EQ(f.polled_reads(), 0u);
  }
}

}  // namespace
}  // namespace snapdisk::test
