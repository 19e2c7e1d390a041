// Thin clones (CloneImage) and copy_file_range (CopyRange).
#include "test_util.h"

namespace snapdisk::test {
namespace {

class CloneTest : public StoreTest {
 protected:
  // An image "src" holding `content`.
  NodeId MakeSource(const std::string& content, std::string_view name = "src") {
    NodeId img = MakeImage(name);
    auto h = OpenLive(img);
    EXPECT_OK(WriteStr(h.get(), 0, content));
    return img;
  }
  void Write(NodeId img, uint64_t off, const std::string& data) {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), off, data));
  }
};

TEST_F(CloneTest, CloneFromSnapshot) {
  const std::string v1 = Pattern(MiB + 333, 0, 1);
  NodeId src = MakeSource(v1);
  SnapshotInfo s = Snap(src, "base");
  Write(src, 4096, Pattern(100 * KiB, 4096, 2));
  const std::string src_live = ReadAll(src);

  const uint64_t stored = StoredBytes();
  NodeId dst = MakeImage("dst");
  ASSERT_OK(store_->CloneImage(src, s.id, dst));
  EXPECT_EQ(SizeOf(dst), v1.size());
  EXPECT_BYTES_EQ(ReadAll(dst), v1, 0);
  EXPECT_EQ(StoredBytes(), stored) << "a clone copies no data";
  // Referenced space is counted in stored 4 KiB pieces: the partial last piece counts whole.
  EXPECT_GE(Usage(dst).referenced, v1.size());
  EXPECT_LE(Usage(dst).referenced, v1.size() + 4095);
  EXPECT_EQ(Usage(dst).unique, 0u);

  CloneOrigin origin;
  ASSERT_OK(store_->GetCloneOrigin(dst, &origin));
  EXPECT_TRUE(origin.is_clone);
  EXPECT_EQ(origin.image, src);
  EXPECT_EQ(origin.image_name, "src");
  EXPECT_EQ(origin.snapshot_name, "base");
  ASSERT_OK(store_->GetCloneOrigin(src, &origin));
  EXPECT_FALSE(origin.is_clone);

  // Independent both ways.
  std::string dst_model = v1;
  Write(dst, 1, "clone-write");
  dst_model.replace(1, 11, "clone-write");
  Write(dst, 2 * MiB, "grow");
  dst_model.resize(2 * MiB, '\0');
  dst_model += "grow";
  Write(src, 70 * KiB, "source-write");
  std::string src_model = src_live;
  src_model.replace(70 * KiB, 12, "source-write");
  EXPECT_BYTES_EQ(ReadAll(dst), dst_model, 0);
  EXPECT_BYTES_EQ(ReadAll(src), src_model, 0);
  EXPECT_BYTES_EQ(ReadAll(src, s.id), v1, 0);
  Reopen();
  EXPECT_BYTES_EQ(ReadAll(dst), dst_model, 0);
  EXPECT_BYTES_EQ(ReadAll(src), src_model, 0);
  EXPECT_BYTES_EQ(ReadAll(src, s.id), v1, 0);
  ASSERT_OK(store_->GetCloneOrigin(dst, &origin));
  EXPECT_TRUE(origin.is_clone);
}

TEST_F(CloneTest, GrowingACloneReadsZerosPastTheSourceSize) {
  // The clone's base shows through only below the source's size; the rest of
  // the block that holds that boundary must read as zeros once the clone grows.
  const std::string v1 = Pattern(MiB + 333, 0, 21);
  NodeId src = MakeSource(v1);
  SnapshotInfo s = Snap(src, "base");
  NodeId dst = MakeImage("dst");
  ASSERT_OK(store_->CloneImage(src, s.id, dst));
  ASSERT_OK(Resize(dst, 2 * MiB));
  EXPECT_BYTES_EQ(ReadAll(dst), v1 + Zeros(2 * MiB - v1.size()), 0);
}

TEST_F(CloneTest, CopyRangePartialIntoEmptyImageCopiesOnlyLen) {
  const std::string v = Pattern(3 * MiB, 0, 22);
  NodeId src = MakeSource(v);
  NodeId dst = MakeImage("dst");
  uint64_t copied = 0;
  ASSERT_OK(store_->CopyRange(src, kLive, 0, dst, 0, MiB, &copied));
  EXPECT_EQ(copied, MiB);
  EXPECT_EQ(SizeOf(dst), MiB) << "copy_file_range of 1 MiB must not make a whole-file clone";
  EXPECT_BYTES_EQ(ReadAll(dst), v.substr(0, MiB), 0);
}

TEST_F(CloneTest, CloneFromLive) {
  const std::string v1 = Pattern(700 * KiB, 0, 3);
  NodeId src = MakeSource(v1);
  NodeId dst = MakeImage("dst");
  ASSERT_OK(store_->CloneImage(src, kLive, dst));
  EXPECT_BYTES_EQ(ReadAll(dst), v1, 0);
  CloneOrigin origin;
  ASSERT_OK(store_->GetCloneOrigin(dst, &origin));
  EXPECT_TRUE(origin.is_clone);
  EXPECT_EQ(origin.snapshot_name, "");

  // The hidden base snapshot is not listed and does not make `rm src` busy.
  std::vector<SnapshotInfo> snaps;
  ASSERT_OK(store_->ListSnapshots(src, &snaps));
  EXPECT_TRUE(snaps.empty()) << snaps.size() << " visible snapshots, first: " << snaps[0].name;

  Write(src, 0, "src-after");
  Write(dst, 100, "dst-after");
  std::string dst_model = v1;
  dst_model.replace(100, 9, "dst-after");
  std::string src_model = v1;
  src_model.replace(0, 9, "src-after");
  EXPECT_BYTES_EQ(ReadAll(dst), dst_model, 0);
  EXPECT_BYTES_EQ(ReadAll(src), src_model, 0);

  ASSERT_OK(store_->RemoveImage(kRootNode, "src", false));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_BYTES_EQ(ReadAll(dst), dst_model, 0);
  Reopen();
  EXPECT_BYTES_EQ(ReadAll(dst), dst_model, 0);
}

TEST_F(CloneTest, CloneTargetMustBeEmptyImage) {
  NodeId src = MakeSource("data");
  NodeId full = MakeSource("x", "full");
  NodeId with_snap = MakeImage("with_snap");
  Snap(with_snap, "s");
  NodeId dir = MakeDir("d");
  EXPECT_FALSE(store_->CloneImage(src, kLive, full).ok());
  EXPECT_FALSE(store_->CloneImage(src, kLive, with_snap).ok());
  EXPECT_FALSE(store_->CloneImage(src, kLive, dir).ok());
  EXPECT_FALSE(store_->CloneImage(src, kLive, src).ok());
  EXPECT_EQ(ReadAll(full), "x");
  EXPECT_EQ(ReadAll(src), "data");
  EXPECT_STATUS(kNotFound, store_->CloneImage(src, 987654321, MakeImage("e1")));
  // A snapshot of another image is not a snapshot of src.
  NodeId other = MakeSource("other", "other");
  SnapshotInfo os = Snap(other, "os");
  EXPECT_FALSE(store_->CloneImage(src, os.id, MakeImage("e2")).ok());
}

TEST_F(CloneTest, DeleteSourceSnapshotKeepsClone) {
  const std::string v1 = Pattern(2 * MiB, 0, 4);
  NodeId src = MakeSource(v1);
  Snap(src, "base");
  NodeId dst = MakeImage("dst");
  SnapshotInfo base;
  ASSERT_OK(store_->GetSnapshot(src, "base", &base));
  ASSERT_OK(store_->CloneImage(src, base.id, dst));
  Write(src, 0, Pattern(2 * MiB, 0, 5));  // source no longer shares anything live
  ASSERT_OK(store_->DeleteSnapshot(src, "base"));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_BYTES_EQ(ReadAll(dst), v1, 0);
  Reopen();
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_BYTES_EQ(ReadAll(dst), v1, 0);
  EXPECT_BYTES_EQ(ReadAll(src), Pattern(2 * MiB, 0, 5), 0);
  // Both generations of data are still needed: nothing more to reclaim.
  EXPECT_EQ(StoredBytes(), 4 * MiB);
}

TEST_F(CloneTest, OverwrittenCloneReleasesDeletedBase) {
  // DESIGN §2: deleting reclaims exactly the blocks nothing else references.
  // Once the clone has overwritten everything it shared and the source
  // snapshot is gone, the old data is visible to no one and must be freed.
  NodeId src = MakeSource(Pattern(2 * MiB, 0, 4));
  SnapshotInfo base = Snap(src, "base");
  NodeId dst = MakeImage("dst");
  ASSERT_OK(store_->CloneImage(src, base.id, dst));
  Write(src, 0, Pattern(2 * MiB, 0, 5));
  ASSERT_OK(store_->DeleteSnapshot(src, "base"));
  Write(dst, 0, Pattern(2 * MiB, 0, 6));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(StoredBytes(), 4 * MiB) << "2 MiB live in src + 2 MiB live in dst";
  EXPECT_BYTES_EQ(ReadAll(dst), Pattern(2 * MiB, 0, 6), 0);
  EXPECT_BYTES_EQ(ReadAll(src), Pattern(2 * MiB, 0, 5), 0);
}

TEST_F(CloneTest, RemoveSourceCascadeKeepsClone) {
  const std::string v1 = Pattern(MiB + 1, 0, 7);
  NodeId src = MakeSource(v1);
  SnapshotInfo s = Snap(src, "base");
  Snap(src, "later");
  NodeId dst = MakeImage("dst");
  ASSERT_OK(store_->CloneImage(src, s.id, dst));
  ASSERT_OK(store_->RemoveImage(kRootNode, "src", true));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_BYTES_EQ(ReadAll(dst), v1, 0);
  CloneOrigin origin;
  ASSERT_OK(store_->GetCloneOrigin(dst, &origin));
  EXPECT_EQ(origin.image_name, "src");  // kept for the record
  Reopen();
  EXPECT_BYTES_EQ(ReadAll(dst), v1, 0);
  // Exactly the clone's data stays (its last 4 KiB piece holds one byte).
  EXPECT_GE(StoredBytes(), MiB + 1);
  EXPECT_LE(StoredBytes(), MiB + 4096);
  ASSERT_OK(store_->RemoveImage(kRootNode, "dst", false));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(StoredBytes(), 0u);
}

TEST_F(CloneTest, CloneOfClone) {
  const std::string v1 = Pattern(900 * KiB, 0, 8);
  NodeId a = MakeSource(v1, "a");
  SnapshotInfo sa = Snap(a, "sa");
  NodeId b = MakeImage("b");
  ASSERT_OK(store_->CloneImage(a, sa.id, b));
  Write(b, 64 * KiB, Pattern(64 * KiB, 64 * KiB, 9));
  std::string vb = v1;
  vb.replace(64 * KiB, 64 * KiB, Pattern(64 * KiB, 64 * KiB, 9));
  SnapshotInfo sb = Snap(b, "sb");
  Write(b, 0, "b-after-sb");
  NodeId c = MakeImage("c");
  ASSERT_OK(store_->CloneImage(b, sb.id, c));
  NodeId d = MakeImage("d");
  ASSERT_OK(store_->CloneImage(b, kLive, d));  // clone of a clone's live image
  std::string vb_live = vb;
  vb_live.replace(0, 10, "b-after-sb");
  Write(c, 500 * KiB, "c-own");
  std::string vc = vb;
  vc.replace(500 * KiB, 5, "c-own");
  Write(a, 0, Pattern(900 * KiB, 0, 10));

  EXPECT_BYTES_EQ(ReadAll(b), vb_live, 0);
  EXPECT_BYTES_EQ(ReadAll(c), vc, 0);
  EXPECT_BYTES_EQ(ReadAll(d), vb_live, 0);
  // Remove the ancestors; the grandchildren keep their content.
  ASSERT_OK(store_->RemoveImage(kRootNode, "a", true));
  ASSERT_OK(store_->RemoveImage(kRootNode, "b", true));
  ASSERT_OK(store_->CollectGarbage());
  Reopen();
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_BYTES_EQ(ReadAll(c), vc, 0);
  EXPECT_BYTES_EQ(ReadAll(d), vb_live, 0);
  CheckReport report;
  ASSERT_OK(store_->Check(&report, {}));
  EXPECT_TRUE(report.clean()) << (report.problems.empty() ? "" : report.problems[0]);
}

TEST_F(CloneTest, SnapshotsAndRollbackOnClone) {
  const std::string v1 = Pattern(300 * KiB, 0, 11);
  NodeId src = MakeSource(v1);
  SnapshotInfo s = Snap(src, "s");
  NodeId dst = MakeImage("dst");
  ASSERT_OK(store_->CloneImage(src, s.id, dst));
  SnapshotInfo ds = Snap(dst, "ds");
  Write(dst, 0, Pattern(300 * KiB, 0, 12));
  ASSERT_OK(store_->Rollback(dst, "ds", false));
  EXPECT_BYTES_EQ(ReadAll(dst), v1, 0);
  EXPECT_BYTES_EQ(ReadAll(dst, ds.id), v1, 0);
  EXPECT_BYTES_EQ(ReadAll(src), v1, 0);
}

TEST_F(CloneTest, CopyRangeWholeFileActsAsClone) {
  const uint64_t size = 3 * MiB + 12345;
  const std::string v = Pattern(size, 0, 13);
  NodeId src = MakeSource(v);
  const uint64_t stored = StoredBytes();
  NodeId dst = MakeImage("dst");
  uint64_t copied = 0;
  ASSERT_OK(store_->CopyRange(src, kLive, 0, dst, 0, uint64_t{1} << 40, &copied));
  EXPECT_EQ(copied, size);
  EXPECT_EQ(SizeOf(dst), size);
  EXPECT_BYTES_EQ(ReadAll(dst), v, 0);
  EXPECT_LE(StoredBytes(), stored + 64 * KiB) << "whole-file copy must share blocks";
  // cp's next call starts at the end and gets 0 bytes.
  ASSERT_OK(store_->CopyRange(src, kLive, copied, dst, copied, uint64_t{1} << 40, &copied));
  EXPECT_EQ(copied, 0u);
  EXPECT_EQ(SizeOf(dst), size);
  // Independent afterwards.
  Write(src, 0, "src");
  Write(dst, 10, "dst");
  std::string want = v;
  want.replace(10, 3, "dst");
  EXPECT_BYTES_EQ(ReadAll(dst), want, 0);
  EXPECT_EQ(ReadAll(src).substr(0, 13), "src" + v.substr(3, 10));
}

TEST_F(CloneTest, CopyRangeFromSnapshotWholeFile) {
  const std::string v = Pattern(MiB, 0, 14);
  NodeId src = MakeSource(v);
  SnapshotInfo s = Snap(src, "s");
  Write(src, 0, Pattern(MiB, 0, 15));
  NodeId dst = MakeImage("dst");
  uint64_t copied = 0;
  ASSERT_OK(store_->CopyRange(src, s.id, 0, dst, 0, 4 * MiB, &copied));
  EXPECT_EQ(copied, MiB);
  EXPECT_BYTES_EQ(ReadAll(dst), v, 0);
  ASSERT_OK(store_->DeleteSnapshot(src, "s"));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_BYTES_EQ(ReadAll(dst), v, 0);
}

TEST_F(CloneTest, CopyRangeInChunksLikeThirtyTwoBitReplies) {
  // FUSE replies to copy_file_range in 32 bits, so large copies come as a
  // first call and continuation calls at increasing offsets.
  const uint64_t size = 5 * MiB + 4097;
  const std::string v = Pattern(size, 0, 16);
  NodeId src = MakeSource(v);
  NodeId dst = MakeImage("dst");
  uint64_t copied = 0;
  ASSERT_OK(store_->CopyRange(src, kLive, 0, dst, 0, 2 * MiB, &copied));
  EXPECT_EQ(copied, 2 * MiB);
  EXPECT_EQ(SizeOf(dst), 2 * MiB);
  uint64_t off = copied;
  ASSERT_OK(store_->CopyRange(src, kLive, off, dst, off, 2 * MiB + 100, &copied));
  EXPECT_EQ(copied, 2 * MiB + 100);
  off += copied;
  ASSERT_OK(store_->CopyRange(src, kLive, off, dst, off, uint64_t{1} << 32, &copied));
  EXPECT_EQ(copied, size - off);
  off += copied;
  EXPECT_EQ(off, size);
  EXPECT_EQ(SizeOf(dst), size);
  EXPECT_BYTES_EQ(ReadAll(dst), v, 0);
}

TEST_F(CloneTest, CopyRangeUnaligned) {
  const std::string sv = Pattern(700 * KiB, 0, 17);
  NodeId src = MakeSource(sv);
  std::string dv = Pattern(900 * KiB, 0, 18);
  NodeId dst = MakeSource(dv, "dst");
  struct Case {
    uint64_t src_off, dst_off, len;
  };
  const Case cases[] = {
      {12345, 54321, 300001},             // ragged everywhere
      {0, 1, 64 * KiB},                   // aligned source, misaligned destination
      {1, 0, 64 * KiB},                   // the other way
      {64 * KiB, 128 * KiB, 192 * KiB},   // block-aligned: shared
      {64 * KiB, 132 * KiB, 190 * KiB},   // 4 KiB-aligned destination only
      {5, 850 * KiB, 200 * KiB},          // runs past the end of dst: grows it
      {690 * KiB, 10, 100 * KiB},         // runs past the end of src: short copy
      {700 * KiB, 0, 10},                 // at the end of src: nothing
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("src_off " + std::to_string(c.src_off) + " dst_off " +
                 std::to_string(c.dst_off) + " len " + std::to_string(c.len));
    uint64_t copied = 12345678;
    ASSERT_OK(store_->CopyRange(src, kLive, c.src_off, dst, c.dst_off, c.len, &copied));
    uint64_t expect = c.src_off >= sv.size() ? 0 : std::min<uint64_t>(c.len, sv.size() - c.src_off);
    EXPECT_EQ(copied, expect);
    if (expect > 0) {
      if (dv.size() < c.dst_off + expect) dv.resize(c.dst_off + expect, '\0');
      dv.replace(c.dst_off, expect, sv.substr(c.src_off, expect));
    }
    EXPECT_EQ(SizeOf(dst), dv.size());
    EXPECT_BYTES_EQ(ReadAll(dst), dv, 0);
  }
  EXPECT_BYTES_EQ(ReadAll(src), sv, 0);
  // Later writes to either side stay on their side.
  Write(src, 64 * KiB, "S");
  Write(dst, 128 * KiB + 1, "D");
  dv.replace(128 * KiB + 1, 1, "D");
  EXPECT_BYTES_EQ(ReadAll(dst), dv, 0);
  Reopen();
  EXPECT_BYTES_EQ(ReadAll(dst), dv, 0);
}

TEST_F(CloneTest, CopyRangeWithinOneImage) {
  std::string v = Pattern(MiB, 0, 19);
  NodeId img = MakeSource(v);
  uint64_t copied = 0;
  // Block-aligned (sharable between block indexes of the same image)...
  ASSERT_OK(store_->CopyRange(img, kLive, 0, img, 512 * KiB, 256 * KiB, &copied));
  EXPECT_EQ(copied, 256 * KiB);
  v.replace(512 * KiB, 256 * KiB, v.substr(0, 256 * KiB));
  // ...and unaligned.
  ASSERT_OK(store_->CopyRange(img, kLive, 3, img, 300 * KiB + 7, 100 * KiB, &copied));
  v.replace(300 * KiB + 7, 100 * KiB, v.substr(3, 100 * KiB));
  EXPECT_BYTES_EQ(ReadAll(img), v, 0);
  // Overwriting the source range afterwards leaves the copy alone.
  Write(img, 0, Pattern(256 * KiB, 0, 20));
  v.replace(0, 256 * KiB, Pattern(256 * KiB, 0, 20));
  EXPECT_BYTES_EQ(ReadAll(img), v, 0);
  SnapshotInfo s = Snap(img, "s");
  ASSERT_OK(store_->CopyRange(img, s.id, 512 * KiB, img, 0, 64 * KiB, &copied));
  v.replace(0, 64 * KiB, v.substr(512 * KiB, 64 * KiB));
  EXPECT_BYTES_EQ(ReadAll(img), v, 0);
}

TEST_F(CloneTest, CopyRangeToSnapshotOrDirectoryRefused) {
  NodeId src = MakeSource("abc");
  NodeId dir = MakeDir("d");
  uint64_t copied = 0;
  EXPECT_FALSE(store_->CopyRange(src, kLive, 0, dir, 0, 3, &copied).ok());
  EXPECT_FALSE(store_->CopyRange(dir, kLive, 0, src, 0, 3, &copied).ok());
  EXPECT_STATUS(kNotFound, store_->CopyRange(src, 987654321, 0, src, 0, 3, &copied));
}

}  // namespace
}  // namespace snapdisk::test
