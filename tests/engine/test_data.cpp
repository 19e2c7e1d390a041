// Image data: unaligned I/O, sparseness, resize, discard, seek, zero elision.
// Run for several block sizes: block boundaries are where bugs live.
#include <random>

#include "test_util.h"

namespace snapdisk::test {
namespace {

class DataTest : public StoreTest, public ::testing::WithParamInterface<uint32_t> {
 protected:
  void SetUp() override {
    block_size_ = GetParam();
    StoreTest::SetUp();
  }
  uint64_t bs() const { return block_size_; }
};

INSTANTIATE_TEST_SUITE_P(BlockSizes, DataTest, ::testing::Values(16 * 1024, 64 * 1024, 256 * 1024),
                         [](const auto& info) { return std::to_string(info.param / 1024) + "KiB"; });

TEST_P(DataTest, BlockSizeReported) {
  StoreStats st;
  ASSERT_OK(store_->GetStats(&st));
  EXPECT_EQ(st.block_size, bs());
}

TEST_P(DataTest, SmallWriteReadBack) {
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), 0, "hello, world"));
  EXPECT_EQ(h->Size(), 12u);
  EXPECT_EQ(SizeOf(img), 12u);
  std::string got;
  ASSERT_OK(ReadStr(h.get(), 0, 100, &got));
  EXPECT_EQ(got, "hello, world");  // short read stops at the end
  ASSERT_OK(ReadStr(h.get(), 7, 5, &got));
  EXPECT_EQ(got, "world");
  ASSERT_OK(ReadStr(h.get(), 12, 10, &got));
  EXPECT_EQ(got, "");  // at the end: zero bytes, not an error
  ASSERT_OK(ReadStr(h.get(), 1000, 10, &got));
  EXPECT_EQ(got, "");
}

TEST_P(DataTest, UnalignedWritesSpanningBlocks) {
  const uint64_t b = bs();
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  std::string model;
  auto write = [&](uint64_t off, size_t len, uint64_t seed) {
    std::string data = Pattern(len, off, seed);
    ASSERT_OK(WriteStr(h.get(), off, data));
    if (model.size() < off + len) model.resize(off + len, '\0');
    model.replace(off, len, data);
  };
  // Offsets and lengths chosen to hit every relation to 4 KiB pieces and blocks.
  write(1, 1, 1);
  write(b - 1, 2, 2);                  // straddles the first block boundary
  write(b - 4096 - 3, 4096 + 10, 3);   // straddles a piece and a block
  write(3 * b + 17, 2 * b + 4099, 4);  // spans several whole blocks, both ends ragged
  write(4095, 4097, 5);
  write(3 * b + 100, 50, 6);           // overwrite inside an earlier write
  write(10 * b - 1, 1, 7);             // single byte at the end of a block
  write(7 * b, b, 8);                  // exactly one aligned block
  write(6 * b + 4096, 4096, 9);        // exactly one aligned piece
  ASSERT_EQ(h->Size(), model.size());
  EXPECT_BYTES_EQ(ReadAll(img), model, 0);

  // Reads at every kind of offset/length agree with the model.
  std::mt19937_64 rng(42);
  for (int i = 0; i < 150; ++i) {
    uint64_t off = rng() % (model.size() + 10);
    size_t len = 1 + rng() % (3 * b);
    std::string got;
    ASSERT_OK(ReadStr(h.get(), off, len, &got));
    std::string want = off >= model.size() ? "" : model.substr(off, len);
    ASSERT_EQ(got.size(), want.size()) << "off " << off << " len " << len;
    EXPECT_BYTES_EQ(got, want, off);
  }
}

TEST_P(DataTest, SparseImageReadsZeros) {
  NodeId img = MakeImage("a", kRootNode, 20 * MiB + 5);
  auto h = OpenLive(img);
  EXPECT_EQ(h->Size(), 20 * MiB + 5);
  std::string got;
  ASSERT_OK(ReadStr(h.get(), 0, 3 * MiB, &got));
  EXPECT_EQ(got, Zeros(3 * MiB));
  ASSERT_OK(ReadStr(h.get(), 20 * MiB - 7, 100, &got));
  EXPECT_EQ(got, Zeros(12));
  // A write in the middle leaves zeros on both sides of it.
  ASSERT_OK(WriteStr(h.get(), 10 * MiB + 3, "xyz"));
  ASSERT_OK(ReadStr(h.get(), 10 * MiB - 5, 16, &got));
  EXPECT_EQ(got, Zeros(8) + "xyz" + Zeros(5));
  EXPECT_EQ(h->Size(), 20 * MiB + 5);
  EXPECT_EQ(Usage(img).referenced <= 2 * bs(), true) << Usage(img).referenced;
}

TEST_P(DataTest, WritePastEndGrowsSize) {
  NodeId img = MakeImage("a", kRootNode, 1000);
  auto h = OpenLive(img);
  std::string data = Pattern(5000, 3 * bs() + 11, 3);
  ASSERT_OK(WriteStr(h.get(), 3 * bs() + 11, data));
  EXPECT_EQ(h->Size(), 3 * bs() + 11 + 5000);
  EXPECT_EQ(SizeOf(img), 3 * bs() + 11 + 5000);
  std::string all = ReadAll(img);
  EXPECT_EQ(all, Zeros(3 * bs() + 11) + data);
  // A write wholly inside does not shrink it.
  ASSERT_OK(WriteStr(h.get(), 0, "a"));
  EXPECT_EQ(h->Size(), 3 * bs() + 11 + 5000);
}

TEST_P(DataTest, ShrinkThenGrowReadsZeros) {
  const uint64_t len = 3 * bs() + 777;
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  std::string data = Pattern(len, 0, 4);
  ASSERT_OK(WriteStr(h.get(), 0, data));

  const uint64_t cut = bs() + 4096 + 123;  // mid-piece, mid-block
  ASSERT_OK(Resize(img, cut));
  EXPECT_EQ(SizeOf(img), cut);
  EXPECT_EQ(h->Size(), cut) << "an open handle must see the new size";
  std::string got;
  ASSERT_OK(ReadStr(h.get(), 0, len, &got));
  EXPECT_BYTES_EQ(got, data.substr(0, cut), 0);

  ASSERT_OK(Resize(img, len + bs()));
  EXPECT_EQ(h->Size(), len + bs());
  ASSERT_OK(ReadStr(h.get(), 0, len + bs(), &got));
  EXPECT_BYTES_EQ(got, data.substr(0, cut) + Zeros(len + bs() - cut), 0);

  // Shrink to zero and grow: all zeros.
  ASSERT_OK(Resize(img, 0));
  ASSERT_OK(ReadStr(h.get(), 0, 10, &got));
  EXPECT_EQ(got, "");
  ASSERT_OK(Resize(img, len));
  EXPECT_BYTES_EQ(ReadAll(img), Zeros(len), 0);
  // Survives reopen too.
  h.reset();
  Reopen();
  EXPECT_BYTES_EQ(ReadAll(img), Zeros(len), 0);
}

TEST_P(DataTest, ShrinkFreesSpace) {
  NodeId img = MakeImage("a");
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 0, Pattern(4 * MiB, 0, 5)));
  }
  ASSERT_OK(Resize(img, MiB));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_LE(Usage(img).referenced, MiB + bs());
  EXPECT_LE(StoredBytes(), MiB + bs());
}

TEST_P(DataTest, DiscardReadsZerosAndKeepsSize) {
  const uint64_t len = 4 * bs() + 999;
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  std::string model = Pattern(len, 0, 6);
  ASSERT_OK(WriteStr(h.get(), 0, model));
  auto discard = [&](uint64_t off, uint64_t n) {
    ASSERT_OK(h->Discard(off, n));
    model.replace(off, n, Zeros(n));
  };
  discard(5, 10);                         // tiny, inside a piece
  discard(bs() - 100, 200);               // across a block boundary
  discard(2 * bs(), bs());                // one whole block
  discard(3 * bs() + 4096, 8192);         // whole pieces
  EXPECT_EQ(h->Size(), len);
  EXPECT_BYTES_EQ(ReadAll(img), model, 0);
  // Discarding up to and past the end keeps the size.
  ASSERT_OK(h->Discard(len - 10, 1000));
  model.replace(len - 10, 10, Zeros(10));
  EXPECT_EQ(h->Size(), len);
  EXPECT_BYTES_EQ(ReadAll(img), model, 0);
}

TEST_P(DataTest, DiscardWholeImageFreesSpace) {
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), 0, Pattern(2 * MiB, 0, 7)));
  EXPECT_GE(StoredBytes(), 2 * MiB);
  ASSERT_OK(h->Discard(0, 2 * MiB));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(Usage(img).referenced, 0u);
  EXPECT_EQ(StoredBytes(), 0u);
  EXPECT_EQ(ReadAll(img), Zeros(2 * MiB));
}

TEST_P(DataTest, SeekDataAndHole) {
  const uint64_t b = bs();
  NodeId img = MakeImage("a", kRootNode, 10 * b);
  auto h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), 2 * b, Pattern(b, 2 * b, 8)));      // block 2
  ASSERT_OK(WriteStr(h.get(), 5 * b, Pattern(2 * b, 5 * b, 8)));  // blocks 5-6
  uint64_t r = 0;
  ASSERT_OK(h->Seek(0, SeekWhence::kData, &r));
  EXPECT_EQ(r, 2 * b);
  ASSERT_OK(h->Seek(2 * b + 10, SeekWhence::kData, &r));
  EXPECT_EQ(r, 2 * b + 10);  // inside data: the offset itself
  ASSERT_OK(h->Seek(0, SeekWhence::kHole, &r));
  EXPECT_EQ(r, 0u);
  ASSERT_OK(h->Seek(2 * b, SeekWhence::kHole, &r));
  EXPECT_EQ(r, 3 * b);
  ASSERT_OK(h->Seek(3 * b, SeekWhence::kData, &r));
  EXPECT_EQ(r, 5 * b);
  ASSERT_OK(h->Seek(5 * b + 1, SeekWhence::kHole, &r));
  EXPECT_EQ(r, 7 * b);
  ASSERT_OK(h->Seek(8 * b, SeekWhence::kHole, &r));
  EXPECT_EQ(r, 8 * b);
  // No data after the last extent: ENXIO, as lseek does.
  EXPECT_STATUS(kOutOfRange, h->Seek(7 * b, SeekWhence::kData, &r));
  // At or past the end: ENXIO for both.
  EXPECT_STATUS(kOutOfRange, h->Seek(10 * b, SeekWhence::kData, &r));
  EXPECT_STATUS(kOutOfRange, h->Seek(10 * b, SeekWhence::kHole, &r));
  EXPECT_STATUS(kOutOfRange, h->Seek(11 * b, SeekWhence::kHole, &r));

  // Data that runs to the end: the hole is the implicit one at the end.
  ASSERT_OK(WriteStr(h.get(), 9 * b, Pattern(b, 9 * b, 8)));
  ASSERT_OK(h->Seek(9 * b, SeekWhence::kHole, &r));
  EXPECT_EQ(r, 10 * b);
  // Discarded and zero-written ranges are holes again.
  ASSERT_OK(h->Discard(2 * b, b));
  ASSERT_OK(h->Seek(0, SeekWhence::kData, &r));
  EXPECT_EQ(r, 5 * b);
  ASSERT_OK(WriteStr(h.get(), 5 * b, Zeros(2 * b)));
  ASSERT_OK(h->Seek(0, SeekWhence::kData, &r));
  EXPECT_EQ(r, 9 * b);
}

TEST_P(DataTest, SeekWithin4KiBPieces) {
  // Validity is tracked per 4 KiB: a single written piece in a block is data,
  // and its block-mates may be reported as holes (lseek allows data anywhere,
  // but the data offset must not be past the written piece).
  NodeId img = MakeImage("a", kRootNode, 4 * bs());
  auto h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), bs() + 8192, Pattern(4096, bs() + 8192, 9)));
  uint64_t r = 0;
  ASSERT_OK(h->Seek(0, SeekWhence::kData, &r));
  EXPECT_GE(r, bs());
  EXPECT_LE(r, bs() + 8192);
  ASSERT_OK(h->Seek(bs() + 8192, SeekWhence::kHole, &r));
  EXPECT_GE(r, bs() + 8192 + 4096);
  EXPECT_LE(r, 2 * bs());
}

TEST_P(DataTest, AllZeroWritesStoreNoData) {
  NodeId img = MakeImage("a");
  const uint64_t before = StoredBytes();
  auto h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), 0, Zeros(2 * MiB)));
  ASSERT_OK(WriteStr(h.get(), 3 * MiB + 5, Zeros(12345)));
  ASSERT_OK(h->Sync());
  EXPECT_EQ(h->Size(), 3 * MiB + 5 + 12345);
  EXPECT_EQ(StoredBytes(), before);
  EXPECT_EQ(Usage(img).referenced, 0u);
  EXPECT_EQ(ReadAll(img), Zeros(3 * MiB + 5 + 12345));
  uint64_t r = 0;
  EXPECT_STATUS(kOutOfRange, h->Seek(0, SeekWhence::kData, &r));
}

TEST_P(DataTest, ZeroWriteOverDataReadsZerosAndFreesSpace) {
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  std::string model = Pattern(2 * MiB, 0, 10);
  ASSERT_OK(WriteStr(h.get(), 0, model));
  // Zero a 4 KiB-aligned MiB plus some ragged edges.
  ASSERT_OK(WriteStr(h.get(), 100, Zeros(MiB)));
  model.replace(100, MiB, Zeros(MiB));
  EXPECT_BYTES_EQ(ReadAll(img), model, 0);
  ASSERT_OK(store_->CollectGarbage());
  const uint64_t ref = Usage(img).referenced;
  EXPECT_LE(ref, MiB + 2 * 4096) << "zeroed 4 KiB pieces must not hold space";
  EXPECT_GE(ref, MiB - 2 * 4096);
}

TEST_P(DataTest, DataSurvivesReopen) {
  NodeId img = MakeImage("a");
  std::string model;
  {
    auto h = OpenLive(img);
    model = Pattern(3 * bs() + 5, 0, 11);
    ASSERT_OK(WriteStr(h.get(), 0, model));
    ASSERT_OK(WriteStr(h.get(), 10 * bs() + 1, "tail"));
    model.resize(10 * bs() + 1, '\0');
    model += "tail";
    ASSERT_OK(h->Discard(bs(), 100));
    model.replace(bs(), 100, Zeros(100));
  }
  Reopen();
  EXPECT_EQ(SizeOf(img), model.size());
  EXPECT_BYTES_EQ(ReadAll(img), model, 0);
  Reopen();  // twice: reopening must not change anything
  EXPECT_BYTES_EQ(ReadAll(img), model, 0);
}

TEST_P(DataTest, TwoHandlesSeeEachOthersWrites) {
  NodeId img = MakeImage("a");
  auto h1 = OpenLive(img);
  auto h2 = OpenLive(img);
  ASSERT_OK(WriteStr(h1.get(), bs() - 2, "abcd"));
  std::string got;
  ASSERT_OK(ReadStr(h2.get(), bs() - 2, 4, &got));
  EXPECT_EQ(got, "abcd");
  EXPECT_EQ(h2->Size(), bs() + 2);
}

TEST_P(DataTest, MaxImageSizeEnforced) {
  Options o = TestOptions(block_size_);
  o.max_image_size = 64 * MiB;
  OpenStore(o);
  NodeId img = MakeImage("a");
  EXPECT_STATUS(kTooLarge, Resize(img, 64 * MiB + 1));
  auto h = OpenLive(img);
  EXPECT_STATUS(kTooLarge, WriteStr(h.get(), 64 * MiB - 1, "xy"));
  ASSERT_OK(WriteStr(h.get(), 64 * MiB - 1, "x"));
  EXPECT_EQ(h->Size(), 64 * MiB);
}

TEST_P(DataTest, LargeSparseOffsets) {
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  const uint64_t far = 3 * TiB + 12345;
  ASSERT_OK(WriteStr(h.get(), far, "far away"));
  EXPECT_EQ(h->Size(), far + 8);
  std::string got;
  ASSERT_OK(ReadStr(h.get(), far - 4, 12, &got));
  EXPECT_EQ(got, Zeros(4) + "far away");
  uint64_t r = 0;
  ASSERT_OK(h->Seek(0, SeekWhence::kData, &r));
  EXPECT_LE(r, far);
  EXPECT_GE(r, far - (far % bs()));
}

}  // namespace
// Sequential reads prefetch ahead (ImageHandle::ReadAhead after each read,
// and a read's own blocks in ReadRange): a hint only. An image whose blocks are scattered over many versions must
// read exactly, in a stream of 1 MiB reads and of odd-sized ones, on the
// live image and on its oldest snapshot, and a write between two reads of a
// stream (over a range already prefetched) must be seen by the next read.
TEST_P(DataTest, SequentialReadsOverScatteredVersionsReadExactBytes) {
  const uint64_t size = 6 * MiB + 12345;
  NodeId img = MakeImage("frag.img", kRootNode, size);
  auto h = OpenLive(img);
  std::string model = Pattern(size, 0, 7);
  ASSERT_OK(WriteStr(h.get(), 0, model));
  const SnapshotInfo first = Snap(img, "base");
  const std::string base = model;
  for (int i = 0; i < 120; ++i) {
    const uint64_t off = Mix64(i + 1) % (size - 5000);
    const std::string d = Pattern(1 + Mix64(i + 99) % 5000, off, 1000 + i);
    ASSERT_OK(WriteStr(h.get(), off, d));
    model.replace(off, d.size(), d);
    Snap(img, "s" + std::to_string(i));
  }
  for (size_t chunk : {size_t{MiB}, size_t{300 * KiB + 7}}) {
    SCOPED_TRACE(chunk);
    for (auto [snap, want] : {std::pair<SnapshotId, const std::string*>{kLive, &model}, {first.id, &base}}) {
      auto r = snap == kLive ? OpenLive(img) : OpenSnap(img, snap);
      ASSERT_NE(r, nullptr);
      std::string got;
      for (uint64_t off = 0; off < size; off += chunk) {
        std::string part;
        ASSERT_OK(ReadStr(r.get(), off, chunk, &part));
        r->ReadAhead();  // as the FUSE layer does after each reply
        got += part;
      }
      EXPECT_BYTES_EQ(got, *want, 0);
    }
  }
  // A write lands in a range the stream has prefetched: the next read has it.
  std::string part;
  ASSERT_OK(ReadStr(h.get(), 0, MiB, &part));
  h->ReadAhead();
  ASSERT_OK(ReadStr(h.get(), MiB, MiB, &part));
  h->ReadAhead();
  const std::string d = Pattern(70 * KiB, 2 * MiB + 100, 4242);
  ASSERT_OK(WriteStr(h.get(), 2 * MiB + 100, d));
  model.replace(2 * MiB + 100, d.size(), d);
  ASSERT_OK(ReadStr(h.get(), 2 * MiB, MiB, &part));
  EXPECT_BYTES_EQ(part, model.substr(2 * MiB, MiB), 2 * MiB);
}

}  // namespace snapdisk::test
