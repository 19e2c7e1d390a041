// A full store and damaged block data (DESIGN.md §1 "Errors"): ENOSPC loses
// nothing already acknowledged and the mount keeps working once space
// returns; a checksum mismatch is EIO, never wrong data.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "mount_fixture.h"

namespace snapdisk::testing {
namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB;

class NoSpaceTest : public MountFixture {
 protected:
  uint64_t StoreFilesystemBytes() const override { return 160 * MiB; }
};

TEST_F(NoSpaceTest, FullStoreLosesNothingAcknowledgedAndRecovers) {
  const std::string data = PatternBytes(16 * MiB, 1);
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, data, /*fsync=*/true));
  ASSERT_EQ(mkdir(P(".snapshots/vm1.img/s1").c_str(), 0755), 0) << ErrnoName(errno);

  // Fill the store's 160 MiB file system.
  std::string fill_cmd = "dd if=/dev/urandom of=" + QP("big.img") + " bs=1M count=400 conv=fsync";
  RunResult fill = Run(fill_cmd);
  EXPECT_NE(fill.exit_code, 0) << "writing 400 MiB into a 160 MiB store must fail\n"
                               << Describe(fill_cmd, fill);
  EXPECT_NE(fill.err.find("No space left on device"), std::string::npos)
      << "the error must be ENOSPC\n" << Describe(fill_cmd, fill);

  // What was acknowledged is all there, even while the store is full.
  EXPECT_TRUE(PRead(P("vm1.img"), 0, data.size()) == data) << "fsynced data damaged by ENOSPC";
  EXPECT_TRUE(PRead(P(".snapshots/vm1.img/s1/vm1.img"), 0, data.size()) == data);

  // While full, other operations may fail with ENOSPC but nothing worse.
  for (int i = 0; i < 4; ++i) {
    std::string name = P(".snapshots/vm1.img/while-full-" + std::to_string(i));
    errno = 0;
    if (mkdir(name.c_str(), 0755) != 0) {
      EXPECT_EQ(errno, ENOSPC) << "mkdir snapshot while full: " << ErrnoName(errno);
    }
    errno = 0;
    if (setxattr(P("vm1.img").c_str(), "user.note", "full", 4, 0) != 0) {
      EXPECT_EQ(errno, ENOSPC) << "setxattr while full: " << ErrnoName(errno);
    }
    int fd = open(P("vm1.img").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0) << ErrnoName(errno);
    std::string piece = PatternBytes(4096, 50 + i);
    errno = 0;
    ssize_t n = pwrite(fd, piece.data(), piece.size(), static_cast<off_t>(8 * MiB + i * 65536));
    if (n < 0) {
      EXPECT_EQ(errno, ENOSPC) << "write while full: " << ErrnoName(errno);
    }
    errno = 0;
    if (fsync(fd) != 0) {
      EXPECT_EQ(errno, ENOSPC) << "fsync while full: " << ErrnoName(errno);
    }
    close(fd);
  }

  // Space comes back (perhaps in the background) once the big image goes.
  ASSERT_EQ(unlink(P("big.img").c_str()), 0) << ErrnoName(errno);
  const std::string more = "dd if=/dev/urandom of=" + QP("vm2.img") +
                           " bs=1M count=8 conv=fsync status=none";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  RunResult again;
  for (;;) {
    again = Run(more);
    if (again.ok() || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  EXPECT_TRUE(again.ok()) << "the mount did not accept writes within 30 s of freeing space\n"
                          << Describe(more, again);
  ASSERT_TRUE(PWrite(P("vm1.img"), 1 * MiB, "after ENOSPC", true));
  // Undo the writes made while full (they may or may not have landed).
  ASSERT_TRUE(PWrite(P("vm1.img"), 8 * MiB, data.substr(8 * MiB, 4 * 65536), true));
  EXPECT_EQ(mkdir(P(".snapshots/vm1.img/after-full").c_str(), 0755), 0) << ErrnoName(errno);
  ASSERT_NO_FATAL_FAILURE(Remount());
  std::string want = data;
  want.replace(1 * MiB, 12, "after ENOSPC");
  EXPECT_TRUE(PRead(P("vm1.img"), 0, want.size()) == want) << "after remount";
  EXPECT_TRUE(PRead(P(".snapshots/vm1.img/s1/vm1.img"), 0, data.size()) == data) << "after remount";
}

class CorruptionTest : public MountFixture {};

TEST_F(CorruptionTest, DamagedBlockDataReadsAsEIONeverWrongBytes) {
  // Whole blocks (stored in slots of data/blocks.dat) and 4 KiB pieces of
  // fresh blocks (stored in data/pieces.dat, the piece log): docs/format.md.
  std::string data = PatternBytes(1 * MiB, 2);
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, data, /*fsync=*/false));
  for (uint64_t i = 0; i < 8; ++i) {
    const uint64_t off = 2 * MiB + i * 64 * 1024 + 4096;
    const std::string piece = PatternBytes(4096, 10 + i);
    ASSERT_TRUE(PWrite(P("vm1.img"), off, piece, /*fsync=*/i == 7));
    data.resize(off);
    data += piece;
  }
  ASSERT_NO_FATAL_FAILURE(Unmount());

  // Flip one byte in every 4 KiB piece that holds data in either file.
  std::string piece(4096, '\0');
  for (const char* name : {"blocks.dat", "pieces.dat"}) {
    const std::string file = store() + "/data/" + name;
    int fd = open(file.c_str(), O_RDWR);
    ASSERT_GE(fd, 0) << file << ": " << ErrnoName(errno) << " (layout of docs/format.md changed?)";
    struct stat st;
    ASSERT_EQ(fstat(fd, &st), 0);
    int flipped = 0;
    for (off_t off = 0; off + 4096 <= st.st_size; off += 4096) {
      ASSERT_EQ(pread(fd, piece.data(), 4096, off), 4096);
      if (std::all_of(piece.begin(), piece.end(), [](char c) { return c == 0; })) continue;
      piece[1234] = static_cast<char>(piece[1234] ^ 0x5a);
      ASSERT_EQ(pwrite(fd, piece.data(), 4096, off), 4096);
      ++flipped;
    }
    close(fd);
    EXPECT_GT(flipped, 0) << "no data found in " << file;
  }

  ASSERT_NO_FATAL_FAILURE(Mount());
  int fd = open(P("vm1.img").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  int eio = 0, wrong = 0, other = 0, stored = 0;
  for (uint64_t off = 0; off < data.size(); off += 4096) {
    if (std::all_of(data.begin() + off, data.begin() + off + 4096, [](char c) { return c == 0; })) continue;
    ++stored;
    ssize_t n = pread(fd, piece.data(), 4096, static_cast<off_t>(off));
    if (n == 4096) {
      if (piece.compare(0, 4096, data, off, 4096) != 0) ++wrong;
    } else if (n < 0 && errno == EIO) {
      ++eio;
    } else {
      ++other;
      ADD_FAILURE() << "pread at " << off << ": " << (n < 0 ? ErrnoName(errno) : "short read");
    }
  }
  close(fd);
  EXPECT_EQ(wrong, 0) << "a damaged piece was returned as data instead of EIO";
  EXPECT_EQ(eio, stored) << "every stored piece was damaged, in both files";
  EXPECT_EQ(other, 0);
  std::string log = DaemonLog();
  std::transform(log.begin(), log.end(), log.begin(), ::tolower);
  EXPECT_NE(log.find("checksum"), std::string::npos)
      << "the daemon's log should name the checksum mismatch";
}

}  // namespace
}  // namespace snapdisk::testing
