// Space accounting and reclamation: sub-block (4 KiB) granularity after a
// snapshot, GetSpaceUsage referenced/unique, and garbage collection.
#include <algorithm>
#include <random>

#include "test_util.h"

namespace snapdisk::test {
namespace {

using SpaceTest = StoreTest;

TEST_F(SpaceTest, ReferencedAndUniqueBasics) {
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 1)));
  SpaceUsage u = Usage(img);
  EXPECT_EQ(u.referenced, MiB);
  EXPECT_EQ(u.unique, MiB);
  EXPECT_EQ(StoredBytes(), MiB);

  SnapshotInfo s = Snap(img, "s");
  u = Usage(img);
  EXPECT_EQ(u.referenced, MiB);
  EXPECT_EQ(u.unique, 0u) << "everything is shared with the snapshot";
  SpaceUsage us = Usage(img, s.id);
  EXPECT_EQ(us.referenced, MiB);
  EXPECT_EQ(us.unique, 0u);

  ASSERT_OK(WriteStr(h.get(), 0, Pattern(256 * KiB, 0, 2)));
  u = Usage(img);
  us = Usage(img, s.id);
  EXPECT_EQ(u.referenced, MiB);
  EXPECT_EQ(u.unique, 256 * KiB);
  EXPECT_EQ(us.referenced, MiB);
  EXPECT_EQ(us.unique, 256 * KiB);
  EXPECT_EQ(StoredBytes(), MiB + 256 * KiB);
}

// The heart of "a snapshot holds about what was changed, not what was near
// it": N scattered 4 KiB writes after a snapshot cost about N x 4 KiB, not
// N x block_size (64 KiB).
TEST_F(SpaceTest, SmallWritesAfterSnapshotCostFourKiBEach) {
  const uint64_t image_size = 16 * MiB;
  const uint64_t bs = 64 * KiB;
  const int n = 128;
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  for (uint64_t off = 0; off < image_size; off += MiB)
    ASSERT_OK(WriteStr(h.get(), off, Pattern(MiB, off, 3)));
  SnapshotInfo s = Snap(img, "s");
  const SpaceUsage live0 = Usage(img);
  const uint64_t stored0 = StoredBytes();
  EXPECT_EQ(live0.unique, 0u);

  // n pieces in n distinct blocks, at a random 4 KiB slot inside each.
  std::mt19937_64 rng(7);
  std::vector<uint64_t> blocks(image_size / bs);
  for (size_t i = 0; i < blocks.size(); ++i) blocks[i] = i;
  std::shuffle(blocks.begin(), blocks.end(), rng);
  for (int i = 0; i < n; ++i) {
    uint64_t off = blocks[i] * bs + (rng() % (bs / 4096)) * 4096;
    ASSERT_OK(WriteStr(h.get(), off, Pattern(4096, off, 4)));
  }
  const SpaceUsage live1 = Usage(img);
  const SpaceUsage snap1 = Usage(img, s.id);
  const uint64_t changed = n * 4096;
  EXPECT_EQ(live1.referenced, image_size);
  EXPECT_GE(live1.unique - live0.unique, changed);
  EXPECT_LE(live1.unique - live0.unique, changed + changed / 2)
      << "live unique grew by " << (live1.unique - live0.unique) / 1024 << " KiB for " << n
      << " 4 KiB writes; whole-block copy-on-write would be " << n * bs / 1024 << " KiB";
  EXPECT_GE(snap1.unique, changed);
  EXPECT_LE(snap1.unique, changed + changed / 2)
      << "the snapshot should hold only the overwritten pieces";
  EXPECT_LE(StoredBytes() - stored0, changed + changed / 2)
      << "stored bytes grew by " << (StoredBytes() - stored0) / 1024 << " KiB for " << n
      << " 4 KiB writes (the space a snapshot makes you pay must be ~what changed)";

  // Unaligned small writes inside one piece also cost one piece each.
  const SpaceUsage live2 = Usage(img);
  for (int i = n; i < 2 * n; ++i) {
    uint64_t off = blocks[i] * bs + (rng() % (bs / 4096)) * 4096 + 1000;
    ASSERT_OK(WriteStr(h.get(), off, Pattern(512, off, 5)));
  }
  const SpaceUsage live3 = Usage(img);
  EXPECT_GE(live3.unique - live2.unique, changed);
  EXPECT_LE(live3.unique - live2.unique, changed + changed / 2);
}

TEST_F(SpaceTest, DeleteSnapshotAndCollectGarbageReclaims) {
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), 0, Pattern(4 * MiB, 0, 6)));
  Snap(img, "s");
  ASSERT_OK(WriteStr(h.get(), 0, Pattern(4 * MiB, 0, 7)));
  const uint64_t with_snapshot = StoredBytes();
  EXPECT_GE(with_snapshot, 8 * MiB);
  ASSERT_OK(store_->DeleteSnapshot(img, "s"));
  ASSERT_OK(store_->CollectGarbage());
  const uint64_t after = StoredBytes();
  EXPECT_LE(after, 4 * MiB + 64 * KiB) << "before delete: " << with_snapshot;
  EXPECT_GE(after, 4 * MiB);
  EXPECT_EQ(Usage(img).unique, 4 * MiB);
  EXPECT_BYTES_EQ(ReadAll(img), Pattern(4 * MiB, 0, 7), 0);
  ASSERT_OK(store_->CollectGarbage());  // idempotent
  EXPECT_EQ(StoredBytes(), after);
  h.reset();  // handles must not outlive their store
  Reopen();
  EXPECT_EQ(StoredBytes(), after);
}

TEST_F(SpaceTest, DeleteMiddleSnapshotFreesOnlyWhatItAloneHeld) {
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 1)));   // A
  SnapshotInfo s1 = Snap(img, "s1");
  ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 2)));   // B over A
  SnapshotInfo s2 = Snap(img, "s2");
  ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 3)));   // C over B
  EXPECT_EQ(Usage(img, s2.id).unique, MiB);
  ASSERT_OK(store_->DeleteSnapshot(img, "s2"));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(StoredBytes(), 2 * MiB);
  EXPECT_BYTES_EQ(ReadAll(img, s1.id), Pattern(MiB, 0, 1), 0);
  EXPECT_BYTES_EQ(ReadAll(img), Pattern(MiB, 0, 3), 0);
}

TEST_F(SpaceTest, DiscardAfterSnapshotKeepsSnapshotSpace) {
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 8)));
  SnapshotInfo s = Snap(img, "s");
  ASSERT_OK(h->Discard(0, MiB));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(Usage(img).referenced, 0u);
  EXPECT_EQ(StoredBytes(), MiB);
  EXPECT_BYTES_EQ(ReadAll(img, s.id), Pattern(MiB, 0, 8), 0);
  EXPECT_EQ(ReadAll(img), Zeros(MiB));
  ASSERT_OK(store_->DeleteSnapshot(img, "s"));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(StoredBytes(), 0u);
}

TEST_F(SpaceTest, RemoveImageReclaimsEverything) {
  NodeId a = MakeImage("a");
  NodeId b = MakeImage("b");
  {
    auto ha = OpenLive(a);
    auto hb = OpenLive(b);
    for (int i = 0; i < 3; ++i) {
      ASSERT_OK(WriteStr(ha.get(), i * 300 * KiB, Pattern(500 * KiB, i * 300 * KiB, 10 + i)));
      Snap(a, "s" + std::to_string(i));
    }
    ASSERT_OK(WriteStr(hb.get(), 0, Pattern(MiB, 0, 20)));
  }
  ASSERT_OK(store_->RemoveImage(kRootNode, "a", true));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(StoredBytes(), MiB);
  ASSERT_OK(store_->RemoveImage(kRootNode, "b", false));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(StoredBytes(), 0u);
  Reopen();
  EXPECT_EQ(StoredBytes(), 0u);
  CheckReport report;
  ASSERT_OK(store_->Check(&report, {}));
  EXPECT_TRUE(report.clean());
}

TEST_F(SpaceTest, RemoveShrunkImageReclaimsEverything) {
  NodeId img = MakeImage("a");
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 40)));
  }
  ASSERT_OK(Resize(img, 300 * KiB));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_LE(StoredBytes(), 320 * KiB);
  ASSERT_OK(store_->RemoveImage(kRootNode, "a", false));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(StoredBytes(), 0u) << "a removed image that was once shrunk keeps its data";
  StoreStats st;
  ASSERT_OK(store_->GetStats(&st));
  EXPECT_EQ(st.images, 0u);
}

TEST_F(SpaceTest, RemoveRolledBackImageReclaimsEverything) {
  NodeId img = MakeImage("a");
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 41)));
    Snap(img, "s");
    ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 42)));
  }
  ASSERT_OK(store_->Rollback(img, "s", false));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(StoredBytes(), MiB) << "the rolled-away data is garbage";
  ASSERT_OK(store_->RemoveImage(kRootNode, "a", true));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(StoredBytes(), 0u) << "a removed image that was once rolled back keeps its data";
}

TEST_F(SpaceTest, GarbageLeftAtCloseIsCollectedAfterReopen) {
  NodeId img = MakeImage("a");
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 43)));
    Snap(img, "s");
    ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 44)));
  }
  NodeId other = MakeImage("b");
  {
    auto h = OpenLive(other);
    ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 45)));
  }
  ASSERT_OK(store_->DeleteSnapshot(img, "s"));
  ASSERT_OK(store_->RemoveImage(kRootNode, "b", false));
  Reopen();  // no CollectGarbage before closing
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(StoredBytes(), MiB);
}

TEST_F(SpaceTest, OverwriteWithoutSnapshotDoesNotGrow) {
  // A block no one else sees may be overwritten in place (or its old copy
  // reclaimed): rewriting the same MiB many times does not grow the store.
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  for (int i = 0; i < 20; ++i) ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 30 + i)));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(StoredBytes(), MiB);
  EXPECT_BYTES_EQ(ReadAll(img), Pattern(MiB, 0, 49), 0);
}

}  // namespace
}  // namespace snapdisk::test
