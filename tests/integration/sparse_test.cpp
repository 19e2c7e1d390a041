// Sparse images: SEEK_DATA/SEEK_HOLE, punch-hole and zero-range, import of a
// sparse host file, and qemu-img on frozen views. DESIGN.md §1 "create a
// disk", "import a disk", "discard", "read a snapshot" (qemu-img compare).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mount_fixture.h"

namespace snapdisk::testing {
namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB;

class SparseTest : public MountFixture {};

// lseek on a fresh descriptor; returns the offset or -1 with errno.
off_t Seek(const std::string& path, off_t offset, int whence) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return -2;
  off_t r = lseek(fd, offset, whence);
  int e = errno;
  close(fd);
  errno = e;
  return r;
}

std::string Zeros(size_t n) { return std::string(n, '\0'); }

TEST_F(SparseTest, SeekDataAndSeekHoleFindTheWrittenBlock) {
  const std::string img = P("vm1.img");
  ASSERT_RUN_OK("truncate -s 64M " + QP("vm1.img"));
  const off_t block_at = 32 * MiB, block_len = 64 * KiB;
  ASSERT_TRUE(PWrite(img, block_at, PatternBytes(block_len, 1), /*fsync=*/true));

  auto check = [&](const std::string& path, const char* what) {
    EXPECT_EQ(Seek(path, 0, SEEK_DATA), block_at) << what << ": " << ErrnoName(errno);
    EXPECT_EQ(Seek(path, 0, SEEK_HOLE), 0) << what;
    EXPECT_EQ(Seek(path, 5 * MiB, SEEK_DATA), block_at) << what;
    EXPECT_EQ(Seek(path, block_at, SEEK_DATA), block_at) << what;
    EXPECT_EQ(Seek(path, block_at + 100, SEEK_DATA), block_at + 100) << what;
    EXPECT_EQ(Seek(path, block_at, SEEK_HOLE), block_at + block_len) << what;
    EXPECT_EQ(Seek(path, 60 * MiB, SEEK_HOLE), static_cast<off_t>(60 * MiB)) << what;
    EXPECT_ERRNO(Seek(path, block_at + block_len, SEEK_DATA), ENXIO);
    EXPECT_ERRNO(Seek(path, 64 * MiB, SEEK_DATA), ENXIO);
    EXPECT_ERRNO(Seek(path, 64 * MiB, SEEK_HOLE), ENXIO);
    EXPECT_ERRNO(Seek(path, 100 * MiB, SEEK_HOLE), ENXIO);
  };
  check(img, "live image");
  ASSERT_EQ(mkdir(P(".snapshots/vm1.img/s1").c_str(), 0755), 0) << ErrnoName(errno);
  check(P(".snapshots/vm1.img/s1/vm1.img"), "frozen view");

  // A small unaligned write later on: data is reported around it, no
  // coarser than 1 MiB (the largest block size).
  ASSERT_TRUE(PWrite(img, 40 * MiB + 8 * KiB, PatternBytes(4 * KiB, 2), true));
  off_t data = Seek(img, block_at + block_len, SEEK_DATA);
  EXPECT_GE(data, static_cast<off_t>(40 * MiB));
  EXPECT_LE(data, static_cast<off_t>(40 * MiB + 8 * KiB));
  off_t hole = Seek(img, 40 * MiB + 8 * KiB, SEEK_HOLE);
  EXPECT_GE(hole, static_cast<off_t>(40 * MiB + 12 * KiB));
  EXPECT_LE(hole, static_cast<off_t>(41 * MiB));
  // The frozen view does not see it.
  EXPECT_ERRNO(Seek(P(".snapshots/vm1.img/s1/vm1.img"), block_at + block_len, SEEK_DATA), ENXIO);
}

TEST_F(SparseTest, PunchHoleAndZeroRangeReadZerosButSnapshotsKeepData) {
  const std::string img = P("vm1.img");
  const std::string data = PatternBytes(4 * MiB, 3);
  ASSERT_TRUE(PWrite(img, 0, data, true));
  ASSERT_EQ(mkdir(P(".snapshots/vm1.img/s1").c_str(), 0755), 0) << ErrnoName(errno);

  ASSERT_RUN_OK("fallocate --punch-hole -o 1M -l 1M " + QP("vm1.img"));
  ASSERT_RUN_OK("fallocate --punch-hole -o " + std::to_string(3 * MiB + 100) + " -l 5000 " + QP("vm1.img"));
  ASSERT_RUN_OK("fallocate --zero-range -o " + std::to_string(2 * MiB + 4096) + " -l 8192 " + QP("vm1.img"));
  std::string want = data;
  want.replace(1 * MiB, 1 * MiB, Zeros(1 * MiB));
  want.replace(3 * MiB + 100, 5000, Zeros(5000));
  want.replace(2 * MiB + 4096, 8192, Zeros(8192));

  auto verify = [&](const char* when) {
    struct stat st;
    ASSERT_EQ(stat(img.c_str(), &st), 0);
    EXPECT_EQ(st.st_size, static_cast<off_t>(4 * MiB)) << when << ": punch-hole changed the size";
    std::string got = PRead(img, 0, 4 * MiB);
    ASSERT_EQ(got.size(), want.size()) << when;
    for (uint64_t off = 0; off < want.size(); off += 4096) {
      ASSERT_TRUE(got.compare(off, 4096, want, off, 4096) == 0)
          << when << ": wrong data in the 4 KiB at " << off;
    }
    EXPECT_EQ(Seek(img, 0, SEEK_HOLE), static_cast<off_t>(1 * MiB)) << when;
    EXPECT_EQ(Seek(img, 1 * MiB, SEEK_DATA), static_cast<off_t>(2 * MiB)) << when;
    EXPECT_TRUE(ReadWholeFile(P(".snapshots/vm1.img/s1/vm1.img")) == data)
        << when << ": discarding live data changed the snapshot";
  };
  verify("before remount");
  ASSERT_NO_FATAL_FAILURE(Remount());
  verify("after remount");
}

TEST_F(SparseTest, ImportOfASparseHostFileKeepsHoles) {
  const std::string host = Scratch("host.raw");
  ASSERT_RUN_OK("truncate -s 16M " + QS("host.raw") + " && "
                "dd if=/dev/urandom of=" + QS("host.raw") + " bs=1M count=1 conv=notrunc status=none && "
                "dd if=/dev/urandom of=" + QS("host.raw") + " bs=1M seek=9 count=1 conv=notrunc status=none && "
                "dd if=/dev/zero of=" + QS("host.raw") + " bs=1M seek=12 count=2 conv=notrunc status=none");
  ASSERT_RUN_OK("cp " + QS("host.raw") + " " + QP("vm1.img") + " && sync " + QP("vm1.img"));
  ExpectSameBytes(P("vm1.img"), host);
  const std::string img = P("vm1.img");
  EXPECT_EQ(Seek(img, 0, SEEK_HOLE), static_cast<off_t>(1 * MiB)) << "the hole after the first MiB";
  EXPECT_EQ(Seek(img, 1 * MiB, SEEK_DATA), static_cast<off_t>(9 * MiB)) << "hole 1M..9M lost";
  EXPECT_EQ(Seek(img, 9 * MiB, SEEK_HOLE), static_cast<off_t>(10 * MiB))
      << "2 MiB of written zeros at 12M should be stored as nothing (zero detection)";
  EXPECT_ERRNO(Seek(img, 10 * MiB, SEEK_DATA), ENXIO);
  ASSERT_NO_FATAL_FAILURE(Remount());
  ExpectSameBytes(P("vm1.img"), host, "after remount");
  EXPECT_EQ(Seek(img, 1 * MiB, SEEK_DATA), static_cast<off_t>(9 * MiB)) << "after remount";
}

TEST_F(SparseTest, QemuImgInfoCompareAndConvertOfAFrozenView) {
  const std::string img = P("vm1.img");
  ASSERT_RUN_OK("qemu-img create -q -f raw " + QP("vm1.img") + " 32M");
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(PWrite(img, static_cast<uint64_t>(i) * 4 * MiB + i * 4096, PatternBytes(100 * KiB, 10 + i)));
  }
  ASSERT_RUN_OK("cp --sparse=always " + QP("vm1.img") + " " + QS("host-copy.raw"));
  ASSERT_EQ(mkdir(P(".snapshots/vm1.img/s1").c_str(), 0755), 0) << ErrnoName(errno);
  ASSERT_TRUE(PWrite(img, 5 * MiB, PatternBytes(64 * KiB, 99)));
  const std::string frozen = P(".snapshots/vm1.img/s1/vm1.img");

  RunResult info = SD_RUN_OK("qemu-img info -f raw --output=json " + ShellQuote(frozen));
  EXPECT_NE(info.out.find("\"virtual-size\": 33554432"), std::string::npos) << info.out;
  RunResult same = Run("qemu-img compare -f raw -F raw " + ShellQuote(frozen) + " " + QS("host-copy.raw"));
  EXPECT_EQ(same.exit_code, 0) << Describe("qemu-img compare frozen host-copy", same);
  RunResult differ = Run("qemu-img compare -f raw -F raw " + QP("vm1.img") + " " + QS("host-copy.raw"));
  EXPECT_EQ(differ.exit_code, 1) << Describe("qemu-img compare live host-copy", differ);

  ASSERT_RUN_OK("qemu-img convert -f raw -O qcow2 " + ShellQuote(frozen) + " " + QS("export.qcow2"));
  RunResult q = Run("qemu-img compare -f qcow2 -F raw " + QS("export.qcow2") + " " + QS("host-copy.raw"));
  EXPECT_EQ(q.exit_code, 0) << Describe("qemu-img compare export.qcow2 host-copy", q);
  // And back in: qemu-img convert into the mount makes an identical image.
  ASSERT_RUN_OK("qemu-img convert -f qcow2 -O raw " + QS("export.qcow2") + " " + QP("imported.img"));
  RunResult back = Run("qemu-img compare -f raw -F raw " + QP("imported.img") + " " + QS("host-copy.raw"));
  EXPECT_EQ(back.exit_code, 0) << Describe("qemu-img compare imported host-copy", back);
}

}  // namespace
}  // namespace snapdisk::testing
