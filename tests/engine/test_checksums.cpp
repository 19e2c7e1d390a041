// Checksums: a flipped byte in the block data is reported as Corruption on
// read (never returned as data) and counted by Check().
//
// The test does not depend on the data file layout: it writes a recognizable
// pattern, closes the store, and searches the store directory's files for the
// pattern's bytes, preferring files that are not RocksDB's own.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>
#include <fstream>
#include <iterator>

#include "test_util.h"

namespace snapdisk::test {
namespace {

namespace fs = std::filesystem;

bool IsRocksDbFile(const fs::path& p) {
  const std::string name = p.filename().string();
  auto ends = [&](std::string_view suf) {
    return name.size() >= suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0;
  };
  return ends(".sst") || ends(".log") || ends(".blob") || name.rfind("MANIFEST-", 0) == 0 ||
         name == "CURRENT" || name == "IDENTITY" || name.rfind("OPTIONS-", 0) == 0 ||
         name == "LOCK" || name.rfind("LOG", 0) == 0;
}

struct Found {
  std::string file;
  uint64_t offset = 0;
};

// Finds `needle` in the files under `dir` (non-RocksDB files first).
std::vector<Found> FindBytes(const std::string& dir, const std::string& needle) {
  std::vector<Found> hits, rocks_hits;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (size_t pos = content.find(needle); pos != std::string::npos;
         pos = content.find(needle, pos + 1)) {
      (IsRocksDbFile(entry.path()) ? rocks_hits : hits).push_back({entry.path().string(), pos});
    }
  }
  hits.insert(hits.end(), rocks_hits.begin(), rocks_hits.end());
  return hits;
}

void FlipByte(const std::string& file, uint64_t offset) {
  int fd = ::open(file.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << file;
  char b = 0;
  ASSERT_EQ(::pread(fd, &b, 1, static_cast<off_t>(offset)), 1);
  b = static_cast<char>(b ^ 0x5a);
  ASSERT_EQ(::pwrite(fd, &b, 1, static_cast<off_t>(offset)), 1);
  ASSERT_EQ(::fsync(fd), 0);
  ::close(fd);
}

class ChecksumTest : public StoreTest {
 protected:
  // Writes two distinct 64 KiB blocks, closes the store, flips one byte in the
  // middle of the stored copy of block 1's piece at `piece_in_block`, and
  // reopens. Returns false (with a test failure) if the data was not found.
  void CorruptBlockOne(NodeId img, uint64_t piece_in_block = 3) {
    store_.reset();
    const uint64_t off = 64 * KiB + piece_in_block * 4096;
    const std::string needle = Pattern(4096, off, 1).substr(1000, 64);
    std::vector<Found> hits = FindBytes(store_path(), needle);
    ASSERT_FALSE(hits.empty()) << "could not find the written data under " << store_path();
    EXPECT_EQ(hits.size(), 1u) << "data stored more than once? first in " << hits[0].file;
    FlipByte(hits[0].file, hits[0].offset + 20);
    OpenStore();
    (void)img;
  }
  NodeId WriteTwoBlocks() {
    NodeId img = MakeImage("a");
    auto h = OpenLive(img);
    EXPECT_OK(WriteStr(h.get(), 0, Pattern(128 * KiB, 0, 1)));
    EXPECT_OK(h->Sync());
    return img;
  }
};

TEST_F(ChecksumTest, FlippedByteIsCorruptionOnRead) {
  NodeId img = WriteTwoBlocks();
  CorruptBlockOne(img);
  if (HasFatalFailure()) return;
  auto h = OpenLive(img);
  std::string got;
  // The damaged piece, alone and as part of a larger read.
  EXPECT_STATUS(kCorruption, ReadStr(h.get(), 64 * KiB + 3 * 4096 + 1000, 100, &got));
  EXPECT_STATUS(kCorruption, ReadStr(h.get(), 0, 128 * KiB, &got));
  // Other data is unaffected: block 0, and the other pieces of block 1.
  ASSERT_OK(ReadStr(h.get(), 0, 64 * KiB, &got));
  EXPECT_BYTES_EQ(got, Pattern(64 * KiB, 0, 1), 0);
  ASSERT_OK(ReadStr(h.get(), 64 * KiB, 3 * 4096, &got));
  EXPECT_BYTES_EQ(got, Pattern(3 * 4096, 64 * KiB, 1), 64 * KiB);
  ASSERT_OK(ReadStr(h.get(), 64 * KiB + 4 * 4096, 4096, &got));
  EXPECT_BYTES_EQ(got, Pattern(4096, 64 * KiB + 4 * 4096, 1), 64 * KiB + 4 * 4096);

  CheckReport report;
  ASSERT_OK(store_->Check(&report, {}));
  EXPECT_GT(report.checksum_errors, 0u);
  EXPECT_FALSE(report.clean());
  EXPECT_FALSE(report.problems.empty());
  EXPECT_GT(report.versions_checked, 0u);
}

TEST_F(ChecksumTest, CleanStoreChecksClean) {
  NodeId img = WriteTwoBlocks();
  Snap(img, "s");
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 4096, Pattern(8192, 4096, 2)));
  }
  CheckReport report;
  uint64_t calls = 0, last_done = 0, last_total = 0;
  ASSERT_OK(store_->Check(&report, [&](uint64_t done, uint64_t total) {
    ++calls;
    last_done = done;
    last_total = total;
  }));
  EXPECT_TRUE(report.clean()) << (report.problems.empty() ? "" : report.problems[0]);
  EXPECT_GE(report.versions_checked, 3u);
  EXPECT_GE(report.bytes_verified, 128 * KiB + 8192);
  EXPECT_GT(calls, 0u);
  EXPECT_EQ(last_done, last_total);
}

// An online check (snapdisk scrub) while the live image is overwritten in
// place: the slot's bytes change before the index has their new checksums,
// which is no damage and must not be reported as such.
TEST_F(ChecksumTest, CheckDuringInPlaceWritesReportsNoDamage) {
  NodeId img = MakeImage("busy.img");
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 0, Pattern(8 * MiB, 0, 1)));
    ASSERT_OK(h->Sync());
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> writes{0};
  std::thread writer([&] {
    auto h = OpenLive(img);
    uint64_t x = 12345;
    while (!stop) {
      x = Mix64(x);
      const uint64_t off = (x % (8 * MiB / 4096)) * 4096;
      if (!WriteStr(h.get(), off, Pattern(4096, off, x)).ok()) return;
      ++writes;
    }
  });
  for (int round = 0; round < 5; ++round) {
    CheckReport report;
    ASSERT_OK(store_->Check(&report, {}));
    EXPECT_TRUE(report.clean()) << "round " << round << ": " << report.checksum_errors << " checksum errors, first: "
                                << (report.problems.empty() ? "" : report.problems[0]);
  }
  stop = true;
  writer.join();
  EXPECT_GT(writes.load(), 0u);
}

TEST_F(ChecksumTest, CorruptionSeenThroughSnapshotAndClone) {
  NodeId img = WriteTwoBlocks();
  SnapshotInfo s = Snap(img, "s");
  NodeId c = MakeImage("c");
  ASSERT_OK(store_->CloneImage(img, s.id, c));
  CorruptBlockOne(img);
  if (HasFatalFailure()) return;
  std::string got;
  auto sh = OpenSnap(img, s.id);
  EXPECT_STATUS(kCorruption, ReadStr(sh.get(), 64 * KiB, 64 * KiB, &got));
  auto ch = OpenLive(c);
  EXPECT_STATUS(kCorruption, ReadStr(ch.get(), 64 * KiB, 64 * KiB, &got));
  // Overwriting the damaged piece in the clone heals the clone only.
  ASSERT_OK(WriteStr(ch.get(), 64 * KiB + 3 * 4096, Pattern(4096, 0, 9)));
  ASSERT_OK(ReadStr(ch.get(), 64 * KiB, 64 * KiB, &got));
  EXPECT_STATUS(kCorruption, ReadStr(sh.get(), 64 * KiB, 64 * KiB, &got));
}

TEST_F(ChecksumTest, PartialPieceWriteOverCorruptPieceIsNotSilentlyMerged) {
  // A sub-4 KiB write must merge with the old piece's bytes; if those are
  // damaged the engine must refuse (or replace the whole piece), never
  // checksum the damaged bytes as if they were good.
  NodeId img = WriteTwoBlocks();
  CorruptBlockOne(img);
  if (HasFatalFailure()) return;
  auto h = OpenLive(img);
  Status w = WriteStr(h.get(), 64 * KiB + 3 * 4096, "x");
  std::string got;
  Status r = ReadStr(h.get(), 64 * KiB + 3 * 4096, 4096, &got);
  if (w.ok() && r.ok()) {
    std::string want = Pattern(4096, 64 * KiB + 3 * 4096, 1);
    want[0] = 'x';
    EXPECT_BYTES_EQ(got, want, 64 * KiB + 3 * 4096);
  } else {
    EXPECT_TRUE(w.Is(Status::Code::kCorruption) || r.Is(Status::Code::kCorruption))
        << w.ToString() << " / " << r.ToString();
  }
}

}  // namespace
}  // namespace snapdisk::test
