// Fault injection: ENOSPC, EIO, short writes and lost unsynced data under the
// index and the data file (engine/fault_injection.h), through the public
// Store / ImageHandle API. Each test checks that the failing call returns a
// clean Status, that synced data survives byte for byte, that a failed sync
// makes the store refuse writes, and that once the fault is gone the store
// (reopened, or the same one where the engine can recover in place) works and
// Check() finds nothing wrong.
#include <cerrno>
#include <chrono>
#include <functional>
#include <thread>

#include "fault_injection.h"
#include "test_util.h"

namespace snapdisk::test {
namespace {

using engine::DropMode;
using engine::FaultHooks;
using engine::FaultOp;

constexpr uint64_t kPiece = 4 * KiB;

class FaultTest : public StoreTest {
 protected:
  ~FaultTest() override { store_.reset(); }  // before hooks_
  void SetUp() override { OpenFaulty(); }

  void OpenFaulty() {
    store_.reset();
    Status s = engine::OpenStoreWithIo(TestOptions(block_size_), store_path(), &hooks_, &store_);
    ASSERT_TRUE(s.ok()) << "OpenStoreWithIo -> " << s.ToString();
  }
  void ReopenFaulty() {
    store_.reset();
    OpenFaulty();
  }
  // The machine dies: nothing more reaches the disk, unsynced data is lost
  // as `mode` says, then the store is opened again with no faults.
  void CrashAndReopen(DropMode mode, uint64_t seed = 1) {
    hooks_.Crash();
    store_.reset();
    hooks_.DropUnsyncedData(mode, seed);
    hooks_.Restart();
    OpenFaulty();
  }
  // An image sync that must not need the index log's sync (only in-place
  // overwrites since the last one that did).
  void SyncSkippingTheIndexLog(ImageHandle* h) {
    const uint64_t log_syncs = hooks_.Calls(FaultOp::kWalSync);
    ASSERT_OK(h->Sync());
    ASSERT_EQ(hooks_.Calls(FaultOp::kWalSync), log_syncs) << "the index log was synced";
  }
  // After an index write failed, RocksDB may still be recovering for a
  // moment: retries the sync until it succeeds or 30 s have passed, and
  // returns the last result.
  Status SyncOnceTheIndexResumes(ImageHandle* h) {
    Status synced;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!(synced = h->Sync()).ok() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return synced;
  }
  void ExpectClean() {
    CheckReport report;
    ASSERT_OK(store_->Check(&report, {}));
    std::string problems;
    for (const std::string& p : report.problems) problems += "\n  " + p;
    EXPECT_TRUE(report.clean()) << report.checksum_errors << " checksum errors, "
                                << report.index_errors << " index errors:" << problems;
  }
  // Every 4 KiB piece of [0, size) of the image reads without error and
  // equals the same piece of `old_content` or of `new_content` (bytes past a
  // string's end are zeros).
  // torn_ok: a piece may also mix old and new bytes (a write that failed
  // part-way through a piece in place), as long as every byte is one of them.
  void ExpectEachPieceOldOrNew(NodeId img, const std::string& old_content,
                               const std::string& new_content, bool torn_ok = false) {
    std::unique_ptr<ImageHandle> h;
    ASSERT_OK(store_->OpenImage(img, kLive, false, &h));
    const uint64_t size = h->Size();
    EXPECT_TRUE(size == old_content.size() || size == new_content.size()) << "size " << size;
    auto piece_of = [](const std::string& s, uint64_t off, size_t n) {
      std::string p = off < s.size() ? s.substr(off, n) : std::string();
      p.resize(n, '\0');
      return p;
    };
    int bad = 0;
    for (uint64_t off = 0; off < size && bad < 5; off += kPiece) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kPiece, size - off));
      std::string got;
      Status s = ReadStr(h.get(), off, n, &got);
      if (!s.ok()) {
        ADD_FAILURE() << "read of piece at " << off << " -> " << s.ToString();
        ++bad;
        continue;
      }
      const std::string o = piece_of(old_content, off, n), w = piece_of(new_content, off, n);
      bool mixed = torn_ok;
      for (size_t i = 0; mixed && i < n; ++i) mixed = got[i] == o[i] || got[i] == w[i];
      if (got != o && got != w && !mixed) {
        ADD_FAILURE() << "piece at " << off << " is neither the old nor the new data";
        ++bad;
      }
    }
  }

  FaultHooks hooks_;
};

// ENOSPC from pwrite part-way through a multi-block write: the write fails
// with NoSpace, synced data reads intact, and the same open store takes the
// write once space returns.
TEST_F(FaultTest, DataWriteNoSpace) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  const std::string a = Pattern(MiB, 0, 1), b = Pattern(MiB, MiB, 2);
  ASSERT_OK(WriteStr(h.get(), 0, a));
  ASSERT_OK(h->Sync());

  hooks_.Fail(FaultOp::kDataWrite, ENOSPC, /*skip=*/3);  // the 4th block of the write
  EXPECT_STATUS(kNoSpace, WriteStr(h.get(), MiB, b));
  EXPECT_STATUS(kNoSpace, WriteStr(h.get(), 3 * MiB, b));
  EXPECT_EQ(hooks_.Injected(FaultOp::kDataWrite), 2u);
  std::string got;
  ASSERT_OK(ReadStr(h.get(), 0, MiB, &got));
  EXPECT_BYTES_EQ(got, a, 0);
  ASSERT_OK(h->Sync());  // nothing is broken, only full

  hooks_.Clear(FaultOp::kDataWrite);  // space returns
  ASSERT_OK(WriteStr(h.get(), MiB, b));
  ASSERT_OK(h->Sync());
  EXPECT_BYTES_EQ(ReadAll(img), a + b, 0);
  ExpectClean();
  h.reset();
  ReopenFaulty();
  EXPECT_BYTES_EQ(ReadAll(img), a + b, 0);
  ExpectClean();
}

// The realistic shape of a full file system: a short write, then ENOSPC.
TEST_F(FaultTest, ShortWriteThenNoSpace) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  const std::string a = Pattern(256 * KiB, 0, 1), b = Pattern(256 * KiB, 256 * KiB, 2);
  ASSERT_OK(WriteStr(h.get(), 0, a));
  ASSERT_OK(h->Sync());
  hooks_.ShortWrites(5000);
  hooks_.Fail(FaultOp::kDataWrite, ENOSPC, /*skip=*/1);
  EXPECT_STATUS(kNoSpace, WriteStr(h.get(), 256 * KiB, b));
  hooks_.ClearAll();
  ASSERT_OK(WriteStr(h.get(), 256 * KiB, b));
  ASSERT_OK(h->Sync());
  h.reset();
  ReopenFaulty();
  EXPECT_BYTES_EQ(ReadAll(img), a + b, 0);
  ExpectClean();
}

// ENOSPC from RocksDB (the write-ahead log cannot grow): writes and metadata
// changes fail with NoSpace; once space returns the same store resumes its
// index (DB::Resume) and takes them.
TEST_F(FaultTest, IndexWriteNoSpace) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  const std::string a = Pattern(MiB, 0, 1), b = Pattern(MiB, MiB, 2);
  ASSERT_OK(WriteStr(h.get(), 0, a));
  ASSERT_OK(h->Sync());

  hooks_.Fail(FaultOp::kIndexWrite, ENOSPC);
  EXPECT_STATUS(kNoSpace, WriteStr(h.get(), MiB, b));
  // While RocksDB's own recovery from the error is in progress, its
  // DB::Resume answers Busy; the engine reports the error that stopped the
  // index instead (ENOSPC, not EBUSY). Either way the call fails cleanly.
  SnapshotInfo info;
  Status snap = store_->CreateSnapshot(img, "s", &info);
  EXPECT_TRUE(snap.Is(Status::Code::kNoSpace) || snap.Is(Status::Code::kBusy)) << snap.ToString();
  std::string got;
  ASSERT_OK(ReadStr(h.get(), 0, MiB, &got));
  EXPECT_BYTES_EQ(got, a, 0);

  hooks_.Clear(FaultOp::kIndexWrite);  // space returns
  // The engine resumes the index on the next write; RocksDB may still be
  // recovering in the background for a few seconds.
  Status w;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!(w = WriteStr(h.get(), MiB, b)).ok() && std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(w.Is(Status::Code::kBusy) || w.Is(Status::Code::kNoSpace)) << w.ToString();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_OK(w);
  // Writes need no index until the sync; it may find RocksDB still recovering.
  while (!(w = h->Sync()).ok() && std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(w.Is(Status::Code::kBusy) || w.Is(Status::Code::kNoSpace)) << w.ToString();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_OK(w);
  info = Snap(img, "s");
  EXPECT_BYTES_EQ(ReadAll(img), a + b, 0);
  ExpectClean();
  h.reset();
  ReopenFaulty();
  EXPECT_BYTES_EQ(ReadAll(img), a + b, 0);
  EXPECT_BYTES_EQ(ReadAll(img, info.id), a + b, 0);
  ExpectClean();
}

// One EIO from pwrite: that write fails with IOError, the next one works.
TEST_F(FaultTest, DataWriteIoError) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  const std::string a = Pattern(MiB, 0, 1), b = Pattern(MiB, MiB, 2);
  ASSERT_OK(WriteStr(h.get(), 0, a));
  ASSERT_OK(h->Sync());
  hooks_.Fail(FaultOp::kDataWrite, EIO, /*skip=*/0, /*times=*/1);
  EXPECT_STATUS(kIOError, WriteStr(h.get(), MiB, b));
  ASSERT_OK(WriteStr(h.get(), MiB, b));
  ASSERT_OK(h->Sync());
  ExpectClean();
  h.reset();
  ReopenFaulty();
  EXPECT_BYTES_EQ(ReadAll(img), a + b, 0);
  ExpectClean();
}

// EIO part-way through an in-place overwrite (some bytes of a piece that
// holds synced data were replaced before the error). The write fails; each
// piece then reads as the old or the new data (the piece the short write
// tore, as a mix of the two), never as a checksum error: the engine records
// the checksums of what reached the slot.
TEST_F(FaultTest, DataWriteIoErrorInPlace) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  const std::string a = Pattern(128 * KiB, 0, 1), b = Pattern(128 * KiB, 0, 2);
  ASSERT_OK(WriteStr(h.get(), 0, a));
  ASSERT_OK(h->Sync());
  hooks_.ShortWrites(6000);
  hooks_.Fail(FaultOp::kDataWrite, EIO, /*skip=*/1, /*times=*/1);
  EXPECT_STATUS(kIOError, WriteStr(h.get(), 0, b));
  hooks_.ClearAll();
  ExpectEachPieceOldOrNew(img, a, b, /*torn_ok=*/true);
  ExpectClean();
  h.reset();
  ReopenFaulty();
  ExpectEachPieceOldOrNew(img, a, b, /*torn_ok=*/true);
  ExpectClean();
}

// A failed write into a version the live cache holds leaves that version
// as it was. Here the version has no slot yet (a zero write after a
// snapshot only hides the older data): the failed write's slot must not
// stay named by it, or the next new version, given the same lowest free
// slot, would share it.
TEST_F(FaultTest, FailedWriteIntoACachedVersionKeepsItsSlotless) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  const std::string a = Pattern(256 * KiB, 0, 1);
  ASSERT_OK(WriteStr(h.get(), 0, a));
  ASSERT_OK(h->Sync());
  Snap(img, "s");
  ASSERT_OK(WriteStr(h.get(), 0, Zeros(kPiece)));  // slotless version of block 0
  hooks_.Fail(FaultOp::kDataWrite, ENOSPC, /*skip=*/0, /*times=*/1);
  EXPECT_STATUS(kNoSpace, WriteStr(h.get(), kPiece, Pattern(kPiece, kPiece, 2)));
  hooks_.ClearAll();
  const std::string c = Pattern(kPiece, MiB, 3);
  ASSERT_OK(WriteStr(h.get(), MiB, c));  // a new version: the lowest free slot
  ASSERT_OK(h->Sync());
  ExpectClean();
  EXPECT_BYTES_EQ(ReadAll(img), Zeros(kPiece) + a.substr(kPiece) + Zeros(MiB - a.size()) + c, 0);
}

// Short writes (1000 bytes a call, unaligned) are continued, not mistaken for
// errors; a pwrite that makes no progress fails cleanly instead of spinning.
TEST_F(FaultTest, ShortDataWrites) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  const std::string a = Pattern(3 * MiB + 17, 12345, 1);
  hooks_.ShortWrites(1000);
  ASSERT_OK(WriteStr(h.get(), 12345, a));
  ASSERT_OK(h->Sync());
  hooks_.ShortWrites(0);
  EXPECT_STATUS(kIOError, WriteStr(h.get(), 8 * MiB, Pattern(kPiece, 8 * MiB, 3)));
  hooks_.NoShortWrites();
  h.reset();
  ReopenFaulty();
  EXPECT_BYTES_EQ(ReadAll(img), Zeros(12345) + a, 0);
  ExpectClean();
}

// fdatasync of the data file fails: Sync reports IOError, the store refuses
// writes from then on (ReadOnly) rather than pretending; after a reopen the
// synced data is intact, the unsynced data reads old or new, and writes work.
TEST_F(FaultTest, DataSyncIoError) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  const std::string a = Pattern(2 * MiB, 0, 1);
  ASSERT_OK(WriteStr(h.get(), 0, a));
  ASSERT_OK(h->Sync());
  std::string after = a;
  const std::string b = Pattern(MiB, MiB / 2, 2);  // in place over A, and past its end
  ASSERT_OK(WriteStr(h.get(), MiB / 2 + 3 * MiB / 2 - MiB, b));
  after.replace(MiB / 2 + 3 * MiB / 2 - MiB, b.size(), b);

  hooks_.Fail(FaultOp::kDataSync, EIO);
  EXPECT_STATUS(kIOError, h->Sync());
  EXPECT_STATUS(kReadOnly, WriteStr(h.get(), 0, "x"));
  EXPECT_STATUS(kReadOnly, h->Sync());
  EXPECT_STATUS(kReadOnly, store_->SyncAll());
  std::string got;
  ASSERT_OK(ReadStr(h.get(), 0, MiB / 2, &got));
  EXPECT_BYTES_EQ(got, a.substr(0, MiB / 2), 0);

  hooks_.ClearAll();
  h.reset();
  ReopenFaulty();
  ExpectEachPieceOldOrNew(img, a, after);
  std::string head;
  {
    auto r = OpenLive(img);
    ASSERT_OK(ReadStr(r.get(), 0, MiB / 2, &head));
    EXPECT_BYTES_EQ(head, a.substr(0, MiB / 2), 0);
    ASSERT_OK(WriteStr(r.get(), 4 * MiB, "written after the reopen"));
    ASSERT_OK(r->Sync());
  }
  ExpectClean();
}

// The write-ahead log's sync fails once. The engine must not pretend: either
// it refuses writes (ReadOnly), or whatever a later successful Sync
// acknowledges really survives a machine crash.
TEST_F(FaultTest, WalSyncIoError) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  const std::string a = Pattern(MiB, 0, 1), b = Pattern(MiB, MiB, 2), c = Pattern(MiB, 2 * MiB, 3);
  ASSERT_OK(WriteStr(h.get(), 0, a));
  ASSERT_OK(h->Sync());
  ASSERT_OK(WriteStr(h.get(), MiB, b));
  hooks_.Fail(FaultOp::kWalSync, EIO, /*skip=*/0, /*times=*/1);
  EXPECT_STATUS(kIOError, h->Sync());
  EXPECT_EQ(hooks_.Injected(FaultOp::kWalSync), 1u);

  Status w = WriteStr(h.get(), 2 * MiB, c);
  if (w.ok()) {
    Status s = h->Sync();
    if (s.ok()) {
      // Acknowledged: B and C must survive losing everything unsynced.
      h.reset();
      CrashAndReopen(DropMode::kAll);
      EXPECT_BYTES_EQ(ReadAll(img), a + b + c, 0) << "a Sync after a failed log sync returned OK";
      ExpectClean();
      return;
    }
  }
  // RocksDB stops the index on a failed log sync and DB::Resume cannot
  // restart it: the engine reports IOError (EIO) rather than ReadOnly.
  EXPECT_TRUE(w.Is(Status::Code::kReadOnly) || w.Is(Status::Code::kIOError)) << w.ToString();
  EXPECT_FALSE(h->Sync().ok());
  hooks_.ClearAll();
  h.reset();
  ReopenFaulty();
  std::string got;
  {
    auto r = OpenLive(img);
    ASSERT_OK(ReadStr(r.get(), 0, MiB, &got));
    EXPECT_BYTES_EQ(got, a, 0);
  }
  ExpectClean();
}

// Pending records reach the index in RocksDB writes of at most 32 records
// (block_io.cpp, kRecordsPerIndexWrite: snapshots under a write load were
// faster than with one write per flush). A failure part-way through leaves
// some of a flush in the index and all of it pending: the next sync writes
// the rest, and nothing is lost across a crash.
TEST_F(FaultTest, PendingRecordsReachTheIndexInSmallWrites) {
  Options no_flusher = TestOptions(block_size_);
  no_flusher.background_flush = false;  // the syncs below flush every record
  store_.reset();
  ASSERT_OK(engine::OpenStoreWithIo(no_flusher, store_path(), &hooks_, &store_));
  constexpr uint64_t kBlocks = 640;  // one new record each
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  std::string v(kBlocks * block_size_, '\0');
  auto write_pieces = [&](uint64_t in_block, uint64_t seed) {
    for (uint64_t b = 0; b < kBlocks; ++b) {
      const uint64_t off = b * block_size_ + in_block;
      const std::string d = Pattern(kPiece, off, seed + b);
      ASSERT_OK(WriteStr(h.get(), off, d));
      v.replace(off, d.size(), d);
    }
  };
  {  // the image's size first (one growth), then a piece at the start of every block
    const std::string last = Pattern(kPiece, v.size() - kPiece, 1);
    ASSERT_OK(WriteStr(h.get(), v.size() - kPiece, last));
    v.replace(v.size() - kPiece, kPiece, last);
  }
  write_pieces(0, 1000);
  const uint64_t appends = hooks_.Calls(FaultOp::kWalWrite);
  ASSERT_OK(h->Sync());
  EXPECT_GE(hooks_.Calls(FaultOp::kWalWrite) - appends, kBlocks / 32)
      << "640 pending records reached the index log in fewer writes than 32 records each allow";

  write_pieces(kPiece, 5000);  // in place: 640 changed records
  // The fifth of the flush's 20 writes fails (each made one log append above).
  hooks_.Fail(FaultOp::kWalWrite, ENOSPC, /*skip=*/4);
  EXPECT_STATUS(kNoSpace, h->Sync());
  EXPECT_GT(hooks_.Injected(FaultOp::kWalWrite), 0u);
  hooks_.ClearAll();
  ASSERT_OK(SyncOnceTheIndexResumes(h.get()));
  h.reset();
  CrashAndReopen(DropMode::kAll);
  EXPECT_BYTES_EQ(ReadAll(img), v, 0);
  ExpectClean();
}

// A snapshot whose index commit fails after it sealed the live generation's
// unindexed records: they go back to the live image, and writes on top of
// them (partial pieces, which read the bytes beneath) lose nothing.
TEST_F(FaultTest, SnapshotCommitFailureKeepsUnindexedWrites) {
  Options no_flusher = TestOptions(block_size_);
  no_flusher.background_flush = false;  // nothing indexes the sealed records behind the test's back
  store_.reset();
  ASSERT_OK(engine::OpenStoreWithIo(no_flusher, store_path(), &hooks_, &store_));
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  std::string v = Pattern(MiB, 0, 1);
  ASSERT_OK(WriteStr(h.get(), 0, v));
  ASSERT_OK(h->Sync());
  for (uint64_t i = 0; i < 12; ++i) {  // in place, unindexed, several pieces per block
    const uint64_t off = i * 80 * KiB + 1000;
    const std::string d = Pattern(9000, off, 10 + i);
    ASSERT_OK(WriteStr(h.get(), off, d));
    v.replace(off, d.size(), d);
  }
  hooks_.Fail(FaultOp::kIndexWrite, ENOSPC, 0, 1);  // the snapshot's commit (RocksDB resumes after ENOSPC)
  SnapshotInfo info;
  EXPECT_FALSE(store_->CreateSnapshot(img, "s", &info).ok());
  hooks_.ClearAll();
  for (uint64_t i = 0; i < 12; ++i) {  // one piece of each of those blocks again
    const uint64_t off = i * 80 * KiB + 1100;
    const std::string d = Pattern(50, off, 40 + i);
    ASSERT_OK(WriteStr(h.get(), off, d));
    v.replace(off, d.size(), d);
  }
  EXPECT_BYTES_EQ(ReadAll(img), v, 0);
  ASSERT_OK(SyncOnceTheIndexResumes(h.get()));
  h.reset();
  ReopenFaulty();
  EXPECT_BYTES_EQ(ReadAll(img), v, 0);
  ExpectClean();
}

// The same, and then the machine crashes: the log's unsynced tail is lost.
TEST_F(FaultTest, WalSyncIoErrorThenCrash) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  const std::string a = Pattern(MiB, 0, 1), b = Pattern(MiB, MiB, 2);
  ASSERT_OK(WriteStr(h.get(), 0, a));
  ASSERT_OK(h->Sync());
  ASSERT_OK(WriteStr(h.get(), MiB, b));
  hooks_.Fail(FaultOp::kWalSync, EIO);
  EXPECT_STATUS(kIOError, h->Sync());
  h.reset();
  CrashAndReopen(DropMode::kAll);
  ExpectEachPieceOldOrNew(img, a, a + b);
  std::string got;
  {
    auto r = OpenLive(img);
    ASSERT_OK(ReadStr(r.get(), 0, MiB, &got));
    EXPECT_BYTES_EQ(got, a, 0);
  }
  ExpectClean();
}

// A machine crash with writes after the last Sync, in both kinds of block
// version: copy-on-write (an image with a snapshot) and in-place (one
// without). Synced data and the snapshot read exactly; each unsynced piece
// reads old or new, never a checksum error; Check() is clean.
struct CrashCase {
  DropMode mode;
  uint64_t seed;
};

class FaultCrashTest : public FaultTest, public ::testing::WithParamInterface<CrashCase> {};

TEST_P(FaultCrashTest, UnsyncedWritesLostAtCrash) {
  const CrashCase cc = GetParam();
  NodeId cow = MakeImage("cow.img"), inplace = MakeImage("inplace.img");
  const std::string a = Pattern(2 * MiB, 0, 1);
  std::string after = a;
  const std::string b1 = Pattern(MiB, MiB / 2, 2), b2 = Pattern(MiB / 2, 2 * MiB, 3);
  after.replace(MiB / 2, b1.size(), b1);
  after += b2;
  after.replace(MiB + MiB / 4, 64 * KiB, Zeros(64 * KiB));
  SnapshotInfo snap;
  for (NodeId img : {cow, inplace}) {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 0, a));
    ASSERT_OK(h->Sync());
    if (img == cow) snap = Snap(img, "s");
  }
  ASSERT_OK(store_->SyncAll());
  // Nothing below is synced.
  for (NodeId img : {cow, inplace}) {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), MiB / 2, b1));       // over synced data
    ASSERT_OK(WriteStr(h.get(), 2 * MiB, b2));       // new blocks
    ASSERT_OK(h->Discard(MiB + MiB / 4, 64 * KiB));  // punch synced data
  }
  CrashAndReopen(cc.mode, cc.seed);
  for (NodeId img : {cow, inplace}) {
    SCOPED_TRACE(img == cow ? "copy-on-write image" : "in-place image");
    ExpectEachPieceOldOrNew(img, a, after);
    std::unique_ptr<ImageHandle> h;
    ASSERT_OK(store_->OpenImage(img, kLive, false, &h));
    std::string got;
    ASSERT_OK(ReadStr(h.get(), 0, MiB / 2, &got));  // synced, never overwritten
    EXPECT_BYTES_EQ(got, a.substr(0, MiB / 2), 0);
  }
  EXPECT_BYTES_EQ(ReadAll(cow, snap.id), a, 0);
  ExpectClean();
  // The store works on.
  auto h = OpenLive(inplace);
  ASSERT_OK(WriteStr(h.get(), 0, b1));
  ASSERT_OK(h->Sync());
  ExpectClean();
}

// An image sync of nothing but in-place overwrites (new checksums of
// versions the index maps durably) leaves the index log unsynced: the dirty
// log stands in for the new checksums. Losing everything unsynced then
// still reads the new data, with no checksum error, because the next open
// recomputes the checksums of what the dirty log lists.
TEST_F(FaultTest, InPlaceSyncSkipsTheIndexLogAndSurvivesLosingIt) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  const std::string a = Pattern(MiB, 0, 1);
  ASSERT_OK(WriteStr(h.get(), 0, a));
  ASSERT_OK(h->Sync());  // new versions: this one syncs the index
  std::string after = a;
  for (uint64_t off : {uint64_t{8} * KiB, 300 * KiB, MiB - 4 * KiB}) {
    const std::string b = Pattern(4 * KiB, off, 2);
    ASSERT_OK(WriteStr(h.get(), off, b));
    after.replace(off, b.size(), b);
  }
  ASSERT_NO_FATAL_FAILURE(SyncSkippingTheIndexLog(h.get()));
  h.reset();
  CrashAndReopen(DropMode::kAll);
  EXPECT_BYTES_EQ(ReadAll(img), after, 0);
  ExpectClean();
}

// Whatever changes more than checksums makes the next image sync sync the
// index: a failing index log sync must surface. Each case starts from a
// sync that needed no index sync.
TEST_F(FaultTest, ImageSyncSyncsTheIndexAfterAnyChangeBeyondChecksums) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 1)));
  ASSERT_OK(h->Sync());
  const std::string piece = Pattern(4 * KiB, 0, 3);
  auto in_place_sync = [&] {
    ASSERT_OK(WriteStr(h.get(), 64 * KiB, piece));
    SyncSkippingTheIndexLog(h.get());
  };
  struct Change {
    const char* what;
    std::function<Status()> run;
  };
  const std::vector<Change> changes = {
      {"a write to a block never written", [&] { return WriteStr(h.get(), 2 * MiB, piece); }},
      {"a write to a hole of a written block", [&] {
         Status s = h->Discard(128 * KiB, 4 * KiB);
         if (!s.ok()) return s;
         if (s = h->Sync(); !s.ok()) return s;
         return WriteStr(h.get(), 128 * KiB, piece);
       }},
      {"a discard", [&] { return h->Discard(256 * KiB, 4 * KiB); }},
      {"a resize", [&] { return Resize(img, 3 * MiB); }},
      {"a snapshot", [&] {
         SnapshotInfo info;
         return store_->CreateSnapshot(img, "s1", &info);
       }},
  };
  for (const Change& c : changes) {
    SCOPED_TRACE(c.what);
    in_place_sync();
    ASSERT_OK(c.run());
    hooks_.Fail(FaultOp::kWalSync, EIO, 0, 1);
    EXPECT_STATUS(kIOError, h->Sync());
    // A failed sync makes the store refuse writes until it is reopened.
    hooks_.ClearAll();
    h.reset();
    ReopenFaulty();
    ASSERT_OK(store_->CollectGarbage());  // the open's reclaim pass writes the index too
    h = OpenLive(img);
    ASSERT_OK(h->Sync());  // the first sync after an open syncs the index
  }
  ExpectClean();
}

// A snapshot survives losing everything unsynced once the image is synced
// after it, with no write in between, or with writes in place after it.
TEST_F(FaultTest, SnapshotSurvivesPowerLossAfterTheNextImageSync) {
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  const std::string a = Pattern(MiB, 0, 1), b = Pattern(MiB, 0, 2);
  ASSERT_OK(WriteStr(h.get(), 0, a));
  ASSERT_OK(h->Sync());
  SnapshotInfo snap;
  ASSERT_OK(store_->CreateSnapshot(img, "s1", &snap));
  ASSERT_OK(h->Sync());  // nothing written since the snapshot
  h.reset();
  CrashAndReopen(DropMode::kAll);
  EXPECT_BYTES_EQ(ReadAll(img, snap.id), a, 0);
  h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), 0, b));  // copy-on-write: new versions
  ASSERT_OK(h->Sync());
  ASSERT_OK(WriteStr(h.get(), 4 * KiB, Pattern(4 * KiB, 4 * KiB, 3)));  // in place over b
  std::string after = b;
  after.replace(4 * KiB, 4 * KiB, Pattern(4 * KiB, 4 * KiB, 3));
  ASSERT_OK(h->Sync());
  h.reset();
  CrashAndReopen(DropMode::kAll);
  EXPECT_BYTES_EQ(ReadAll(img, snap.id), a, 0);
  EXPECT_BYTES_EQ(ReadAll(img), after, 0);
  ExpectClean();
}

// A killed process leaves its unsynced writes in the page cache. The crash
// repair at open records checksums of those bytes and commits them synced,
// so it must first make the bytes durable in both data files: the piece
// log's too, although this process has not written to it yet.
TEST_F(FaultTest, CrashRepairSyncsThePieceLogItReadFrom) {
  NodeId img = MakeImage("a.img");
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 4 * KiB, Pattern(4 * KiB, 4 * KiB, 1)));  // a piece log version
    ASSERT_OK(h->Sync());
    ASSERT_OK(WriteStr(h.get(), 4 * KiB, Pattern(4 * KiB, 4 * KiB, 2)));  // in place: dirty log
  }
  hooks_.Crash();  // killed before any sync
  store_.reset();
  hooks_.Restart();
  const uint64_t data_syncs = hooks_.Calls(FaultOp::kDataSync);
  OpenFaulty();
  EXPECT_GE(hooks_.Calls(FaultOp::kDataSync) - data_syncs, 2u)
      << "the repair did not sync both blocks.dat and pieces.dat before committing checksums";
  EXPECT_BYTES_EQ(ReadAll(img).substr(4 * KiB, 4 * KiB), Pattern(4 * KiB, 4 * KiB, 2), 4 * KiB);
  ExpectClean();
}

// What the index holds at open may come from a log a killed process never
// synced: the first image sync after an open syncs the index even when it
// only follows in-place overwrites.
TEST_F(FaultTest, FirstImageSyncAfterOpenSyncsTheIndex) {
  NodeId img = MakeImage("a.img");
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 1)));
    uint64_t end = 0;
    ASSERT_OK(h->Seek(0, SeekWhence::kHole, &end));  // puts the records in the index log, unsynced
  }
  hooks_.Crash();  // killed: the unsynced log stays in the page cache
  store_.reset();
  hooks_.Restart();
  OpenFaulty();
  auto h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), 4 * KiB, Pattern(4 * KiB, 4 * KiB, 2)));
  std::string got;
  ASSERT_OK(ReadStr(h.get(), 0, 4 * KiB, &got));
  ASSERT_EQ(got, Pattern(4 * KiB, 0, 1)) << "the records did not reach the index log";
  hooks_.Fail(FaultOp::kWalSync, EIO, 0, 1);
  EXPECT_STATUS(kIOError, h->Sync());
}

std::string CrashCaseName(const ::testing::TestParamInfo<CrashCase>& info) {
  return std::string(info.param.mode == DropMode::kAll ? "DropAll" : "DropRandom") +
         std::to_string(info.param.seed);
}

// Nothing unsynced reaches the disk (the process dies and the page cache
// with it, or unsynced pages are all lost together).
INSTANTIATE_TEST_SUITE_P(Crash, FaultCrashTest, ::testing::Values(CrashCase{DropMode::kAll, 1}),
                         CrashCaseName);

// Power loss with unsynced pages written back in any order: the log keeps a
// torn tail, the data file keeps any subset of its unsynced writes.
// DISABLED: engine bug (issue 5 report): an unsynced version record that
// reaches the disk while the data it names does not (or, in place, the new
// data without its record or dirty marker) reads as a checksum error.
INSTANTIATE_TEST_SUITE_P(DISABLED_PowerLoss, FaultCrashTest,
                         ::testing::Values(CrashCase{DropMode::kRandom, 1}, CrashCase{DropMode::kRandom, 2},
                                           CrashCase{DropMode::kRandom, 3}),
                         CrashCaseName);

}  // namespace
}  // namespace snapdisk::test
