// Crashes of the daemon (SIGKILL): fsync is a durability point and a
// snapshot is durable once mkdir returns (DESIGN.md §1 "use a disk", §2
// "Every write the caller has seen acknowledged by fsync...").
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "mount_fixture.h"

namespace snapdisk::testing {
namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB;

class CrashTest : public MountFixture {};

TEST_F(CrashTest, FsyncedDataSurvivesKill9) {
  ASSERT_RUN_OK("head -c 16777216 /dev/urandom > " + QS("pattern"));
  const std::string sha = Sha256(Scratch("pattern"));
  ASSERT_RUN_OK("truncate -s 64M " + QP("vm1.img"));
  ASSERT_RUN_OK("dd if=" + QS("pattern") + " of=" + QP("vm1.img") +
                " bs=1M conv=fsync,notrunc status=none");
  // Small unaligned writes with fsync, by syscalls.
  const std::string small = PatternBytes(10000, 1);
  ASSERT_TRUE(PWrite(P("vm1.img"), 40 * MiB + 123, small, /*fsync=*/true));
  ASSERT_NO_FATAL_FAILURE(Kill9());
  ASSERT_NO_FATAL_FAILURE(Mount());
  struct stat st;
  ASSERT_EQ(stat(P("vm1.img").c_str(), &st), 0) << ErrnoName(errno);
  EXPECT_EQ(st.st_size, static_cast<off_t>(64 * MiB));
  EXPECT_EQ(Sha256(P("vm1.img")).size(), 64u);
  RunResult head = SD_RUN_OK("head -c 16777216 " + QP("vm1.img") + " | sha256sum");
  EXPECT_EQ(head.out.substr(0, 64), sha) << "fsynced data lost or damaged by a crash";
  EXPECT_TRUE(PRead(P("vm1.img"), 40 * MiB + 123, small.size()) == small);
}

TEST_F(CrashTest, SnapshotTakenBeforeTheKillReadsTheSameAfter) {
  const std::string img = P("vm1.img");
  ASSERT_TRUE(PWrite(img, 0, PatternBytes(8 * MiB, 2), true));
  ASSERT_EQ(mkdir(P(".snapshots/vm1.img/s1").c_str(), 0755), 0) << ErrnoName(errno);
  ASSERT_RUN_OK("cp " + QP(".snapshots/vm1.img/s1/vm1.img") + " " + QS("s1-copy"));
  const std::string sha = Sha256(Scratch("s1-copy"));
  // Writes after the snapshot, some synced, some not.
  ASSERT_TRUE(PWrite(img, 1 * MiB, PatternBytes(1 * MiB, 3), true));
  ASSERT_TRUE(PWrite(img, 4 * MiB + 7, PatternBytes(300 * KiB, 4), false));
  ASSERT_NO_FATAL_FAILURE(Kill9());
  ASSERT_NO_FATAL_FAILURE(Mount());
  RunResult ls = SD_RUN_OK("ls " + QP(".snapshots/vm1.img"));
  EXPECT_EQ(ls.out, "s1\n") << "the snapshot was lost in the crash";
  EXPECT_EQ(Sha256(P(".snapshots/vm1.img/s1/vm1.img")), sha);
  EXPECT_TRUE(PRead(img, 1 * MiB, 1 * MiB) == PatternBytes(1 * MiB, 3));
  // Unsynced data is either there or not, but what is outside it is intact.
  EXPECT_TRUE(PRead(img, 0, 1 * MiB) == PatternBytes(8 * MiB, 2).substr(0, 1 * MiB));
}

TEST_F(CrashTest, RepeatedKillsWhileWriting) {
  const std::string img = P("vm1.img");
  ASSERT_RUN_OK("truncate -s 32M " + QP("vm1.img"));
  std::string model(32 * MiB, '\0');  // what every fsync so far promised
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 8; ++i) {
      uint64_t off = (static_cast<uint64_t>(round) * 8 + i) * 1 * MiB + round * 512 + i;
      std::string d = PatternBytes(64 * KiB + 17, 100 * round + i);
      ASSERT_TRUE(PWrite(img, off, d, /*fsync=*/true));
      model.replace(off, d.size(), d);
    }
    // A writer busy with unsynced writes elsewhere when the daemon dies.
    std::atomic<bool> stop{false};
    std::thread writer([&] {
      int fd = open(img.c_str(), O_WRONLY);
      if (fd < 0) return;
      std::string junk = PatternBytes(256 * KiB, 999);
      for (int j = 0; !stop && j < 100000; ++j) {
        if (pwrite(fd, junk.data(), junk.size(), static_cast<off_t>(30 * MiB)) < 0) break;
      }
      close(fd);
    });
    std::this_thread::yield();
    ASSERT_NO_FATAL_FAILURE(Kill9());
    stop = true;
    writer.join();
    ASSERT_NO_FATAL_FAILURE(Mount());
    std::string got = PRead(img, 0, 24 * MiB);
    ASSERT_EQ(got.size(), 24 * MiB);
    for (uint64_t off = 0; off < 24 * MiB; off += 64 * KiB) {
      ASSERT_TRUE(got.compare(off, 64 * KiB, model, off, 64 * KiB) == 0)
          << "round " << round << ": fsynced data at " << off << " is wrong after the crash";
    }
  }
  // The store is healthy: a clean unmount (checked in TearDown) and new writes.
  ASSERT_TRUE(PWrite(img, 0, "after crashes", true));
  ASSERT_NO_FATAL_FAILURE(Remount());
  EXPECT_EQ(PRead(img, 0, 13), "after crashes");
}

}  // namespace
}  // namespace snapdisk::testing
