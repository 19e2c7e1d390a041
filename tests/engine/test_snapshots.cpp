// Snapshots: frozen views, names, metadata, protection, rollback, groups.
#include <algorithm>
#include <chrono>

#include "test_util.h"

namespace snapdisk::test {
namespace {

using SnapshotTest = StoreTest;

std::vector<std::string> SnapNames(Store* store, NodeId image) {
  std::vector<SnapshotInfo> snaps;
  Status s = store->ListSnapshots(image, &snaps);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::vector<std::string> names;
  for (auto& i : snaps) names.push_back(i.name);
  return names;
}
using Names = std::vector<std::string>;

TEST_F(SnapshotTest, SnapshotViewIsFrozen) {
  NodeId img = MakeImage("vm.img");
  auto h = OpenLive(img);
  const std::string v1 = Pattern(300 * KiB + 7, 0, 1);
  ASSERT_OK(WriteStr(h.get(), 0, v1));

  const int64_t t0 = std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
  SnapshotInfo s1;
  ASSERT_OK(store_->CreateSnapshot(img, "s1", &s1));
  EXPECT_NE(s1.id, kLive);
  EXPECT_EQ(s1.image, img);
  EXPECT_EQ(s1.name, "s1");
  EXPECT_EQ(s1.size, v1.size());
  EXPECT_FALSE(s1.is_protected);
  EXPECT_FALSE(s1.hidden);
  EXPECT_GE(s1.created_ns, t0 - 1'000'000'000);
  EXPECT_LE(s1.created_ns, t0 + 60'000'000'000);

  // Overwrite part, discard part, grow, and shrink-then-regrow the live image.
  ASSERT_OK(WriteStr(h.get(), 1000, Pattern(70 * KiB, 1000, 2)));
  ASSERT_OK(h->Discard(128 * KiB, 64 * KiB));
  ASSERT_OK(WriteStr(h.get(), MiB, "grown"));
  EXPECT_BYTES_EQ(ReadAll(img, s1.id), v1, 0);

  auto sh = OpenSnap(img, s1.id);
  ASSERT_NE(sh, nullptr);
  EXPECT_TRUE(sh->read_only());
  EXPECT_EQ(sh->snapshot(), s1.id);
  EXPECT_EQ(sh->node(), img);
  EXPECT_EQ(sh->Size(), v1.size());
  EXPECT_STATUS(kReadOnly, WriteStr(sh.get(), 0, "x"));
  EXPECT_STATUS(kReadOnly, sh->Discard(0, 4096));
  std::unique_ptr<ImageHandle> rw;
  EXPECT_STATUS(kReadOnly, store_->OpenImage(img, s1.id, true, &rw));

  // The snapshot's view survives reopening the store.
  h.reset();
  sh.reset();
  Reopen();
  EXPECT_BYTES_EQ(ReadAll(img, s1.id), v1, 0);
  SnapshotInfo again;
  ASSERT_OK(store_->GetSnapshot(img, "s1", &again));
  EXPECT_EQ(again.id, s1.id);
  EXPECT_EQ(again.generation, s1.generation);
  EXPECT_EQ(again.created_ns, s1.created_ns);
  ASSERT_OK(store_->GetSnapshotById(s1.id, &again));
  EXPECT_EQ(again.name, "s1");
}

TEST_F(SnapshotTest, ChainOfSnapshotsEachKeepsItsContent) {
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  std::vector<std::pair<SnapshotInfo, std::string>> taken;
  std::string model;
  for (int i = 0; i < 8; ++i) {
    // Each round rewrites a different, overlapping range.
    uint64_t off = i * 40 * KiB + i;
    std::string data = Pattern(100 * KiB, off, 100 + i);
    ASSERT_OK(WriteStr(h.get(), off, data));
    if (model.size() < off + data.size()) model.resize(off + data.size(), '\0');
    model.replace(off, data.size(), data);
    taken.push_back({Snap(img, "s" + std::to_string(i)), model});
  }
  for (auto& [info, content] : taken) {
    SCOPED_TRACE(info.name);
    EXPECT_BYTES_EQ(ReadAll(img, info.id), content, 0);
  }
  // Generations strictly increase with time.
  for (size_t i = 1; i < taken.size(); ++i)
    EXPECT_GT(taken[i].first.generation, taken[i - 1].first.generation);
}

TEST_F(SnapshotTest, NamesAndOrdering) {
  NodeId img = MakeImage("a");
  SnapshotInfo info;
  Snap(img, "c");
  Snap(img, "a");
  Snap(img, "b");
  EXPECT_EQ(SnapNames(store_.get(), img), (Names{"c", "a", "b"})) << "oldest first";
  EXPECT_STATUS(kAlreadyExists, store_->CreateSnapshot(img, "a", &info));
  EXPECT_STATUS(kInvalidArgument, store_->CreateSnapshot(img, "", &info));
  EXPECT_STATUS(kInvalidArgument, store_->CreateSnapshot(img, "..", &info));
  EXPECT_STATUS(kInvalidArgument, store_->CreateSnapshot(img, "x/y", &info));
  EXPECT_STATUS(kInvalidArgument, store_->CreateSnapshot(img, ".snapdisk-q", &info));
  EXPECT_STATUS(kNameTooLong, store_->CreateSnapshot(img, std::string(256, 's'), &info));
  ASSERT_OK(store_->CreateSnapshot(img, std::string(255, 's'), &info));

  ASSERT_OK(store_->DeleteSnapshot(img, "a"));
  EXPECT_STATUS(kNotFound, store_->DeleteSnapshot(img, "a"));
  EXPECT_STATUS(kNotFound, store_->GetSnapshot(img, "a", &info));
  ASSERT_OK(store_->RenameSnapshot(img, "c", "z"));
  EXPECT_STATUS(kNotFound, store_->RenameSnapshot(img, "c", "w"));
  EXPECT_STATUS(kAlreadyExists, store_->RenameSnapshot(img, "z", "b"));
  EXPECT_STATUS(kInvalidArgument, store_->RenameSnapshot(img, "z", "q/r"));
  // Renaming keeps the position (creation order), not the name order.
  EXPECT_EQ(SnapNames(store_.get(), img), (Names{"z", "b", std::string(255, 's')}));
  // A deleted name can be reused, and the new one sorts as the newest.
  Snap(img, "a");
  EXPECT_EQ(SnapNames(store_.get(), img), (Names{"z", "b", std::string(255, 's'), "a"}));
  Reopen();
  EXPECT_EQ(SnapNames(store_.get(), img), (Names{"z", "b", std::string(255, 's'), "a"}));

  // Same snapshot name on another image is fine; snapshots of a directory are not.
  NodeId other = MakeImage("other");
  ASSERT_OK(store_->CreateSnapshot(other, "z", &info));
  NodeId dir = MakeDir("d");
  EXPECT_FALSE(store_->CreateSnapshot(dir, "s", &info).ok());
  EXPECT_STATUS(kNotFound, store_->CreateSnapshot(987654321, "s", &info));
  StoreStats st;
  ASSERT_OK(store_->GetStats(&st));
  EXPECT_EQ(st.snapshots, 5u);
}

TEST_F(SnapshotTest, DeletedSnapshotIsNotFoundEverywhere) {
  NodeId img = MakeImage("a");
  SnapshotInfo s = Snap(img, "s");
  ASSERT_OK(store_->DeleteSnapshot(img, "s"));
  SnapshotInfo info;
  EXPECT_STATUS(kNotFound, store_->GetSnapshotById(s.id, &info));
  SpaceUsage u;
  EXPECT_STATUS(kNotFound, store_->GetSpaceUsage(img, s.id, &u));
  std::unique_ptr<ImageHandle> h;
  EXPECT_STATUS(kNotFound, store_->OpenImage(img, s.id, false, &h));
  EXPECT_STATUS(kNotFound, store_->Rollback(img, "s", false));
  EXPECT_STATUS(kNotFound, store_->SetSnapshotProtected(img, "s", true));
  NodeId c = MakeImage("c");
  EXPECT_STATUS(kNotFound, store_->CloneImage(img, s.id, c));
  // Ids are never reused.
  SnapshotInfo s2 = Snap(img, "s");
  EXPECT_NE(s2.id, s.id);
}

TEST_F(SnapshotTest, RenamedSnapshotKeepsContentAndId) {
  NodeId img = MakeImage("a");
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 0, "before"));
  }
  SnapshotInfo s = Snap(img, "old");
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 0, "after!"));
  }
  ASSERT_OK(store_->RenameSnapshot(img, "old", "new"));
  SnapshotInfo info;
  ASSERT_OK(store_->GetSnapshot(img, "new", &info));
  EXPECT_EQ(info.id, s.id);
  EXPECT_EQ(ReadAll(img, info.id), "before");
}

TEST_F(SnapshotTest, PropertiesDescriptionProtect) {
  NodeId img = MakeImage("a");
  Snap(img, "s");
  ASSERT_OK(store_->SetSnapshotDescription(img, "s", "before upgrade"));
  const std::string v1 = "1", v2 = "two words";
  ASSERT_OK(store_->SetSnapshotProperty(img, "s", "k1", &v1));
  ASSERT_OK(store_->SetSnapshotProperty(img, "s", "k2", &v2));
  ASSERT_OK(store_->SetSnapshotProperty(img, "s", "k1", &v2));  // overwrite
  SnapshotInfo info;
  ASSERT_OK(store_->GetSnapshot(img, "s", &info));
  EXPECT_EQ(info.description, "before upgrade");
  EXPECT_EQ(info.properties, (std::map<std::string, std::string>{{"k1", v2}, {"k2", v2}}));
  EXPECT_STATUS(kNotFound, store_->SetSnapshotDescription(img, "nope", "x"));
  EXPECT_STATUS(kNotFound, store_->SetSnapshotProperty(img, "nope", "k", &v1));

  ASSERT_OK(store_->SetSnapshotProperty(img, "s", "k2", nullptr));
  EXPECT_STATUS(kNoData, store_->SetSnapshotProperty(img, "s", "k2", nullptr));
  ASSERT_OK(store_->SetSnapshotProtected(img, "s", true));
  Reopen();
  ASSERT_OK(store_->GetSnapshot(img, "s", &info));
  EXPECT_EQ(info.description, "before upgrade");
  EXPECT_EQ(info.properties, (std::map<std::string, std::string>{{"k1", v2}}));
  EXPECT_TRUE(info.is_protected);

  EXPECT_STATUS(kBusy, store_->DeleteSnapshot(img, "s"));
  EXPECT_EQ(SnapNames(store_.get(), img), Names{"s"});
  ASSERT_OK(store_->ClearSnapshotProperties(img, "s"));
  ASSERT_OK(store_->GetSnapshot(img, "s", &info));
  EXPECT_TRUE(info.properties.empty());
  EXPECT_EQ(info.description, "before upgrade");
  ASSERT_OK(store_->SetSnapshotProtected(img, "s", false));
  ASSERT_OK(store_->DeleteSnapshot(img, "s"));
  EXPECT_EQ(SnapNames(store_.get(), img), Names{});
}

TEST_F(SnapshotTest, DeletedSnapshotStaysReadableThroughOpenHandle) {
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  const std::string v1 = Pattern(256 * KiB, 0, 3);
  ASSERT_OK(WriteStr(h.get(), 0, v1));
  SnapshotInfo s = Snap(img, "s");
  ASSERT_OK(WriteStr(h.get(), 0, Pattern(256 * KiB, 0, 4)));
  auto sh = OpenSnap(img, s.id);
  ASSERT_OK(store_->DeleteSnapshot(img, "s"));
  ASSERT_OK(store_->CollectGarbage());
  std::string got;
  ASSERT_OK(ReadStr(sh.get(), 0, v1.size(), &got));
  EXPECT_BYTES_EQ(got, v1, 0);
  sh.reset();
  ASSERT_OK(store_->CollectGarbage());
  std::unique_ptr<ImageHandle> gone;
  EXPECT_STATUS(kNotFound, store_->OpenImage(img, s.id, false, &gone));
}

TEST_F(SnapshotTest, RollbackToOlderKeepsNewerSnapshots) {
  NodeId img = MakeImage("a");
  std::string v1 = Pattern(200 * KiB + 1, 0, 11);
  std::string v2 = v1;
  std::string v3;
  SnapshotInfo s1, s2;
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 0, v1));
    s1 = Snap(img, "s1");
    std::string patch = Pattern(70 * KiB, 50 * KiB, 12);
    ASSERT_OK(WriteStr(h.get(), 50 * KiB, patch));
    v2.replace(50 * KiB, patch.size(), patch);
    v2 += Pattern(300 * KiB, v2.size(), 13);  // grows
    ASSERT_OK(WriteStr(h.get(), v1.size(), v2.substr(v1.size())));
    s2 = Snap(img, "s2");
    ASSERT_OK(h->Discard(0, 64 * KiB));
    ASSERT_OK(WriteStr(h.get(), 400 * KiB, "live-only"));
    v3 = ReadAll(img);
  }
  ASSERT_OK(store_->Rollback(img, "s1", false));
  EXPECT_EQ(SizeOf(img), v1.size());
  EXPECT_BYTES_EQ(ReadAll(img), v1, 0);
  EXPECT_BYTES_EQ(ReadAll(img, s2.id), v2, 0) << "newer snapshot must keep its content";
  EXPECT_BYTES_EQ(ReadAll(img, s1.id), v1, 0);
  EXPECT_EQ(SnapNames(store_.get(), img), (Names{"s1", "s2"}));

  // Writing after the rollback changes neither snapshot.
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 10, "after rollback"));
    v1.replace(10, 14, "after rollback");
  }
  EXPECT_BYTES_EQ(ReadAll(img), v1, 0);
  EXPECT_NE(ReadAll(img, s1.id), v1) << "writes after rollback leaked into the snapshot";

  // Roll forward to the newer snapshot, then reopen.
  ASSERT_OK(store_->Rollback(img, "s2", false));
  EXPECT_BYTES_EQ(ReadAll(img), v2, 0);
  Reopen();
  EXPECT_BYTES_EQ(ReadAll(img), v2, 0);
  EXPECT_BYTES_EQ(ReadAll(img, s2.id), v2, 0);
  EXPECT_EQ(ReadAll(img, s1.id).substr(10, 14), Pattern(200 * KiB + 1, 0, 11).substr(10, 14));
  EXPECT_STATUS(kNotFound, store_->Rollback(img, "nope", false));
}

TEST_F(SnapshotTest, RollbackBusyWhileOpenForWritingUnlessForce) {
  NodeId img = MakeImage("a");
  auto h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), 0, "one"));
  Snap(img, "s");
  ASSERT_OK(WriteStr(h.get(), 0, "two"));
  EXPECT_STATUS(kBusy, store_->Rollback(img, "s", false));
  EXPECT_EQ(ReadAll(img), "two");
  {
    // The writable handle still blocks it with a read-only one open as well.
    std::unique_ptr<ImageHandle> ro;
    ASSERT_OK(store_->OpenImage(img, kLive, false, &ro));
    EXPECT_STATUS(kBusy, store_->Rollback(img, "s", false));
  }
  ASSERT_OK(store_->Rollback(img, "s", true));
  h.reset();
  EXPECT_EQ(ReadAll(img), "one");
  ASSERT_OK(store_->Rollback(img, "s", false));  // nothing open: fine
}

TEST_F(SnapshotTest, ShrinkAfterSnapshotKeepsSnapshotData) {
  NodeId img = MakeImage("a");
  const std::string v = Pattern(MiB + 3, 0, 21);
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 0, v));
  }
  SnapshotInfo s = Snap(img, "s");
  ASSERT_OK(Resize(img, 5000));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_BYTES_EQ(ReadAll(img, s.id), v, 0);
  ASSERT_OK(Resize(img, MiB + 3));
  EXPECT_BYTES_EQ(ReadAll(img), v.substr(0, 5000) + Zeros(MiB + 3 - 5000), 0);
  EXPECT_BYTES_EQ(ReadAll(img, s.id), v, 0);
  ASSERT_OK(Resize(img, 0));
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_BYTES_EQ(ReadAll(img, s.id), v, 0);
  ASSERT_OK(store_->Rollback(img, "s", false));
  EXPECT_BYTES_EQ(ReadAll(img), v, 0);
}

TEST_F(SnapshotTest, HugeSparseImageSnapshot) {
  const uint64_t size = TiB;
  NodeId img = MakeImage("huge", kRootNode, size);
  auto h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), size / 2 + 3, "X"));
  ASSERT_OK(WriteStr(h.get(), size - 1, "E"));
  SnapshotInfo s = Snap(img, "s");
  EXPECT_EQ(s.size, size);
  ASSERT_OK(WriteStr(h.get(), size / 2 + 3, "Y"));
  ASSERT_OK(WriteStr(h.get(), 0, "B"));

  auto sh = OpenSnap(img, s.id);
  EXPECT_EQ(sh->Size(), size);
  std::string got;
  ASSERT_OK(ReadStr(sh.get(), size / 2, 8, &got));
  EXPECT_EQ(got, std::string("\0\0\0X\0\0\0\0", 8));
  ASSERT_OK(ReadStr(sh.get(), size - 4, 100, &got));
  EXPECT_EQ(got, std::string("\0\0\0E", 4));
  ASSERT_OK(ReadStr(sh.get(), 0, 4, &got));
  EXPECT_EQ(got, Zeros(4));
  ASSERT_OK(ReadStr(h.get(), size / 2 + 3, 1, &got));
  EXPECT_EQ(got, "Y");
  uint64_t r = 0;
  ASSERT_OK(sh->Seek(0, SeekWhence::kData, &r));
  EXPECT_LE(r, size / 2 + 3);
  EXPECT_GE(r, size / 2 - MiB);
  // The clone of a huge sparse snapshot is cheap too.
  NodeId c = MakeImage("clone");
  ASSERT_OK(store_->CloneImage(img, s.id, c));
  EXPECT_EQ(SizeOf(c), size);
  auto ch = OpenLive(c);
  ASSERT_OK(ReadStr(ch.get(), size / 2 + 3, 1, &got));
  EXPECT_EQ(got, "X");
}

TEST_F(SnapshotTest, SnapshotOfEmptyImage) {
  NodeId img = MakeImage("a");
  SnapshotInfo s = Snap(img, "empty");
  EXPECT_EQ(s.size, 0u);
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 0, "data"));
  }
  EXPECT_EQ(ReadAll(img, s.id), "");
  ASSERT_OK(store_->Rollback(img, "empty", false));
  EXPECT_EQ(SizeOf(img), 0u);
}

TEST_F(SnapshotTest, GroupSnapshotAllOrNothing) {
  NodeId a = MakeImage("a");
  NodeId d = MakeDir("d");
  NodeId b = MakeImage("b", d);
  NodeId c = MakeImage("c");
  {
    auto ha = OpenLive(a), hb = OpenLive(b), hc = OpenLive(c);
    ASSERT_OK(WriteStr(ha.get(), 0, "a-before"));
    ASSERT_OK(WriteStr(hb.get(), 0, "b-before"));
    ASSERT_OK(WriteStr(hc.get(), 0, "c-before"));
    std::vector<SnapshotInfo> infos;
    ASSERT_OK(store_->CreateGroupSnapshot({a, b, c}, "g", &infos));
    ASSERT_EQ(infos.size(), 3u);
    EXPECT_EQ(infos[0].image, a);
    EXPECT_EQ(infos[1].image, b);
    EXPECT_EQ(infos[2].image, c);
    for (auto& i : infos) EXPECT_EQ(i.name, "g");
    ASSERT_OK(WriteStr(ha.get(), 0, "a-after!"));
    ASSERT_OK(WriteStr(hb.get(), 0, "b-after!"));
    EXPECT_EQ(ReadAll(a, infos[0].id), "a-before");
    EXPECT_EQ(ReadAll(b, infos[1].id), "b-before");
    EXPECT_EQ(ReadAll(c, infos[2].id), "c-before");
  }
  // One member already has the name: nothing is created anywhere.
  Snap(b, "g2");
  std::vector<SnapshotInfo> infos;
  EXPECT_STATUS(kAlreadyExists, store_->CreateGroupSnapshot({a, b, c}, "g2", &infos));
  EXPECT_EQ(SnapNames(store_.get(), a), Names{"g"});
  EXPECT_EQ(SnapNames(store_.get(), c), Names{"g"});
  // Missing member, duplicate member, empty group, bad name.
  EXPECT_STATUS(kNotFound, store_->CreateGroupSnapshot({a, 987654321}, "g3", &infos));
  EXPECT_EQ(SnapNames(store_.get(), a), Names{"g"});
  EXPECT_FALSE(store_->CreateGroupSnapshot({a, a}, "g4", &infos).ok());
  EXPECT_STATUS(kInvalidArgument, store_->CreateGroupSnapshot({a, c}, "x/y", &infos));
  EXPECT_EQ(SnapNames(store_.get(), a), Names{"g"});
}

}  // namespace
}  // namespace snapdisk::test

namespace snapdisk::test {
namespace {

// A snapshot seals the live generation's unindexed records instead of
// writing them to the index while writes wait; readers of the snapshot and
// the live image's next writes must find them there, and then in the index.
TEST_F(SnapshotTest, UnindexedWritesBeforeASnapshotStayInItAndUnderTheLiveImage) {
  Options no_flusher = TestOptions();
  no_flusher.background_flush = false;  // the sealed records stay unindexed until something needs the index
  OpenStore(no_flusher);
  NodeId img = MakeImage("vm.img");
  auto h = OpenLive(img);
  const std::string base = Pattern(2 * MiB, 0, 1);
  ASSERT_OK(WriteStr(h.get(), 0, base));
  ASSERT_OK(h->Sync());  // indexed: the next writes overwrite in place
  std::string v1 = base;
  // Fewer than a flush's worth of records, in place and in new blocks, with
  // partial pieces: all pending in the live cache when the snapshot comes.
  for (uint64_t i = 0; i < 20; ++i) {
    const uint64_t off = i * 97 * KiB + 123;
    const std::string d = Pattern(5000, off, 10 + i);
    ASSERT_OK(WriteStr(h.get(), off, d));
    if (v1.size() < off + d.size()) v1.resize(off + d.size(), '\0');
    v1.replace(off, d.size(), d);
  }
  ASSERT_OK(WriteStr(h.get(), 3 * MiB, "tail"));
  v1.resize(3 * MiB, '\0');
  v1 += "tail";
  SnapshotInfo s1;
  ASSERT_OK(store_->CreateSnapshot(img, "s1", &s1));
  EXPECT_BYTES_EQ(ReadAll(img, s1.id), v1, 0);  // at once, flushed or not
  // Partial-piece writes to the live image need the sealed bytes beneath.
  std::string live = v1;
  for (uint64_t i = 0; i < 20; ++i) {
    const uint64_t off = i * 97 * KiB + 4000;
    const std::string d = Pattern(300, off, 50 + i);
    ASSERT_OK(WriteStr(h.get(), off, d));
    live.replace(off, d.size(), d);
  }
  SnapshotInfo s2;
  ASSERT_OK(store_->CreateSnapshot(img, "s2", &s2));
  EXPECT_BYTES_EQ(ReadAll(img, s1.id), v1, 0);
  EXPECT_BYTES_EQ(ReadAll(img, s2.id), live, 0);
  EXPECT_BYTES_EQ(ReadAll(img), live, 0);
  // Scans of the index see them too (they index sealed records first).
  std::vector<Store::Extent> changed;
  ASSERT_OK(store_->Diff(img, s1.id, s2.id, &changed));
  EXPECT_FALSE(changed.empty());
  auto sh = OpenSnap(img, s1.id);
  uint64_t at = 0;
  ASSERT_OK(sh->Seek(3 * MiB - 1, SeekWhence::kData, &at));
  EXPECT_EQ(at, 3 * MiB);
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_BYTES_EQ(ReadAll(img, s1.id), v1, 0);
  EXPECT_BYTES_EQ(ReadAll(img, s2.id), live, 0);
  h.reset();
  sh.reset();
  Reopen();
  EXPECT_BYTES_EQ(ReadAll(img, s1.id), v1, 0);
  EXPECT_BYTES_EQ(ReadAll(img, s2.id), live, 0);
  EXPECT_BYTES_EQ(ReadAll(img), live, 0);
}

// A snapshot that fails after sealing (here: its name is taken) gives the
// sealed records back to the live image, which goes on in the same
// generation as if nothing had happened.
TEST_F(SnapshotTest, FailedSnapshotLeavesUnindexedWritesLive) {
  Options no_flusher = TestOptions();
  no_flusher.background_flush = false;
  OpenStore(no_flusher);
  NodeId img = MakeImage("vm.img");
  auto h = OpenLive(img);
  std::string v = Pattern(MiB, 0, 1);
  ASSERT_OK(WriteStr(h.get(), 0, v));
  SnapshotInfo s1;
  ASSERT_OK(store_->CreateSnapshot(img, "s1", &s1));
  const std::string d = Pattern(9000, 70000, 2);
  ASSERT_OK(WriteStr(h.get(), 70000, d));
  v.replace(70000, d.size(), d);
  SnapshotInfo dup;
  EXPECT_STATUS(kAlreadyExists, store_->CreateSnapshot(img, "s1", &dup));
  const std::string e = Pattern(100, 70100, 3);  // on top of the records that were pending
  ASSERT_OK(WriteStr(h.get(), 70100, e));
  v.replace(70100, e.size(), e);
  EXPECT_BYTES_EQ(ReadAll(img), v, 0);
  ASSERT_OK(h->Sync());
  h.reset();
  Reopen();
  EXPECT_BYTES_EQ(ReadAll(img), v, 0);
  EXPECT_EQ(ReadAll(img, s1.id), Pattern(MiB, 0, 1));
}

// After a snapshot, a block's first write in the new generation does not
// ask the index for a version of that generation (there can be none but the
// live cache's). Once the cache has evicted entries, the index may hold one:
// here block 0's first piece, indexed, then evicted by 2,100 other blocks of
// its stripe. The next write to block 0 must find that piece, not start an
// empty version over it.
TEST_F(SnapshotTest, WriteAfterSnapshotFindsItsGenerationOnceTheCacheEvicted) {
  NodeId img = MakeImage("vm.img");
  auto h = OpenLive(img);
  const std::string base = Pattern(64 * KiB, 0, 1);
  ASSERT_OK(WriteStr(h.get(), 0, base));
  SnapshotInfo s1;
  ASSERT_OK(store_->CreateSnapshot(img, "s1", &s1));
  const std::string a = Pattern(4 * KiB, 0, 2), b = Pattern(4 * KiB, 8 * KiB, 3);
  ASSERT_OK(WriteStr(h.get(), 0, a));
  ASSERT_OK(h->Sync());
  // Blocks 64, 128, ... share block 0's stripe (64 stripes).
  constexpr uint64_t kStride = 64 * 64 * KiB;
  const std::string filler = Pattern(4 * KiB, 0, 4);
  for (uint64_t k = 1; k <= 2100; ++k) {
    ASSERT_OK(WriteStr(h.get(), k * kStride, filler));
    if (k % 500 == 0) {
      ASSERT_OK(h->Sync());  // clean entries, which the cache may evict
    }
  }
  ASSERT_OK(WriteStr(h.get(), 8 * KiB, b));
  std::string want = base;
  want.replace(0, a.size(), a);
  want.replace(8 * KiB, b.size(), b);
  std::string got;
  ASSERT_OK(ReadStr(h.get(), 0, 64 * KiB, &got));
  EXPECT_BYTES_EQ(got, want, 0);
  ASSERT_OK(ReadStr(h.get(), 2100 * kStride, 4 * KiB, &got));
  EXPECT_BYTES_EQ(got, filler, 2100 * kStride);
  ASSERT_OK(h->Sync());
  h.reset();
  Reopen();
  h = OpenLive(img);
  ASSERT_OK(ReadStr(h.get(), 0, 64 * KiB, &got));
  EXPECT_BYTES_EQ(got, want, 0);
  std::string old;
  auto sh = OpenSnap(img, s1.id);
  ASSERT_OK(ReadStr(sh.get(), 0, 64 * KiB, &old));
  EXPECT_BYTES_EQ(old, base, 0);
}

}  // namespace
}  // namespace snapdisk::test
