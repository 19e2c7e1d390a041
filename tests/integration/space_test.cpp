// Space accounting as seen from the host: what the store directory occupies
// (du). DESIGN.md §1 "discard" (space comes back unless a snapshot holds
// it), "delete a snapshot" (space held only by it is reclaimed in the
// background), "delete a disk", and §2 (a snapshot holds about what was
// changed after it, not whole blocks around it).
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "mount_fixture.h"

namespace snapdisk::testing {
namespace {

constexpr uint64_t MiB = 1024 * 1024;

class StoreSpaceTest : public MountFixture {
 protected:
  // Waits (up to 60 s: reclamation may run in the background) until the
  // store occupies at most `limit` bytes; fails with what it saw otherwise.
  void ExpectStoreShrinksTo(uint64_t limit, const std::string& what) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    uint64_t used = 0;
    for (;;) {
      used = StoreDiskUsage();
      if (used <= limit || std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    EXPECT_LE(used, limit) << what << ": the store still occupies " << used / 1024
                           << " KiB after 60 s, expected at most " << limit / 1024 << " KiB";
  }
  void WriteRandom(const std::string& image, int mib) {
    ASSERT_RUN_OK("dd if=/dev/urandom of=" + QP(image) + " bs=1M count=" + std::to_string(mib) +
                  " conv=notrunc,fsync status=none");
  }
};

TEST_F(StoreSpaceTest, PunchHoleGivesSpaceBack) {
  ASSERT_NO_FATAL_FAILURE(WriteRandom("vm1.img", 32));
  uint64_t full = StoreDiskUsage();
  auto start = std::chrono::steady_clock::now();
  ASSERT_RUN_OK("fallocate --punch-hole -o 0 -l 32M " + QP("vm1.img"));
  auto took = std::chrono::steady_clock::now() - start;
  // A native file system punches 32 MiB in milliseconds; TRIM of a whole
  // guest disk must not take hours. (Generous: CI machines are shared.)
  EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(took).count(), 20000)
      << "fallocate --punch-hole of 32 MiB took "
      << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
  ASSERT_RUN_OK("sync " + QP("vm1.img"));
  ExpectStoreShrinksTo(full - 24 * MiB, "punching out 32 MiB of 32 MiB");
}

TEST_F(StoreSpaceTest, DeletingASnapshotReclaimsWhatOnlyItHeld) {
  ASSERT_NO_FATAL_FAILURE(WriteRandom("vm1.img", 32));
  ASSERT_EQ(mkdir(P(".snapshots/vm1.img/s1").c_str(), 0755), 0) << ErrnoName(errno);
  ASSERT_NO_FATAL_FAILURE(WriteRandom("vm1.img", 32));  // the snapshot now holds 32 MiB alone
  uint64_t both = StoreDiskUsage();
  ASSERT_EQ(rmdir(P(".snapshots/vm1.img/s1").c_str()), 0) << ErrnoName(errno);
  ExpectStoreShrinksTo(both - 24 * MiB, "deleting a snapshot that alone held 32 MiB");
}

TEST_F(StoreSpaceTest, RmOfAnImageReclaimsItsSpace) {
  ASSERT_NO_FATAL_FAILURE(WriteRandom("vm1.img", 32));
  uint64_t full = StoreDiskUsage();
  ASSERT_EQ(unlink(P("vm1.img").c_str()), 0) << ErrnoName(errno);
  ExpectStoreShrinksTo(full - 24 * MiB, "deleting a 32 MiB image");
}

TEST_F(StoreSpaceTest, SmallWritesAfterASnapshotDoNotCopyWholeBlocks) {
  ASSERT_NO_FATAL_FAILURE(WriteRandom("vm1.img", 32));
  ASSERT_EQ(mkdir(P(".snapshots/vm1.img/s1").c_str(), 0755), 0) << ErrnoName(errno);
  uint64_t before = StoreDiskUsage();
  // 256 scattered 4 KiB writes, one per 128 KiB: 1 MiB of changes that touch
  // 256 different blocks (16 MiB of 64 KiB blocks, 32 MiB of 128 KiB ones).
  ASSERT_RUN_OK("for i in $(seq 0 255); do dd if=/dev/urandom of=" + QP("vm1.img") +
                " bs=4k count=1 seek=$((i * 32 + 5)) conv=notrunc status=none || exit 1; done && sync " +
                QP("vm1.img"));
  uint64_t after = StoreDiskUsage();
  EXPECT_LT(after, before + 6 * MiB)
      << "1 MiB of 4 KiB writes after a snapshot grew the store by " << (after - before) / 1024
      << " KiB: whole blocks were copied";
}

}  // namespace
}  // namespace snapdisk::testing
