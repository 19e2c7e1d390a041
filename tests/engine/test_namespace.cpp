// Namespace: images, directories, names, renames, removal, attributes, xattrs.
#include <algorithm>

#include "test_util.h"

namespace snapdisk::test {
namespace {

class NamespaceTest : public StoreTest {
 protected:
  std::vector<std::string> Names(NodeId dir) {
    std::vector<DirEntry> entries;
    Status s = store_->ReadDirectory(dir, &entries);
    EXPECT_TRUE(s.ok()) << s.ToString();
    std::vector<std::string> names;
    for (const auto& e : entries) names.push_back(e.name);
    std::sort(names.begin(), names.end());
    return names;
  }
  using Names_t = std::vector<std::string>;
};

TEST_F(NamespaceTest, EmptyStoreHasEmptyRoot) {
  NodeAttr attr;
  ASSERT_OK(store_->GetAttr(kRootNode, &attr));
  EXPECT_EQ(attr.kind, NodeKind::kDirectory);
  EXPECT_EQ(Names(kRootNode), Names_t{});
  StoreStats st;
  ASSERT_OK(store_->GetStats(&st));
  EXPECT_EQ(st.images, 0u);
  EXPECT_EQ(st.snapshots, 0u);
  EXPECT_EQ(st.block_size, 64u * 1024);
}

TEST_F(NamespaceTest, CreateAndLookup) {
  NodeAttr img;
  ASSERT_OK(store_->CreateImage(kRootNode, "vm1.img", 0640, 1000, 1001, &img));
  EXPECT_NE(img.id, 0u);
  EXPECT_NE(img.id, kRootNode);
  EXPECT_EQ(img.kind, NodeKind::kImage);
  EXPECT_EQ(img.mode & 07777, 0640u);
  EXPECT_EQ(img.uid, 1000u);
  EXPECT_EQ(img.gid, 1001u);
  EXPECT_EQ(img.size, 0u);

  NodeAttr dir;
  ASSERT_OK(store_->MakeDirectory(kRootNode, "team-a", 0750, 1, 2, &dir));
  EXPECT_EQ(dir.kind, NodeKind::kDirectory);
  EXPECT_NE(dir.id, img.id);

  NodeAttr db;
  ASSERT_OK(store_->CreateImage(dir.id, "db.img", 0600, 0, 0, &db));

  NodeAttr found;
  ASSERT_OK(store_->Lookup(kRootNode, "vm1.img", &found));
  EXPECT_EQ(found.id, img.id);
  EXPECT_EQ(found.kind, NodeKind::kImage);
  ASSERT_OK(store_->Lookup(kRootNode, "team-a", &found));
  EXPECT_EQ(found.id, dir.id);
  EXPECT_EQ(found.kind, NodeKind::kDirectory);
  ASSERT_OK(store_->Lookup(dir.id, "db.img", &found));
  EXPECT_EQ(found.id, db.id);
  EXPECT_STATUS(kNotFound, store_->Lookup(kRootNode, "db.img", &found));
  EXPECT_STATUS(kNotFound, store_->Lookup(kRootNode, "nope", &found));

  NodeId parent = 0;
  ASSERT_OK(store_->Parent(db.id, &parent));
  EXPECT_EQ(parent, dir.id);
  EXPECT_EQ(store_->PathOf(db.id), "team-a/db.img");
  EXPECT_EQ(store_->PathOf(img.id), "vm1.img");

  StoreStats st;
  ASSERT_OK(store_->GetStats(&st));
  EXPECT_EQ(st.images, 2u);
  EXPECT_TRUE(st.directories == 1 || st.directories == 2)  // with or without the root
      << st.directories;
}

TEST_F(NamespaceTest, DuplicateNamesRefused) {
  MakeImage("a");
  MakeDir("d");
  NodeAttr attr;
  EXPECT_STATUS(kAlreadyExists, store_->CreateImage(kRootNode, "a", 0644, 0, 0, &attr));
  EXPECT_STATUS(kAlreadyExists, store_->MakeDirectory(kRootNode, "a", 0755, 0, 0, &attr));
  EXPECT_STATUS(kAlreadyExists, store_->CreateImage(kRootNode, "d", 0644, 0, 0, &attr));
  EXPECT_STATUS(kAlreadyExists, store_->MakeDirectory(kRootNode, "d", 0755, 0, 0, &attr));
}

TEST_F(NamespaceTest, CreateUnderImageOrMissingParent) {
  NodeId img = MakeImage("a");
  NodeAttr attr;
  EXPECT_STATUS(kNotDirectory, store_->CreateImage(img, "x", 0644, 0, 0, &attr));
  EXPECT_STATUS(kNotFound, store_->CreateImage(987654321, "x", 0644, 0, 0, &attr));
}

TEST_F(NamespaceTest, ReadDirectoryListsEntriesWithKinds) {
  NodeId a = MakeImage("a.img");
  NodeId d = MakeDir("dir");
  NodeId b = MakeImage("b.img", d);
  std::vector<DirEntry> entries;
  ASSERT_OK(store_->ReadDirectory(kRootNode, &entries));
  ASSERT_EQ(entries.size(), 2u);
  std::sort(entries.begin(), entries.end(),
            [](const DirEntry& x, const DirEntry& y) { return x.name < y.name; });
  EXPECT_EQ(entries[0].name, "a.img");
  EXPECT_EQ(entries[0].id, a);
  EXPECT_EQ(entries[0].kind, NodeKind::kImage);
  EXPECT_EQ(entries[1].name, "dir");
  EXPECT_EQ(entries[1].id, d);
  EXPECT_EQ(entries[1].kind, NodeKind::kDirectory);
  ASSERT_OK(store_->ReadDirectory(d, &entries));
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].name, "b.img");
  EXPECT_EQ(entries[0].id, b);
  EXPECT_STATUS(kNotDirectory, store_->ReadDirectory(a, &entries));
}

TEST_F(NamespaceTest, NameValidation) {
  NodeAttr attr;
  EXPECT_STATUS(kInvalidArgument, store_->CreateImage(kRootNode, "", 0644, 0, 0, &attr));
  EXPECT_STATUS(kInvalidArgument, store_->CreateImage(kRootNode, ".", 0644, 0, 0, &attr));
  EXPECT_STATUS(kInvalidArgument, store_->CreateImage(kRootNode, "..", 0644, 0, 0, &attr));
  EXPECT_STATUS(kInvalidArgument, store_->CreateImage(kRootNode, "a/b", 0644, 0, 0, &attr));
  EXPECT_STATUS(kInvalidArgument,
                store_->CreateImage(kRootNode, std::string("a\0b", 3), 0644, 0, 0, &attr));
  EXPECT_STATUS(kInvalidArgument,
                store_->CreateImage(kRootNode, ".snapdisk-x", 0644, 0, 0, &attr));
  EXPECT_STATUS(kInvalidArgument, store_->MakeDirectory(kRootNode, ".snapdisk", 0755, 0, 0, &attr));
  EXPECT_STATUS(kInvalidArgument, store_->MakeDirectory(kRootNode, "..", 0755, 0, 0, &attr));
  EXPECT_STATUS(kNameTooLong,
                store_->CreateImage(kRootNode, std::string(256, 'x'), 0644, 0, 0, &attr));
  EXPECT_STATUS(kNameTooLong,
                store_->MakeDirectory(kRootNode, std::string(256, 'y'), 0755, 0, 0, &attr));
  ASSERT_OK(store_->CreateImage(kRootNode, std::string(255, 'x'), 0644, 0, 0, &attr));
  NodeAttr found;
  ASSERT_OK(store_->Lookup(kRootNode, std::string(255, 'x'), &found));
  EXPECT_EQ(found.id, attr.id);
  // Names that merely look odd are fine.
  ASSERT_OK(store_->CreateImage(kRootNode, "...", 0644, 0, 0, &attr));
  ASSERT_OK(store_->CreateImage(kRootNode, ".hidden", 0644, 0, 0, &attr));
  ASSERT_OK(store_->CreateImage(kRootNode, "snapdisk", 0644, 0, 0, &attr));
  EXPECT_EQ(Names(kRootNode).size(), 4u);

  EXPECT_OK(ValidateName("ok.img"));
  EXPECT_STATUS(kInvalidArgument, ValidateName(""));
  EXPECT_STATUS(kInvalidArgument, ValidateName("."));
  EXPECT_STATUS(kInvalidArgument, ValidateName(".."));
  EXPECT_STATUS(kInvalidArgument, ValidateName("x/y"));
  EXPECT_STATUS(kInvalidArgument, ValidateName(".snapdisk-tmp"));
  EXPECT_STATUS(kNameTooLong, ValidateName(std::string(256, 'n')));
  EXPECT_OK(ValidateName(std::string(255, 'n')));
}

TEST_F(NamespaceTest, RenameValidatesNewName) {
  MakeImage("a");
  EXPECT_STATUS(kInvalidArgument, store_->Rename(kRootNode, "a", kRootNode, "x/y", false));
  EXPECT_STATUS(kInvalidArgument, store_->Rename(kRootNode, "a", kRootNode, ".snapdisk-z", false));
  EXPECT_STATUS(kNameTooLong,
                store_->Rename(kRootNode, "a", kRootNode, std::string(256, 'r'), false));
  EXPECT_EQ(Names(kRootNode), Names_t{"a"});
}

TEST_F(NamespaceTest, RenameSimpleKeepsIdAndData) {
  NodeId a = MakeImage("a.img");
  {
    auto h = OpenLive(a);
    ASSERT_OK(WriteStr(h.get(), 100, "hello"));
  }
  ASSERT_OK(store_->Rename(kRootNode, "a.img", kRootNode, "b.img", false));
  NodeAttr found;
  EXPECT_STATUS(kNotFound, store_->Lookup(kRootNode, "a.img", &found));
  ASSERT_OK(store_->Lookup(kRootNode, "b.img", &found));
  EXPECT_EQ(found.id, a);
  EXPECT_EQ(ReadAll(a).substr(100), "hello");
  EXPECT_EQ(Names(kRootNode), Names_t{"b.img"});
  EXPECT_STATUS(kNotFound, store_->Rename(kRootNode, "a.img", kRootNode, "c.img", false));
}

TEST_F(NamespaceTest, RenameOntoItselfIsANoOp) {
  // rename("a", "a") succeeds and changes nothing (POSIX); it must not
  // "replace" the image with itself and so delete it.
  NodeId a = MakeImage("a");
  {
    auto h = OpenLive(a);
    ASSERT_OK(WriteStr(h.get(), 0, "keep me"));
  }
  ASSERT_OK(store_->Rename(kRootNode, "a", kRootNode, "a", false));
  NodeAttr found;
  ASSERT_OK(store_->Lookup(kRootNode, "a", &found));
  EXPECT_EQ(found.id, a);
  ASSERT_OK(store_->CollectGarbage());
  EXPECT_EQ(ReadAll(a), "keep me");
  EXPECT_EQ(Names(kRootNode), Names_t{"a"});
}

TEST_F(NamespaceTest, RenameNoReplaceRefusesExistingTarget) {
  NodeId a = MakeImage("a");
  NodeId b = MakeImage("b");
  EXPECT_STATUS(kAlreadyExists, store_->Rename(kRootNode, "a", kRootNode, "b", true));
  NodeAttr found;
  ASSERT_OK(store_->Lookup(kRootNode, "a", &found));
  EXPECT_EQ(found.id, a);
  ASSERT_OK(store_->Lookup(kRootNode, "b", &found));
  EXPECT_EQ(found.id, b);
}

TEST_F(NamespaceTest, RenameReplacesTargetImage) {
  NodeId a = MakeImage("a");
  NodeId b = MakeImage("b");
  {
    auto ha = OpenLive(a);
    ASSERT_OK(WriteStr(ha.get(), 0, "AAAA"));
    auto hb = OpenLive(b);
    ASSERT_OK(WriteStr(hb.get(), 0, "BBBBBBBB"));
  }
  ASSERT_OK(store_->Rename(kRootNode, "a", kRootNode, "b", false));
  NodeAttr found;
  ASSERT_OK(store_->Lookup(kRootNode, "b", &found));
  EXPECT_EQ(found.id, a);
  EXPECT_EQ(ReadAll(a), "AAAA");
  EXPECT_EQ(Names(kRootNode), Names_t{"b"});
  StoreStats st;
  ASSERT_OK(store_->GetStats(&st));
  EXPECT_EQ(st.images, 1u);
}

TEST_F(NamespaceTest, RenameOntoImageWithSnapshotsIsBusy) {
  MakeImage("a");
  NodeId b = MakeImage("b");
  Snap(b, "s1");
  EXPECT_STATUS(kBusy, store_->Rename(kRootNode, "a", kRootNode, "b", false));
  EXPECT_EQ(Names(kRootNode), (Names_t{"a", "b"}));
}

TEST_F(NamespaceTest, RenameAcrossDirectoriesKeepsSnapshots) {
  NodeId d1 = MakeDir("d1");
  NodeId d2 = MakeDir("d2");
  NodeId img = MakeImage("x.img", d1);
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 0, "data"));
  }
  SnapshotInfo s = Snap(img, "snap");
  ASSERT_OK(store_->Rename(d1, "x.img", d2, "y.img", false));
  EXPECT_EQ(Names(d1), Names_t{});
  EXPECT_EQ(Names(d2), Names_t{"y.img"});
  NodeId parent = 0;
  ASSERT_OK(store_->Parent(img, &parent));
  EXPECT_EQ(parent, d2);
  EXPECT_EQ(store_->PathOf(img), "d2/y.img");
  std::vector<SnapshotInfo> snaps;
  ASSERT_OK(store_->ListSnapshots(img, &snaps));
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0].id, s.id);
  EXPECT_EQ(ReadAll(img, s.id), "data");

  // Directories move too, with their contents.
  ASSERT_OK(store_->Rename(kRootNode, "d2", d1, "inner", false));
  EXPECT_EQ(store_->PathOf(img), "d1/inner/y.img");
  // A directory cannot move into itself or its descendant.
  EXPECT_FALSE(store_->Rename(kRootNode, "d1", d2, "loop", false).ok());
  EXPECT_EQ(Names(kRootNode), Names_t{"d1"});
}

TEST_F(NamespaceTest, RenameMixingKindsRefused) {
  MakeImage("img");
  NodeId d = MakeDir("dir");
  MakeImage("inside", d);
  // Image onto a directory, directory onto an image: both refused, nothing lost.
  EXPECT_FALSE(store_->Rename(kRootNode, "img", kRootNode, "dir", false).ok());
  EXPECT_FALSE(store_->Rename(kRootNode, "dir", kRootNode, "img", false).ok());
  EXPECT_EQ(Names(kRootNode), (Names_t{"dir", "img"}));
  EXPECT_EQ(Names(d), Names_t{"inside"});
}

TEST_F(NamespaceTest, RemoveImage) {
  NodeId a = MakeImage("a");
  ASSERT_OK(store_->RemoveImage(kRootNode, "a", false));
  EXPECT_EQ(Names(kRootNode), Names_t{});
  NodeAttr attr;
  EXPECT_STATUS(kNotFound, store_->Lookup(kRootNode, "a", &attr));
  EXPECT_STATUS(kNotFound, store_->RemoveImage(kRootNode, "a", false));
  (void)a;
  MakeDir("d");
  EXPECT_STATUS(kIsDirectory, store_->RemoveImage(kRootNode, "d", false));
}

TEST_F(NamespaceTest, RemovedImageStaysUsableThroughOpenHandle) {
  // unlink of an open file: the handle keeps working; space comes back at close.
  NodeId a = MakeImage("a");
  auto h = OpenLive(a);
  ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 1)));
  ASSERT_OK(store_->RemoveImage(kRootNode, "a", false));
  EXPECT_EQ(Names(kRootNode), Names_t{});
  ASSERT_OK(store_->CollectGarbage());
  std::string got;
  ASSERT_OK(ReadStr(h.get(), 0, MiB, &got));
  EXPECT_BYTES_EQ(got, Pattern(MiB, 0, 1), 0);
  ASSERT_OK(WriteStr(h.get(), 10, "still writable"));
  ASSERT_OK(ReadStr(h.get(), 10, 14, &got));
  EXPECT_EQ(got, "still writable");
  // A new image may take the name meanwhile.
  NodeId b = MakeImage("a");
  EXPECT_NE(b, a);
  EXPECT_EQ(ReadAll(b), "");
  h.reset();
  ASSERT_OK(store_->CollectGarbage());
  StoreStats st;
  ASSERT_OK(store_->GetStats(&st));
  EXPECT_EQ(st.stored_bytes, 0u) << "the removed image's data must go once its last handle closes";
  EXPECT_EQ(st.images, 1u);
}

TEST_F(NamespaceTest, RemoveImageWithSnapshotsIsBusyUnlessCascade) {
  NodeId a = MakeImage("a");
  SnapshotInfo s1 = Snap(a, "s1");
  Snap(a, "s2");
  EXPECT_STATUS(kBusy, store_->RemoveImage(kRootNode, "a", false));
  EXPECT_EQ(Names(kRootNode), Names_t{"a"});
  ASSERT_OK(store_->RemoveImage(kRootNode, "a", true));
  EXPECT_EQ(Names(kRootNode), Names_t{});
  SnapshotInfo info;
  EXPECT_STATUS(kNotFound, store_->GetSnapshotById(s1.id, &info));
  StoreStats st;
  ASSERT_OK(store_->GetStats(&st));
  EXPECT_EQ(st.images, 0u);
  EXPECT_EQ(st.snapshots, 0u);
  // The name is free again, and the new image has no snapshots.
  NodeId again = MakeImage("a");
  std::vector<SnapshotInfo> snaps;
  ASSERT_OK(store_->ListSnapshots(again, &snaps));
  EXPECT_TRUE(snaps.empty());
}

TEST_F(NamespaceTest, CascadeRefusesProtectedSnapshot) {
  NodeId a = MakeImage("a");
  Snap(a, "keep");
  Snap(a, "other");
  ASSERT_OK(store_->SetSnapshotProtected(a, "keep", true));
  EXPECT_STATUS(kBusy, store_->RemoveImage(kRootNode, "a", true));
  EXPECT_EQ(Names(kRootNode), Names_t{"a"});
  std::vector<SnapshotInfo> snaps;
  ASSERT_OK(store_->ListSnapshots(a, &snaps));
  EXPECT_EQ(snaps.size(), 2u) << "a refused cascade must delete nothing";
}

TEST_F(NamespaceTest, RemoveDirectory) {
  NodeId d = MakeDir("d");
  MakeImage("x", d);
  EXPECT_STATUS(kNotEmpty, store_->RemoveDirectory(kRootNode, "d"));
  ASSERT_OK(store_->RemoveImage(d, "x", false));
  MakeDir("sub", d);
  EXPECT_STATUS(kNotEmpty, store_->RemoveDirectory(kRootNode, "d"));
  ASSERT_OK(store_->RemoveDirectory(d, "sub"));
  ASSERT_OK(store_->RemoveDirectory(kRootNode, "d"));
  EXPECT_EQ(Names(kRootNode), Names_t{});
  EXPECT_STATUS(kNotFound, store_->RemoveDirectory(kRootNode, "d"));
  MakeImage("img");
  EXPECT_STATUS(kNotDirectory, store_->RemoveDirectory(kRootNode, "img"));
}

TEST_F(NamespaceTest, SetAttrChangesModeOwnerTimes) {
  NodeId a = MakeImage("a");
  AttrChange ch;
  ch.set_mode = true;
  ch.mode = 0600;
  ch.set_uid = true;
  ch.uid = 42;
  ch.set_gid = true;
  ch.gid = 43;
  ch.set_mtime = true;
  ch.mtime = {1700000000, 123456789};
  ch.set_atime = true;
  ch.atime = {1600000000, 5};
  NodeAttr attr;
  ASSERT_OK(store_->SetAttr(a, ch, &attr));
  EXPECT_EQ(attr.mode & 07777, 0600u);
  EXPECT_EQ(attr.uid, 42u);
  EXPECT_EQ(attr.gid, 43u);
  EXPECT_EQ(attr.mtime.sec, 1700000000);
  EXPECT_EQ(attr.mtime.nsec, 123456789u);
  EXPECT_EQ(attr.atime.sec, 1600000000);
}

TEST_F(NamespaceTest, SetAttrExplicitMtimeWinsOverResize) {
  // FUSE may send size and mtime in one SETATTR (e.g. open(O_TRUNC) with
  // utimens, or `touch -d` racing a truncate); an explicit mtime must win over
  // the implicit "now" of the size change.
  NodeId a = MakeImage("a");
  AttrChange ch;
  ch.set_size = true;
  ch.size = MiB;
  ch.set_mtime = true;
  ch.mtime = {1234567890, 42};
  NodeAttr attr;
  ASSERT_OK(store_->SetAttr(a, ch, &attr));
  EXPECT_EQ(attr.size, MiB);
  EXPECT_EQ(attr.mtime.sec, 1234567890);
  EXPECT_EQ(attr.mtime.nsec, 42u);
}

TEST_F(NamespaceTest, ResizeWithoutExplicitMtimeUpdatesIt) {
  NodeId a = MakeImage("a");
  AttrChange ch;
  ch.set_mtime = true;
  ch.mtime = {1000, 0};
  NodeAttr attr;
  ASSERT_OK(store_->SetAttr(a, ch, &attr));
  ASSERT_OK(Resize(a, MiB));
  ASSERT_OK(store_->GetAttr(a, &attr));
  EXPECT_GT(attr.mtime.sec, 1000) << "truncate must update mtime";
}

TEST_F(NamespaceTest, BlockSizeRangeAsDocumentedInOptionsHeader) {
  // options.h: "a power of two from 16 KiB to 256 KiB".
  for (uint32_t bs : {16u * 1024, 32u * 1024, 128u * 1024, 256u * 1024}) {
    TempDir other;
    std::unique_ptr<Store> s;
    EXPECT_OK(Store::Open(TestOptions(bs), other.path() + "/s", &s)) << "block_size " << bs;
    if (!s) continue;
    StoreStats st;
    ASSERT_OK(s->GetStats(&st));
    EXPECT_EQ(st.block_size, bs);
  }
}

TEST_F(NamespaceTest, AttributesPersistAcrossReopen) {
  NodeId d = MakeDir("proj");
  NodeId a = MakeImage("a.img", d);
  ASSERT_OK(Resize(a, 5 * MiB + 3));
  AttrChange ch;  // a separate call: see SetAttrExplicitMtimeWinsOverResize
  ch.set_mode = true;
  ch.mode = 0604;
  ch.set_uid = true;
  ch.uid = 7;
  ch.set_gid = true;
  ch.gid = 8;
  ch.set_mtime = true;
  ch.mtime = {1234567890, 42};
  NodeAttr before;
  ASSERT_OK(store_->SetAttr(a, ch, &before));
  ASSERT_OK(store_->SetXattr(a, "user.note", "kept", false, false));

  Reopen();

  NodeAttr found;
  ASSERT_OK(store_->Lookup(kRootNode, "proj", &found));
  EXPECT_EQ(found.id, d);
  ASSERT_OK(store_->Lookup(d, "a.img", &found));
  EXPECT_EQ(found.id, a);
  NodeAttr after;
  ASSERT_OK(store_->GetAttr(a, &after));
  EXPECT_EQ(after.mode & 07777, 0604u);
  EXPECT_EQ(after.uid, 7u);
  EXPECT_EQ(after.gid, 8u);
  EXPECT_EQ(after.size, 5 * MiB + 3);
  EXPECT_EQ(after.mtime.sec, 1234567890);
  EXPECT_EQ(after.mtime.nsec, 42u);
  std::string v;
  ASSERT_OK(store_->GetXattr(a, "user.note", &v));
  EXPECT_EQ(v, "kept");

  // New nodes after reopen never reuse an existing id.
  NodeId b = MakeImage("b.img");
  EXPECT_NE(b, a);
  EXPECT_NE(b, d);
}

TEST_F(NamespaceTest, Xattrs) {
  NodeId a = MakeImage("a");
  NodeId d = MakeDir("d");
  std::string v;
  EXPECT_STATUS(kNoData, store_->GetXattr(a, "user.x", &v));
  ASSERT_OK(store_->SetXattr(a, "user.x", "1", false, false));
  ASSERT_OK(store_->GetXattr(a, "user.x", &v));
  EXPECT_EQ(v, "1");
  EXPECT_STATUS(kAlreadyExists, store_->SetXattr(a, "user.x", "2", true, false));
  EXPECT_STATUS(kNoData, store_->SetXattr(a, "user.y", "2", false, true));
  ASSERT_OK(store_->SetXattr(a, "user.x", "22", false, true));
  ASSERT_OK(store_->GetXattr(a, "user.x", &v));
  EXPECT_EQ(v, "22");
  // Binary values and empty values survive.
  const std::string bin("\0\1\2\xff", 4);
  ASSERT_OK(store_->SetXattr(a, "user.bin", bin, true, false));
  ASSERT_OK(store_->SetXattr(a, "user.empty", "", true, false));
  ASSERT_OK(store_->SetXattr(d, "user.dir", "on-dir", false, false));

  std::vector<std::string> names;
  ASSERT_OK(store_->ListXattr(a, &names));
  std::sort(names.begin(), names.end());
  // The engine may add read-only user.snapdisk.* facts; user keys must be there.
  std::vector<std::string> user;
  for (auto& n : names)
    if (n.rfind("user.snapdisk.", 0) != 0) user.push_back(n);
  EXPECT_EQ(user, (std::vector<std::string>{"user.bin", "user.empty", "user.x"}));

  Reopen();
  ASSERT_OK(store_->GetXattr(a, "user.bin", &v));
  EXPECT_EQ(v, bin);
  ASSERT_OK(store_->GetXattr(a, "user.empty", &v));
  EXPECT_EQ(v, "");
  ASSERT_OK(store_->GetXattr(d, "user.dir", &v));
  EXPECT_EQ(v, "on-dir");
  EXPECT_STATUS(kNoData, store_->GetXattr(d, "user.x", &v));

  ASSERT_OK(store_->RemoveXattr(a, "user.x"));
  EXPECT_STATUS(kNoData, store_->GetXattr(a, "user.x", &v));
  EXPECT_STATUS(kNoData, store_->RemoveXattr(a, "user.x"));
  // Xattrs go away with their image and do not leak to a new image of that name.
  ASSERT_OK(store_->RemoveImage(kRootNode, "a", false));
  NodeId a2 = MakeImage("a");
  EXPECT_STATUS(kNoData, store_->GetXattr(a2, "user.bin", &v));
}

TEST_F(NamespaceTest, OpenMissingStoreWithoutCreateIsNotFound) {
  TempDir other;
  Options o = TestOptions();
  o.create_if_missing = false;
  std::unique_ptr<Store> s;
  EXPECT_STATUS(kNotFound, Store::Open(o, other.path() + "/none", &s));
}

TEST_F(NamespaceTest, BadBlockSizeRefused) {
  TempDir other;
  for (uint32_t bs : {0u, 4096u, 8192u, 3u * 65536u, 2u << 20}) {
    std::unique_ptr<Store> s;
    EXPECT_STATUS(kInvalidArgument, Store::Open(TestOptions(bs), other.path() + "/s", &s))
        << "block_size " << bs;
  }
}

}  // namespace
}  // namespace snapdisk::test
