// The kernel caches names and attributes under .snapshots (readdirplus and
// positive entry timeouts for snapshot folders and directories, fs/snapfs.h
// FsConfig). These tests cache a name first (stat, ls -l) and then change it
// by every channel that can: the CLI, rmdir/mv, rm -r, a group snapshot
// through setxattr, renaming or deleting the image. What the kernel shows
// afterwards must be the new truth at once, not after a timeout.
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <string>

#include "mount_fixture.h"

namespace snapdisk::testing {
namespace {

constexpr uint64_t KiB = 1024;

class SnapshotCacheTest : public MountFixture {
 protected:
  void Snapshot(const std::string& image, const std::string& name) {
    std::string dir = P(".snapshots/" + image + "/" + name);
    ASSERT_EQ(mkdir(dir.c_str(), 0755), 0) << "mkdir " << dir << ": " << ErrnoName(errno);
  }
  RunResult Cli(const std::string& args) { return Run(ShellQuote(daemon_bin()) + " " + args); }
  // stat() that must succeed; returns the inode number.
  ino_t Ino(const std::string& rel) {
    struct stat st {};
    EXPECT_EQ(stat(P(rel).c_str(), &st), 0) << rel << ": " << ErrnoName(errno);
    return st.st_ino;
  }
};

TEST_F(SnapshotCacheTest, CliDeleteAndRenameAreSeenAtOnce) {
  ASSERT_TRUE(WriteWholeFile(P("vm1.img"), PatternBytes(64 * KiB, 1)));
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s2"));
  // Cache both names and their attributes.
  SD_RUN_OK("ls -l " + QP(".snapshots/vm1.img"));
  Ino(".snapshots/vm1.img/s1");
  Ino(".snapshots/vm1.img/s2");

  RunResult del = Cli("snapshot delete " + QP("vm1.img@s1"));
  ASSERT_TRUE(del.ok()) << Describe("snapshot delete", del);
  struct stat st;
  EXPECT_ERRNO(stat(P(".snapshots/vm1.img/s1").c_str(), &st), ENOENT);
  EXPECT_EQ(SD_RUN_OK("ls " + QP(".snapshots/vm1.img")).out, "s2\n");

  RunResult ren = Cli("snapshot set " + QP("vm1.img@s2") + " --name nightly");
  ASSERT_TRUE(ren.ok()) << Describe("snapshot set --name", ren);
  EXPECT_ERRNO(stat(P(".snapshots/vm1.img/s2").c_str(), &st), ENOENT);
  EXPECT_EQ(ReadWholeFile(P(".snapshots/vm1.img/nightly/vm1.img")), PatternBytes(64 * KiB, 1));
  EXPECT_EQ(SD_RUN_OK("ls " + QP(".snapshots/vm1.img")).out, "nightly\n");

  // The name is free again: a new snapshot under it is a new directory.
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, "v2"));
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  EXPECT_EQ(PRead(P(".snapshots/vm1.img/s1/vm1.img"), 0, 2), "v2");
}

TEST_F(SnapshotCacheTest, GroupSnapshotReplacingATombstoneIsSeenAtOnce) {
  ASSERT_TRUE(WriteWholeFile(P("vm1.img"), PatternBytes(64 * KiB, 2)));
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "g"));
  const ino_t old_ino = Ino(".snapshots/vm1.img/g");
  // Unlinking the frozen view deletes the snapshot; the directory stays as a
  // tombstone (fs/snapfs.h), and the kernel keeps its name cached.
  ASSERT_EQ(unlink(P(".snapshots/vm1.img/g/vm1.img").c_str()), 0) << ErrnoName(errno);
  EXPECT_EQ(Ino(".snapshots/vm1.img/g"), old_ino);
  EXPECT_EQ(SD_RUN_OK("ls " + QP(".snapshots/vm1.img/g")).out, "");

  // A group snapshot named "g" replaces the tombstone behind the kernel's back.
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, "after"));
  const std::string value = "g";
  ASSERT_EQ(setxattr(P(".snapshots").c_str(), "user.snapdisk.snapshot", value.data(),
                     value.size(), 0),
            0)
      << ErrnoName(errno);
  EXPECT_NE(Ino(".snapshots/vm1.img/g"), old_ino) << "the kernel still shows the tombstone";
  EXPECT_EQ(SD_RUN_OK("ls " + QP(".snapshots/vm1.img/g")).out, "vm1.img\n");
  EXPECT_EQ(PRead(P(".snapshots/vm1.img/g/vm1.img"), 0, 5), "after");
}

TEST_F(SnapshotCacheTest, FolderOfADeletedImageIsNotReusedByANewOne) {
  ASSERT_TRUE(WriteWholeFile(P("vm1.img"), PatternBytes(64 * KiB, 3)));
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  const ino_t old_folder = Ino(".snapshots/vm1.img");
  ASSERT_EQ(rmdir(P(".snapshots/vm1.img/s1").c_str()), 0) << ErrnoName(errno);
  ASSERT_EQ(unlink(P("vm1.img").c_str()), 0) << ErrnoName(errno);
  struct stat st;
  EXPECT_ERRNO(stat(P(".snapshots/vm1.img").c_str(), &st), ENOENT);
  // A new image of the same name gets its own, empty folder.
  ASSERT_TRUE(WriteWholeFile(P("vm1.img"), PatternBytes(64 * KiB, 4)));
  EXPECT_NE(Ino(".snapshots/vm1.img"), old_folder);
  EXPECT_EQ(SD_RUN_OK("ls " + QP(".snapshots/vm1.img")).out, "");
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  EXPECT_EQ(ReadWholeFile(P(".snapshots/vm1.img/s1/vm1.img")), PatternBytes(64 * KiB, 4));
}

TEST_F(SnapshotCacheTest, RenamingOverAnImageDropsItsFolderName) {
  ASSERT_TRUE(WriteWholeFile(P("a.img"), PatternBytes(64 * KiB, 5)));
  ASSERT_TRUE(WriteWholeFile(P("b.img"), PatternBytes(64 * KiB, 6)));
  ASSERT_NO_FATAL_FAILURE(Snapshot("a.img", "sa"));
  const ino_t folder_a = Ino(".snapshots/a.img");
  Ino(".snapshots/b.img");  // cache the folder of the image about to be replaced
  ASSERT_EQ(rename(P("a.img").c_str(), P("b.img").c_str()), 0) << ErrnoName(errno);
  struct stat st;
  EXPECT_ERRNO(stat(P(".snapshots/a.img").c_str(), &st), ENOENT);
  EXPECT_EQ(Ino(".snapshots/b.img"), folder_a);
  EXPECT_EQ(SD_RUN_OK("ls " + QP(".snapshots/b.img")).out, "sa\n");
  EXPECT_EQ(ReadWholeFile(P(".snapshots/b.img/sa/b.img")), PatternBytes(64 * KiB, 5));
}

TEST_F(SnapshotCacheTest, LsLongShowsEachSnapshotsCreationTime) {
  ASSERT_RUN_OK("truncate -s 1M " + QP("vm1.img"));
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "old"));
  sleep(1);
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "new"));
  // readdirplus fills the attributes: ls -lt orders by them, newest first.
  RunResult lt = SD_RUN_OK("ls -lt --time-style=+%s " + QP(".snapshots/vm1.img") +
                           " | tail -n +2 | awk '{print $1, $6, $7}'");
  struct stat old_st {}, new_st {};
  ASSERT_EQ(stat(P(".snapshots/vm1.img/old").c_str(), &old_st), 0);
  ASSERT_EQ(stat(P(".snapshots/vm1.img/new").c_str(), &new_st), 0);
  EXPECT_EQ(lt.out, "drwxr-xr-x " + std::to_string(new_st.st_mtim.tv_sec) + " new\n" +
                        "drwxr-xr-x " + std::to_string(old_st.st_mtim.tv_sec) + " old\n");
  EXPECT_LT(old_st.st_mtim.tv_sec, new_st.st_mtim.tv_sec);
}

TEST_F(SnapshotCacheTest, OnlyTheUserNamespaceExists) {
  ASSERT_RUN_OK("truncate -s 1M " + QP("vm1.img"));
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  char buf[256];
  // ENOTSUP, as setxattr answers for these names: ls -l then stops asking
  // for SELinux labels and ACLs per entry.
  for (const char* path : {"vm1.img", ".snapshots/vm1.img/s1", ".snapshots/vm1.img/s1/vm1.img"}) {
    SCOPED_TRACE(path);
    EXPECT_ERRNO(getxattr(P(path).c_str(), "security.selinux", buf, sizeof buf), ENOTSUP);
    EXPECT_ERRNO(getxattr(P(path).c_str(), "system.posix_acl_access", buf, sizeof buf), ENOTSUP);
  }
  EXPECT_ERRNO(getxattr(P("vm1.img").c_str(), "user.nothing", buf, sizeof buf), ENODATA);
}

}  // namespace
}  // namespace snapdisk::testing
