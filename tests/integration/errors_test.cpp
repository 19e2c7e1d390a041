// Errors are standard errno values (DESIGN.md §1, "Errors are..."), checked
// with direct syscalls so the errno is the kernel's answer, not a tool's.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>

#include "mount_fixture.h"

namespace snapdisk::testing {
namespace {

constexpr uint64_t MiB = 1024 * 1024;

class ErrorsTest : public MountFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(MountFixture::SetUp());
    ASSERT_TRUE(WriteWholeFile(P("vm1.img"), PatternBytes(1 * MiB, 1)));
  }

  // Runs `snapdisk mount STORE MNT [-f]` expecting it to fail; returns what
  // it did and how long it took, and unmounts anything it left behind.
  RunResult TryMount(const std::string& store, const std::string& mnt, bool foreground,
                     std::chrono::milliseconds* elapsed) {
    std::string cmd = ShellQuote(daemon_bin()) + " mount " + ShellQuote(store) + " " +
                      ShellQuote(mnt) + (foreground ? " -f" : "");
    auto start = std::chrono::steady_clock::now();
    RunResult r = Run(cmd, std::chrono::seconds(15));
    *elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    if (IsMountpoint(mnt)) {
      ADD_FAILURE() << cmd << " mounted " << mnt << " although it should have failed";
      Run("fusermount3 -u " + ShellQuote(mnt) + " || fusermount3 -u -z " + ShellQuote(mnt));
    }
    return r;
  }
};

int OpenAndClose(const std::string& path, int flags) {
  int fd = open(path.c_str(), flags, 0644);
  if (fd >= 0) close(fd);
  return fd < 0 ? -1 : 0;
}

TEST_F(ErrorsTest, DuplicateSnapshotIsEEXIST) {
  ASSERT_EQ(mkdir(P(".snapshots/vm1.img/s1").c_str(), 0755), 0) << ErrnoName(errno);
  EXPECT_ERRNO(mkdir(P(".snapshots/vm1.img/s1").c_str(), 0755), EEXIST);
  RunResult ls = SD_RUN_OK("ls " + QP(".snapshots/vm1.img"));
  EXPECT_EQ(ls.out, "s1\n");
}

TEST_F(ErrorsTest, BadSnapshotNames) {
  const std::string dir = P(".snapshots/vm1.img/");
  EXPECT_ERRNO_IN(mkdir((dir + ".").c_str(), 0755), EEXIST, EINVAL);
  EXPECT_ERRNO_IN(mkdir((dir + "..").c_str(), 0755), EEXIST, EINVAL);
  EXPECT_ERRNO(mkdir((dir + std::string(256, 'n')).c_str(), 0755), ENAMETOOLONG);
  EXPECT_ERRNO(mkdir((dir + ".snapdisk-x").c_str(), 0755), EINVAL);
  EXPECT_ERRNO(mkdir((dir + ".snapdisk").c_str(), 0755), EINVAL);
  // 255 bytes is the longest valid name.
  const std::string longest = std::string(255, 'l');
  EXPECT_EQ(mkdir((dir + longest).c_str(), 0755), 0) << ErrnoName(errno);
  RunResult ls = SD_RUN_OK("ls " + QP(".snapshots/vm1.img"));
  EXPECT_EQ(ls.out, longest + "\n") << "only the valid name may exist";
  EXPECT_EQ(rmdir((dir + longest).c_str()), 0) << ErrnoName(errno);
}

TEST_F(ErrorsTest, BadImageAndDirectoryNames) {
  EXPECT_ERRNO(OpenAndClose(P(".snapdisk-x"), O_WRONLY | O_CREAT), EINVAL);
  EXPECT_ERRNO(mkdir(P(".snapdisk-dir").c_str(), 0755), EINVAL);
  EXPECT_ERRNO(OpenAndClose(P(std::string(256, 'i')), O_WRONLY | O_CREAT), ENAMETOOLONG);
  EXPECT_EQ(OpenAndClose(P(std::string(255, 'i')), O_WRONLY | O_CREAT), 0) << ErrnoName(errno);
  EXPECT_ERRNO(rename(P("vm1.img").c_str(), P(".snapdisk-y").c_str()), EINVAL);
  struct stat st;
  EXPECT_EQ(stat(P("vm1.img").c_str(), &st), 0) << "a refused rename must leave the image";
}

TEST_F(ErrorsTest, FrozenViewIsReadOnlyEvenForRoot) {
  ASSERT_EQ(mkdir(P(".snapshots/vm1.img/s1").c_str(), 0755), 0) << ErrnoName(errno);
  const std::string frozen = P(".snapshots/vm1.img/s1/vm1.img");
  EXPECT_ERRNO(OpenAndClose(frozen, O_WRONLY), EROFS);
  EXPECT_ERRNO(OpenAndClose(frozen, O_RDWR), EROFS);
  EXPECT_ERRNO(OpenAndClose(frozen, O_WRONLY | O_TRUNC), EROFS);
  EXPECT_ERRNO_IN(truncate(frozen.c_str(), 0), EROFS, EACCES);
  EXPECT_ERRNO_IN(chmod(frozen.c_str(), 0666), EROFS, EACCES, EPERM);
  // (unlink of the frozen view is not tested: `rm -r` of a snapshot folder
  // unlinks it first, so the file system may treat it as deleting the snapshot.)
  EXPECT_EQ(OpenAndClose(frozen, O_RDONLY), 0) << ErrnoName(errno);
  EXPECT_TRUE(ReadWholeFile(frozen) == PatternBytes(1 * MiB, 1)) << "the frozen view changed";
  // dd through the shell fails too.
  RunResult dd = Run("dd if=/dev/zero of=" + ShellQuote(frozen) + " bs=4k count=1 conv=notrunc");
  EXPECT_NE(dd.exit_code, 0) << Describe("dd", dd);
}

TEST_F(ErrorsTest, NothingButSnapshotsCanBeCreatedUnderSnapshots) {
  ASSERT_EQ(mkdir(P(".snapshots/vm1.img/s1").c_str(), 0755), 0) << ErrnoName(errno);
  EXPECT_ERRNO(OpenAndClose(P(".snapshots/new.img"), O_WRONLY | O_CREAT), EROFS);
  EXPECT_ERRNO(OpenAndClose(P(".snapshots/vm1.img/new.img"), O_WRONLY | O_CREAT), EROFS);
  EXPECT_ERRNO(OpenAndClose(P(".snapshots/vm1.img/s1/new.img"), O_WRONLY | O_CREAT), EROFS);
  EXPECT_ERRNO_IN(mkdir(P(".snapshots/vm1.img/s1/sub").c_str(), 0755), EROFS, EACCES);
  EXPECT_ERRNO_IN(mkdir(P(".snapshots/newdir").c_str(), 0755), EROFS, EACCES);
  EXPECT_ERRNO_IN(rename(P("vm1.img").c_str(), P(".snapshots/vm1.img/s1/moved.img").c_str()),
                  EROFS, EACCES, EXDEV);
  EXPECT_ERRNO_IN(symlink("x", P(".snapshots/link").c_str()), EROFS, EACCES, EPERM);
  EXPECT_ERRNO_IN(rmdir(P(".snapshots").c_str()), EROFS, EACCES, EBUSY, EPERM, ENOTEMPTY);
  RunResult find = SD_RUN_OK("cd " + QP("") + " && find .snapshots | sort");
  EXPECT_EQ(find.out, ".snapshots\n.snapshots/vm1.img\n.snapshots/vm1.img/s1\n"
                      ".snapshots/vm1.img/s1/vm1.img\n");
}

TEST_F(ErrorsTest, RmOfAnImageWithSnapshotsIsEBUSY) {
  ASSERT_EQ(mkdir(P(".snapshots/vm1.img/s1").c_str(), 0755), 0) << ErrnoName(errno);
  EXPECT_ERRNO(unlink(P("vm1.img").c_str()), EBUSY);
  RunResult rm = Run("rm -f " + QP("vm1.img"));
  EXPECT_NE(rm.exit_code, 0) << "rm -f of an image with snapshots must fail";
  EXPECT_NE(rm.err.find("busy"), std::string::npos) << Describe("rm -f", rm);
  // Replacing it by rename is a deletion too.
  ASSERT_TRUE(WriteWholeFile(P("other.img"), "other"));
  EXPECT_ERRNO(rename(P("other.img").c_str(), P("vm1.img").c_str()), EBUSY);
  EXPECT_TRUE(ReadWholeFile(P("vm1.img")) == PatternBytes(1 * MiB, 1)) << "the image must survive";
  ASSERT_EQ(rmdir(P(".snapshots/vm1.img/s1").c_str()), 0) << ErrnoName(errno);
  EXPECT_EQ(unlink(P("vm1.img").c_str()), 0) << ErrnoName(errno) << " once it has no snapshots";
}

TEST_F(ErrorsTest, MissingThingsAreENOENT) {
  struct stat st;
  EXPECT_ERRNO(rmdir(P(".snapshots/vm1.img/nope").c_str()), ENOENT);
  EXPECT_ERRNO(mkdir(P(".snapshots/nope.img/s1").c_str(), 0755), ENOENT);
  EXPECT_ERRNO(stat(P(".snapshots/vm1.img/nope/vm1.img").c_str(), &st), ENOENT);
  EXPECT_ERRNO(OpenAndClose(P("nope.img"), O_RDONLY), ENOENT);
  EXPECT_ERRNO(unlink(P("nope.img").c_str()), ENOENT);
  EXPECT_ERRNO(rename(P(".snapshots/vm1.img/nope").c_str(), P(".snapshots/vm1.img/x").c_str()),
               ENOENT);
  EXPECT_ERRNO(getxattr(P("vm1.img").c_str(), "user.nope", nullptr, 0), ENODATA);
}

TEST_F(ErrorsTest, SecondMountOfAStoreInUseFailsAtOnce) {
  const std::string mnt2 = root() + "/mnt2";
  ASSERT_EQ(mkdir(mnt2.c_str(), 0755), 0);
  for (bool foreground : {true, false}) {
    std::chrono::milliseconds elapsed{};
    RunResult r = TryMount(store(), mnt2, foreground, &elapsed);
    std::string what = foreground ? "with -f" : "daemonizing";
    EXPECT_NE(r.exit_code, 0) << what << ": a second mount must fail\n" << Describe("mount", r);
    EXPECT_FALSE(r.timed_out) << what;
    EXPECT_LT(elapsed.count(), 5000) << what << ": a second mount must fail at once";
    EXPECT_NE((r.out + r.err).find(store()), std::string::npos)
        << what << ": the message must name the store\n" << Describe("mount", r);
    EXPECT_NE((r.out + r.err).find("mounted at " + mountpoint() + ": unmount it first"), std::string::npos)
        << what << ": the message must say where the store is mounted\n" << Describe("mount", r);
  }
  // The first mount is unharmed.
  EXPECT_TRUE(ReadWholeFile(P("vm1.img")) == PatternBytes(1 * MiB, 1));
}

// A store whose LOCK another process holds without a mount (a daemon still
// syncing after its unmount, or an offline fsck; here the test itself): the
// refusal says so instead of asking for an unmount that already happened.
TEST_F(ErrorsTest, StoreHeldWithoutAMountSaysSo) {
  ASSERT_NO_FATAL_FAILURE(Unmount());
  const int lock = open((store() + "/LOCK").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(lock, 0) << ErrnoName(errno);
  ASSERT_EQ(flock(lock, LOCK_EX | LOCK_NB), 0) << ErrnoName(errno);
  std::chrono::milliseconds elapsed{};
  RunResult r = TryMount(store(), mountpoint(), true, &elapsed);
  close(lock);  // releases the lock
  EXPECT_NE(r.exit_code, 0) << Describe("mount of a locked store", r);
  EXPECT_LT(elapsed.count(), 5000);
  const std::string msg = r.out + r.err;
  EXPECT_NE(msg.find(store()), std::string::npos) << "the message must name the store\n" << msg;
  EXPECT_NE(msg.find("is not mounted here"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("unmount it first"), std::string::npos) << msg;
  // Once the holder is gone the store mounts, unharmed.
  ASSERT_NO_FATAL_FAILURE(Mount());
  EXPECT_TRUE(ReadWholeFile(P("vm1.img")) == PatternBytes(1 * MiB, 1));
}

TEST_F(ErrorsTest, DamagedStoreFailsAtOnce) {
  ASSERT_NO_FATAL_FAILURE(Unmount());
  const std::string mnt2 = root() + "/mnt2";
  ASSERT_EQ(mkdir(mnt2.c_str(), 0755), 0);
  // Not a directory at all.
  const std::string not_a_store = Scratch("not-a-store");
  ASSERT_TRUE(WriteWholeFile(not_a_store, "hello"));
  std::chrono::milliseconds elapsed{};
  RunResult r = TryMount(not_a_store, mnt2, true, &elapsed);
  EXPECT_NE(r.exit_code, 0) << Describe("mount of a regular file", r);
  EXPECT_LT(elapsed.count(), 5000);
  EXPECT_NE((r.out + r.err).find(not_a_store), std::string::npos)
      << "the message must name the store\n" << Describe("mount", r);
  // Every file of a real store overwritten with garbage.
  ASSERT_RUN_OK("find " + ShellQuote(store()) +
                " -type f -exec sh -c 'head -c 4096 /dev/urandom > \"$1\"' sh {} \\;");
  for (bool foreground : {true, false}) {
    r = TryMount(store(), mnt2, foreground, &elapsed);
    std::string what = foreground ? "with -f" : "daemonizing";
    EXPECT_NE(r.exit_code, 0) << what << ": a damaged store must not mount\n" << Describe("mount", r);
    EXPECT_LT(elapsed.count(), 5000) << what;
    EXPECT_NE((r.out + r.err).find(store()), std::string::npos)
        << what << ": the message must name the store\n" << Describe("mount", r);
  }
}

}  // namespace
}  // namespace snapdisk::testing
