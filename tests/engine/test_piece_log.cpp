// The piece log (engine/piece_log.h): versions first written by less than a
// whole block keep their pieces in data/pieces.dat, one 4 KiB unit each,
// handed out in ascending order; whole-block writes keep using slots of
// data/blocks.dat. These tests look at the two files themselves, because
// where the bytes land is the point (adjacent units are what keeps 4 KiB
// writes after a snapshot fast on ext4).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "index_db.h"
#include "keys.h"
#include "records.h"
#include "test_util.h"

namespace snapdisk::test {
namespace {

struct FileUse {
  uint64_t size = 0;       // st_size
  uint64_t allocated = 0;  // st_blocks * 512
};

class PieceLogTest : public StoreTest {
 protected:
  FileUse Use(const std::string& name) {
    struct stat st {};
    EXPECT_EQ(::stat((store_path() + "/data/" + name).c_str(), &st), 0) << name << ": " << std::strerror(errno);
    return {static_cast<uint64_t>(st.st_size), static_cast<uint64_t>(st.st_blocks) * 512};
  }
  FileUse Log() { return Use("pieces.dat"); }
  FileUse Blocks() { return Use("blocks.dat"); }
  void ExpectCheckClean() {
    CheckReport report;
    ASSERT_OK(store_->Check(&report, nullptr));
    EXPECT_TRUE(report.clean()) << (report.problems.empty() ? "" : report.problems[0]);
  }
  // The 4 KiB piece at `off` of the live image or a snapshot.
  std::string Piece(NodeId img, uint64_t off, SnapshotId snap = kLive) {
    std::unique_ptr<ImageHandle> h;
    EXPECT_OK(store_->OpenImage(img, snap, false, &h));
    std::string got;
    if (h) {
      EXPECT_OK(ReadStr(h.get(), off, 4096, &got));
    }
    return got;
  }
};

TEST_F(PieceLogTest, SmallWritesAfterSnapshotLandInTheLogInWriteOrder) {
  constexpr uint64_t kImage = 4 * MiB, kBlock = 64 * KiB;
  constexpr int kWrites = 48;
  NodeId img = MakeImage("vm.img");
  auto h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), 0, Pattern(kImage, 0, 1)));
  ASSERT_OK(h->Sync());
  const FileUse blocks0 = Blocks();
  EXPECT_EQ(blocks0.allocated, kImage) << "whole-block writes belong in blocks.dat";
  EXPECT_EQ(Log().allocated, 0u);
  const SnapshotInfo s = Snap(img, "before");

  // 4 KiB writes in random order over distinct pieces, two per block on
  // average: a block's second piece must go to the log too, next to the
  // pieces written just before it (not into a hole of some slot).
  std::mt19937_64 rng(11);
  std::vector<uint64_t> pieces(kImage / 4096);
  for (size_t i = 0; i < pieces.size(); ++i) pieces[i] = i * 4096;
  std::shuffle(pieces.begin(), pieces.end(), rng);
  const uint64_t more = pieces[kWrites];  // written after the reopen below
  pieces.resize(kWrites);
  for (uint64_t off : pieces) ASSERT_OK(WriteStr(h.get(), off, Pattern(4096, off, 2)));
  ASSERT_OK(h->Sync());

  EXPECT_EQ(Log().size, kWrites * 4096u) << "units must be handed out in order, with no gaps";
  EXPECT_EQ(Log().allocated, kWrites * 4096u);
  EXPECT_EQ(Blocks().allocated, blocks0.allocated) << "a 4 KiB write after a snapshot touched blocks.dat";
  for (uint64_t off : pieces) {
    ASSERT_TRUE(BytesEq(Piece(img, off), Pattern(4096, off, 2), off));
    ASSERT_TRUE(BytesEq(Piece(img, off, s.id), Pattern(4096, off, 1), off)) << "the snapshot changed";
  }
  // The pieces nobody rewrote still read through to the older slots.
  const uint64_t untouched = (kImage - kBlock) + 4096 * 7;
  if (std::find(pieces.begin(), pieces.end(), untouched) == pieces.end()) {
    EXPECT_TRUE(BytesEq(Piece(img, untouched), Pattern(4096, untouched, 1), untouched));
  }

  // After a reopen the units in use stay taken: new pieces go after them.
  h.reset();
  Reopen();
  h = OpenLive(img);
  EXPECT_TRUE(BytesEq(ReadAll(img, s.id), Pattern(kImage, 0, 1), 0));
  ASSERT_OK(WriteStr(h.get(), more, Pattern(4096, more, 3)));
  ASSERT_OK(h->Sync());
  EXPECT_EQ(Log().size, (kWrites + 1) * 4096u) << "the first free unit after a reopen is the one after the last used";
  EXPECT_TRUE(BytesEq(Piece(img, more), Pattern(4096, more, 3), more));
  for (uint64_t off : pieces) ASSERT_TRUE(BytesEq(Piece(img, off), Pattern(4096, off, 2), off));

  ExpectCheckClean();
}

TEST_F(PieceLogTest, OverwriteStaysInItsUnitAndZerosPunchIt) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  constexpr uint64_t kOff = 5 * 64 * KiB + 3 * 4096;
  ASSERT_OK(WriteStr(h.get(), kOff, Pattern(4096, kOff, 1)));
  ASSERT_OK(h->Sync());
  EXPECT_EQ(Log().size, 4096u);
  EXPECT_EQ(Blocks().allocated, 0u) << "a 4 KiB write into a fresh block belongs in the log";

  // In place: the same unit, no growth. Unaligned too.
  ASSERT_OK(WriteStr(h.get(), kOff, Pattern(4096, kOff, 2)));
  ASSERT_OK(WriteStr(h.get(), kOff + 100, Pattern(200, kOff + 100, 3)));
  ASSERT_OK(h->Sync());
  std::string want = Pattern(4096, kOff, 2);
  want.replace(100, 200, Pattern(200, kOff + 100, 3));
  EXPECT_TRUE(BytesEq(Piece(img, kOff), want, kOff));
  EXPECT_EQ(Log().size, 4096u);

  // Zeros punch the piece out; writing again reuses the version's unit.
  ASSERT_OK(WriteStr(h.get(), kOff, Zeros(4096)));
  ASSERT_OK(h->Sync());
  EXPECT_EQ(Log().allocated, 0u) << "a piece written with zeros must give its disk space back";
  EXPECT_TRUE(BytesEq(Piece(img, kOff), Zeros(4096), kOff));
  ASSERT_OK(WriteStr(h.get(), kOff, Pattern(4096, kOff, 4)));
  ASSERT_OK(h->Sync());
  EXPECT_EQ(Log().size, 4096u);
  h.reset();
  Reopen();
  EXPECT_TRUE(BytesEq(Piece(img, kOff), Pattern(4096, kOff, 4), kOff));
}

// A block first written by small writes and then rewritten whole (a restore,
// a copy, a sequential rewrite) moves to a slot, so it reads back in one
// request. Its units are not reused until a sync has made the record that
// no longer names them durable: until then a crash could bring back the old
// record, and its data must still be there.
TEST_F(PieceLogTest, WholeBlockRewriteMovesToASlotAndFreesUnitsOnlyAfterASync) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  constexpr uint64_t kBlock3 = 3 * 64 * KiB;
  ASSERT_OK(WriteStr(h.get(), kBlock3 + 5 * 4096, Pattern(4096, 1, 1)));
  ASSERT_OK(WriteStr(h.get(), kBlock3 + 9 * 4096, Pattern(4096, 2, 1)));
  ASSERT_OK(h->Sync());
  EXPECT_EQ(Log().allocated, 2 * 4096u);

  ASSERT_OK(WriteStr(h.get(), kBlock3, Pattern(64 * KiB, kBlock3, 2)));
  EXPECT_EQ(Blocks().allocated, 64 * KiB) << "the rewritten block did not move to a slot";
  // Not synced yet: units 0 and 1 stay taken, a new piece gets unit 2.
  ASSERT_OK(WriteStr(h.get(), 7 * 64 * KiB, Pattern(4096, 3, 3)));
  EXPECT_EQ(Log().size, 3 * 4096u) << "a retired unit was reused before the sync";
  EXPECT_TRUE(BytesEq(Piece(img, kBlock3 + 5 * 4096), Pattern(64 * KiB, kBlock3, 2).substr(5 * 4096, 4096), 0));

  ASSERT_OK(h->Sync());
  EXPECT_EQ(Log().allocated, 4096u) << "the sync did not give the retired units back";
  ASSERT_OK(WriteStr(h.get(), 9 * 64 * KiB, Pattern(4096, 4, 4)));
  ASSERT_OK(WriteStr(h.get(), 11 * 64 * KiB, Pattern(4096, 5, 5)));
  EXPECT_EQ(Log().size, 3 * 4096u) << "the freed units were not handed out again";

  h.reset();
  Reopen();
  EXPECT_TRUE(BytesEq(ReadAll(img).substr(kBlock3, 64 * KiB), Pattern(64 * KiB, kBlock3, 2), kBlock3));
  EXPECT_TRUE(BytesEq(Piece(img, 7 * 64 * KiB), Pattern(4096, 3, 3), 0));
  EXPECT_TRUE(BytesEq(Piece(img, 9 * 64 * KiB), Pattern(4096, 4, 4), 0));
  EXPECT_TRUE(BytesEq(Piece(img, 11 * 64 * KiB), Pattern(4096, 5, 5), 0));
  ExpectCheckClean();
}

// Units retired by a rewrite and never released by a sync must not outlive
// the image: removing it and collecting gives everything back.
TEST_F(PieceLogTest, RemovingAnImageFreesUnitsItsRewritesRetired) {
  NodeId img = MakeImage("a.img");
  {
    auto h = OpenLive(img);
    for (uint64_t b = 0; b < 8; ++b) ASSERT_OK(WriteStr(h.get(), b * 64 * KiB + 4096, Pattern(4096, b, 1)));
    ASSERT_OK(h->Sync());
    for (uint64_t b = 0; b < 8; ++b) ASSERT_OK(WriteStr(h.get(), b * 64 * KiB, Pattern(64 * KiB, b, 2)));
  }
  EXPECT_EQ(Log().allocated, 8 * 4096u);
  ASSERT_OK(store_->RemoveImage(kRootNode, "a.img", true));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(Log().allocated, 0u) << "units retired by the rewrite leaked";
  EXPECT_EQ(Blocks().allocated, 0u);
}

TEST_F(PieceLogTest, ReclaimedVersionsGiveTheirUnitsBack) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  for (uint64_t b = 0; b < 32; ++b) ASSERT_OK(WriteStr(h.get(), b * 64 * KiB + 8192, Pattern(8192, b, 1)));
  (void)Snap(img, "s1");
  for (uint64_t b = 0; b < 32; ++b) ASSERT_OK(WriteStr(h.get(), b * 64 * KiB + 8192, Pattern(8192, b, 2)));
  ASSERT_OK(h->Sync());
  EXPECT_EQ(Log().allocated, 32 * 4 * 4096u);

  // Deleting the snapshot frees what only it held: its versions' units.
  ASSERT_OK(store_->DeleteSnapshot(img, "s1"));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(Log().allocated, 32 * 2 * 4096u) << "the deleted snapshot's pieces are still stored";
  for (uint64_t b = 0; b < 32; ++b) {
    std::unique_ptr<ImageHandle> r;
    ASSERT_OK(store_->OpenImage(img, kLive, false, &r));
    std::string got;
    ASSERT_OK(ReadStr(r.get(), b * 64 * KiB + 8192, 8192, &got));
    ASSERT_TRUE(BytesEq(got, Pattern(8192, b, 2), b * 64 * KiB + 8192));
  }
  // Freed units are handed out again, lowest first.
  const uint64_t size_before = Log().size;
  for (uint64_t b = 100; b < 164; ++b) ASSERT_OK(WriteStr(h.get(), b * 64 * KiB, Pattern(4096, b, 3)));
  ASSERT_OK(h->Sync());
  EXPECT_EQ(Log().size, size_before) << "free units were not reused";

  h.reset();
  ASSERT_OK(store_->RemoveImage(kRootNode, "a.img", true));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(Log().allocated, 0u) << "a removed image's pieces are still stored";
}

TEST_F(PieceLogTest, DamagedPieceInTheLogIsReportedNotReturned) {
  NodeId img = MakeImage("a.img");
  constexpr uint64_t kOff = 2 * 64 * KiB + 4096;
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), kOff, Pattern(4096, kOff, 1)));
    ASSERT_OK(h->Sync());
  }
  store_.reset();
  const std::string log = store_path() + "/data/pieces.dat";
  int fd = ::open(log.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << log << ": " << std::strerror(errno);
  char b = 0;
  ASSERT_EQ(::pread(fd, &b, 1, 1234), 1);
  EXPECT_EQ(b, Pattern(4096, kOff, 1)[1234]) << "the piece is not at the log's first unit";
  b = static_cast<char>(b ^ 0x5a);
  ASSERT_EQ(::pwrite(fd, &b, 1, 1234), 1);
  ::close(fd);
  OpenStore();

  std::unique_ptr<ImageHandle> h;
  ASSERT_OK(store_->OpenImage(img, kLive, false, &h));
  std::string got;
  Status s = ReadStr(h.get(), kOff, 4096, &got);
  EXPECT_EQ(s.code(), Status::Code::kCorruption) << s.ToString();
  EXPECT_NE(s.ToString().find("piece log unit 0"), std::string::npos) << s.ToString();
  CheckReport report;
  ASSERT_OK(store_->Check(&report, nullptr));
  EXPECT_EQ(report.checksum_errors, 1u);
  ASSERT_FALSE(report.problems.empty());
  EXPECT_NE(report.problems[0].find("piece log unit 0"), std::string::npos) << report.problems[0];
}

// Stores made before the piece log (format version 1) open, keep their data,
// take piece log writes, and say version 2 from then on; a version this
// build does not know is refused with a message, not misread.
TEST_F(PieceLogTest, FormatVersion1StoreIsUpgradedAndAnUnknownVersionRefused) {
  NodeId img = MakeImage("old.img");
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 1)));
  }
  auto set_version = [&](uint32_t version) {
    engine::IndexDb index;
    ASSERT_OK(index.Open(store_path() + "/db", TestOptions(), false));
    std::string value;
    ASSERT_TRUE(index.db->Get(rocksdb::ReadOptions(), index.meta, std::string(snapdisk::keys::kFormatKey), &value).ok());
    // Decode refuses unknown versions, so patch the encoded field: magic (8), then version (4).
    ASSERT_GE(value.size(), 12u);
    std::memcpy(value.data() + 8, &version, 4);
    ASSERT_TRUE(index.db->Put(rocksdb::WriteOptions(), index.meta, std::string(snapdisk::keys::kFormatKey), value).ok());
    ASSERT_OK(index.Close());
  };
  auto version = [&] {
    engine::IndexDb index;
    EXPECT_OK(index.Open(store_path() + "/db", TestOptions(), false));
    std::string value;
    EXPECT_TRUE(index.db->Get(rocksdb::ReadOptions(), index.meta, std::string(snapdisk::keys::kFormatKey), &value).ok());
    engine::FormatRecord f;
    EXPECT_OK(engine::FormatRecord::Decode(value, &f));
    EXPECT_OK(index.Close());
    return f.version;
  };
  store_.reset();
  set_version(1);
  EXPECT_EQ(version(), 1u);
  OpenStore();
  store_.reset();
  EXPECT_EQ(version(), engine::kFormatVersion);
  OpenStore();
  EXPECT_TRUE(BytesEq(ReadAll(img), Pattern(MiB, 0, 1), 0));
  (void)Snap(img, "s");
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 4096, Pattern(4096, 4096, 2)));
  }
  EXPECT_EQ(Log().size, 4096u);

  store_.reset();
  set_version(engine::kFormatVersion + 1);
  std::unique_ptr<Store> s;
  Status st = Store::Open(TestOptions(), store_path(), &s);
  EXPECT_EQ(st.code(), Status::Code::kCorruption) << st.ToString();
  EXPECT_NE(st.ToString().find("is not supported by this build"), std::string::npos) << st.ToString();
  s.reset();
  set_version(engine::kFormatVersion);
  OpenStore();
  std::string want = Pattern(MiB, 0, 1);
  want.replace(4096, 4096, Pattern(4096, 4096, 2));
  EXPECT_TRUE(BytesEq(ReadAll(img), want, 0));
}

}  // namespace
}  // namespace snapdisk::test
