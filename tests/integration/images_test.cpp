// Live images: create, write, resize, attributes, rename, projects, delete.
// DESIGN.md §1 "create a disk", "use a disk", "resize", "rename a disk",
// "delete a disk"; results are compared with what a native file does.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "mount_fixture.h"

namespace snapdisk::testing {
namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB;

class ImagesTest : public MountFixture {};

std::string Zeros(size_t n) { return std::string(n, '\0'); }

TEST_F(ImagesTest, TruncateCreatesSparseImageThatReadsZeros) {
  uint64_t before = StoreDiskUsage();
  ASSERT_RUN_OK("truncate -s 1G " + QP("vm1.img"));
  struct stat st;
  ASSERT_EQ(stat(P("vm1.img").c_str(), &st), 0) << ErrnoName(errno);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_size, static_cast<off_t>(1024 * MiB));
  SD_RUN_OK("cmp -n " + std::to_string(64 * MiB) + " " + QP("vm1.img") + " /dev/zero");
  EXPECT_EQ(PRead(P("vm1.img"), 512 * MiB + 12345, 1 * MiB), Zeros(1 * MiB));
  EXPECT_EQ(PRead(P("vm1.img"), 1024 * MiB - 4096, 8192), Zeros(4096)) << "read at the end";
  EXPECT_EQ(PRead(P("vm1.img"), 1024 * MiB, 4096), "") << "read past the end";
  uint64_t after = StoreDiskUsage();
  EXPECT_LT(after, before + 16 * MiB)
      << "a 1 GiB unwritten image should take no space; store grew from " << before << " to "
      << after << " bytes";
}

TEST_F(ImagesTest, OtherWaysToCreateADisk) {
  ASSERT_RUN_OK("fallocate -l 32M " + QP("falloc.img"));
  ASSERT_RUN_OK("qemu-img create -q -f raw " + QP("qemu.img") + " 48M");
  struct stat st;
  ASSERT_EQ(stat(P("falloc.img").c_str(), &st), 0) << ErrnoName(errno);
  EXPECT_EQ(st.st_size, static_cast<off_t>(32 * MiB));
  ASSERT_EQ(stat(P("qemu.img").c_str(), &st), 0) << ErrnoName(errno);
  EXPECT_EQ(st.st_size, static_cast<off_t>(48 * MiB));
  SD_RUN_OK("cmp -n " + std::to_string(32 * MiB) + " " + QP("falloc.img") + " /dev/zero");
  SD_RUN_OK("cmp -n " + std::to_string(48 * MiB) + " " + QP("qemu.img") + " /dev/zero");
  // fallocate on an existing image extends it, keeping data.
  ASSERT_TRUE(PWrite(P("falloc.img"), 100, "hello"));
  ASSERT_RUN_OK("fallocate -o 32M -l 16M " + QP("falloc.img"));
  ASSERT_EQ(stat(P("falloc.img").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(48 * MiB));
  EXPECT_EQ(PRead(P("falloc.img"), 100, 5), "hello");
}

TEST_F(ImagesTest, WritesAtOffsetsMatchANativeFile) {
  const std::string img = P("vm1.img"), ref = Scratch("ref.img");
  ASSERT_RUN_OK("truncate -s 8M " + QP("vm1.img") + " " + QS("ref.img"));
  struct Op { uint64_t offset; size_t len; };
  // Aligned, unaligned, crossing 4 KiB and 64 KiB boundaries, growing the file.
  const Op ops[] = {{0, 4096},          {12305, 1000},     {64 * KiB - 100, 200},
                    {1 * MiB + 7, 300000}, {3 * MiB, 1 * MiB}, {8 * MiB - 1, 1},
                    {9 * MiB + 5, 777}, {4096, 1}};
  uint64_t seed = 1;
  for (const Op& op : ops) {
    std::string data = PatternBytes(op.len, seed++);
    ASSERT_TRUE(PWrite(img, op.offset, data));
    ASSERT_TRUE(PWrite(ref, op.offset, data));
  }
  // dd in place, as a user would.
  ASSERT_RUN_OK("head -c 20480 /dev/urandom > " + QS("chunk"));
  for (const std::string& target : {QP("vm1.img"), QS("ref.img")}) {
    ASSERT_RUN_OK("dd if=" + QS("chunk") + " of=" + target +
                  " bs=4k seek=300 conv=notrunc status=none");
    ASSERT_RUN_OK("dd if=" + QS("chunk") + " of=" + target +
                  " bs=512 seek=3 count=7 conv=notrunc status=none");
  }
  struct stat a, b;
  ASSERT_EQ(stat(img.c_str(), &a), 0);
  ASSERT_EQ(stat(ref.c_str(), &b), 0);
  EXPECT_EQ(a.st_size, b.st_size);
  ExpectSameBytes(img, ref);
  EXPECT_EQ(PRead(img, 12305, 1000), PRead(ref, 12305, 1000));
  SD_RUN_OK("dd if=" + QP("vm1.img") + " bs=4k skip=300 count=5 status=none | cmp - " + QS("chunk"));
  ASSERT_NO_FATAL_FAILURE(Remount());
  ExpectSameBytes(img, ref);
}

TEST_F(ImagesTest, ResizeGrowReadsZerosShrinkDropsData) {
  const std::string img = P("vm1.img");
  const std::string data = PatternBytes(4 * MiB, 7);
  ASSERT_TRUE(WriteWholeFile(img, data));
  const uint64_t cut = 3 * MiB + 123;  // inside a 4 KiB page and a block
  ASSERT_RUN_OK("truncate -s " + std::to_string(cut) + " " + QP("vm1.img"));
  struct stat st;
  ASSERT_EQ(stat(img.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), cut);
  EXPECT_TRUE(PRead(img, 0, 4 * MiB) == data.substr(0, cut)) << "shrink changed kept data";
  ASSERT_RUN_OK("truncate -s 16M " + QP("vm1.img"));
  ASSERT_EQ(stat(img.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 16 * MiB);
  EXPECT_TRUE(PRead(img, 0, cut) == data.substr(0, cut));
  EXPECT_TRUE(PRead(img, cut, 16 * MiB - cut) == Zeros(16 * MiB - cut))
      << "data cut by the shrink came back after growing";
  ASSERT_NO_FATAL_FAILURE(Remount());
  EXPECT_TRUE(PRead(img, 0, cut) == data.substr(0, cut));
  EXPECT_TRUE(PRead(img, cut, 16 * MiB - cut) == Zeros(16 * MiB - cut))
      << "after remount: data cut by the shrink came back";
  // Shrink to zero and grow again.
  ASSERT_RUN_OK("truncate -s 0 " + QP("vm1.img") + " && truncate -s 1M " + QP("vm1.img"));
  EXPECT_TRUE(PRead(img, 0, 1 * MiB) == Zeros(1 * MiB));
}

TEST_F(ImagesTest, ModeOwnerTimesPersistAcrossRemount) {
  ASSERT_RUN_OK("truncate -s 1M " + QP("vm1.img"));
  ASSERT_RUN_OK("mkdir " + QP("team-a"));
  ASSERT_RUN_OK("chmod 640 " + QP("vm1.img"));
  ASSERT_RUN_OK("chmod 750 " + QP("team-a"));
  ASSERT_RUN_OK("chown 1234:5678 " + QP("vm1.img"));
  ASSERT_RUN_OK("touch -d '2020-01-02 03:04:05 UTC' " + QP("vm1.img"));
  const time_t expected_mtime = 1577934245;
  auto check = [&](const char* when) {
    struct stat st;
    ASSERT_EQ(stat(P("vm1.img").c_str(), &st), 0) << when;
    EXPECT_EQ(st.st_mode & 07777, 0640u) << when;
    EXPECT_EQ(st.st_uid, 1234u) << when;
    EXPECT_EQ(st.st_gid, 5678u) << when;
    EXPECT_EQ(st.st_mtim.tv_sec, expected_mtime) << when;
    EXPECT_EQ(st.st_atim.tv_sec, expected_mtime) << when;
    ASSERT_EQ(stat(P("team-a").c_str(), &st), 0) << when;
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << when;
    EXPECT_EQ(st.st_mode & 07777, 0750u) << when;
  };
  check("before remount");
  ASSERT_NO_FATAL_FAILURE(Remount());
  check("after remount");
  // Writing updates mtime.
  time_t now = time(nullptr);
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, "x"));
  struct stat st;
  ASSERT_EQ(stat(P("vm1.img").c_str(), &st), 0);
  EXPECT_GE(st.st_mtim.tv_sec, now - 2) << "a write did not update mtime";
}

TEST_F(ImagesTest, MvRenamesAndMovesBetweenProjects) {
  const std::string data = PatternBytes(2 * MiB + 5, 11);
  ASSERT_TRUE(WriteWholeFile(P("vm1.img"), data));
  ASSERT_RUN_OK("mv " + QP("vm1.img") + " " + QP("vm9.img"));
  struct stat st;
  EXPECT_ERRNO(stat(P("vm1.img").c_str(), &st), ENOENT);
  EXPECT_TRUE(ReadWholeFile(P("vm9.img")) == data);
  ASSERT_RUN_OK("mkdir " + QP("team-a") + " && mv " + QP("vm9.img") + " " + QP("team-a/db.img"));
  EXPECT_ERRNO(stat(P("vm9.img").c_str(), &st), ENOENT);
  EXPECT_TRUE(ReadWholeFile(P("team-a/db.img")) == data);
  // rename over an existing image (without snapshots) replaces it.
  ASSERT_TRUE(WriteWholeFile(P("other.img"), "other"));
  ASSERT_EQ(rename(P("other.img").c_str(), P("team-a/db.img").c_str()), 0) << ErrnoName(errno);
  EXPECT_EQ(ReadWholeFile(P("team-a/db.img")), "other");
  ASSERT_NO_FATAL_FAILURE(Remount());
  EXPECT_EQ(ReadWholeFile(P("team-a/db.img")), "other");
  EXPECT_ERRNO(stat(P("other.img").c_str(), &st), ENOENT);
  RunResult ls = SD_RUN_OK("ls " + QP(""));
  EXPECT_EQ(ls.out, "team-a\n");
}

TEST_F(ImagesTest, ProjectDirectoryHoldsImages) {
  ASSERT_EQ(mkdir(P("team-a").c_str(), 0755), 0) << ErrnoName(errno);
  ASSERT_RUN_OK("truncate -s 16M " + QP("team-a/db.img") + " " + QP("team-a/web.img"));
  ASSERT_TRUE(PWrite(P("team-a/db.img"), 5 * MiB, "db data"));
  RunResult ls = SD_RUN_OK("ls " + QP("team-a"));
  EXPECT_EQ(ls.out, "db.img\nweb.img\n");
  RunResult la = SD_RUN_OK("ls -a " + QP(""));
  EXPECT_NE(la.out.find(".snapshots\n"), std::string::npos) << la.out;
  EXPECT_NE(la.out.find("team-a\n"), std::string::npos) << la.out;
  EXPECT_ERRNO(rmdir(P("team-a").c_str()), ENOTEMPTY);
  EXPECT_ERRNO(mkdir(P("team-a").c_str(), 0755), EEXIST);
  ASSERT_NO_FATAL_FAILURE(Remount());
  EXPECT_EQ(PRead(P("team-a/db.img"), 5 * MiB, 7), "db data");
  ASSERT_RUN_OK("rm " + QP("team-a/db.img") + " " + QP("team-a/web.img"));
  EXPECT_EQ(rmdir(P("team-a").c_str()), 0) << ErrnoName(errno);
  struct stat st;
  EXPECT_ERRNO(stat(P("team-a").c_str(), &st), ENOENT);
}

TEST_F(ImagesTest, RmDeletesAndANewImageOfTheSameNameStartsEmpty) {
  ASSERT_TRUE(WriteWholeFile(P("vm1.img"), PatternBytes(1 * MiB, 3)));
  ASSERT_RUN_OK("rm " + QP("vm1.img"));
  struct stat st;
  EXPECT_ERRNO(stat(P("vm1.img").c_str(), &st), ENOENT);
  RunResult ls = SD_RUN_OK("ls " + QP(""));
  EXPECT_EQ(ls.out, "");
  ASSERT_RUN_OK("truncate -s 1M " + QP("vm1.img"));
  EXPECT_TRUE(PRead(P("vm1.img"), 0, 1 * MiB) == Zeros(1 * MiB)) << "old data leaked into a new image";
  ASSERT_NO_FATAL_FAILURE(Remount());
  EXPECT_TRUE(PRead(P("vm1.img"), 0, 1 * MiB) == Zeros(1 * MiB)) << "after remount";
  EXPECT_EQ(unlink(P("vm1.img").c_str()), 0) << ErrnoName(errno);
  EXPECT_ERRNO(unlink(P("vm1.img").c_str()), ENOENT);
}

// Live images use direct I/O by default, where the kernel refuses shared
// mappings; private ones work, and cache=page allows shared ones.
TEST_F(ImagesTest, SharedMmapOfLiveImageNeedsCachePage) {
  ASSERT_RUN_OK("truncate -s 1M " + QP("vm1.img"));
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, "hello"));
  int fd = open(P("vm1.img").c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  void* shared = mmap(nullptr, 1 * MiB, PROT_READ, MAP_SHARED, fd, 0);
  EXPECT_EQ(shared, MAP_FAILED);
  EXPECT_EQ(errno, ENODEV) << ErrnoName(errno);
  void* priv = mmap(nullptr, 1 * MiB, PROT_READ, MAP_PRIVATE, fd, 0);
  ASSERT_NE(priv, MAP_FAILED) << ErrnoName(errno);
  EXPECT_EQ(std::string(static_cast<char*>(priv), 5), "hello");
  munmap(priv, 1 * MiB);
  close(fd);
}

TEST_F(ImagesTest, SharedMmapWritesPersist) {
  set_mount_options("cache=page");
  ASSERT_NO_FATAL_FAILURE(Remount());
  const std::string img = P("vm1.img");
  ASSERT_RUN_OK("truncate -s 1M " + QP("vm1.img"));
  const std::string data = PatternBytes(200 * KiB, 21);
  int fd = open(img.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  void* map = mmap(nullptr, 1 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(map, MAP_FAILED) << ErrnoName(errno);
  memcpy(static_cast<char*>(map) + 4096 + 100, data.data(), data.size());
  EXPECT_EQ(msync(map, 1 * MiB, MS_SYNC), 0) << ErrnoName(errno);
  munmap(map, 1 * MiB);
  close(fd);
  ASSERT_NO_FATAL_FAILURE(Remount());
  EXPECT_TRUE(PRead(img, 4096 + 100, data.size()) == data);
  EXPECT_TRUE(PRead(img, 0, 4096 + 100) == Zeros(4096 + 100));
}

TEST_F(ImagesTest, ConcurrentWritersOnDifferentRanges) {
  const std::string img = P("vm1.img");
  ASSERT_RUN_OK("truncate -s 32M " + QP("vm1.img"));
  const size_t chunk = 64 * KiB;
  auto writer = [&](int id) {
    int fd = open(img.c_str(), O_WRONLY);
    if (fd < 0) return;
    for (int i = id; i < 256; i += 4) {  // interleaved 64 KiB chunks
      std::string d = PatternBytes(chunk, 1000 + i);
      if (pwrite(fd, d.data(), d.size(), static_cast<off_t>(i * chunk)) != static_cast<ssize_t>(chunk)) break;
    }
    fsync(fd);
    close(fd);
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(writer, t);
  for (auto& t : threads) t.join();
  ASSERT_NO_FATAL_FAILURE(Remount());
  std::string all = PRead(img, 0, 32 * MiB);
  ASSERT_EQ(all.size(), 32 * MiB);
  for (int i = 0; i < 256; ++i) {
    ASSERT_TRUE(all.compare(i * chunk, chunk, PatternBytes(chunk, 1000 + i)) == 0)
        << "chunk " << i << " at offset " << i * chunk << " is wrong";
  }
}

TEST_F(ImagesTest, OpenImageKeepsWorkingAfterUnlinkAndRename) {
  const std::string img = P("vm1.img");
  ASSERT_TRUE(WriteWholeFile(img, PatternBytes(1 * MiB, 30)));
  int fd = open(img.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  ASSERT_RUN_OK("mv " + QP("vm1.img") + " " + QP("vm2.img"));
  EXPECT_EQ(pwrite(fd, "renamed", 7, 100), 7) << ErrnoName(errno);
  EXPECT_EQ(PRead(P("vm2.img"), 100, 7), "renamed") << "a write through an fd opened before mv";
  ASSERT_EQ(unlink(P("vm2.img").c_str()), 0) << ErrnoName(errno);
  struct stat st;
  EXPECT_ERRNO(stat(P("vm2.img").c_str(), &st), ENOENT);
  // POSIX: the open file lives on until closed.
  EXPECT_EQ(pwrite(fd, "unlinked", 8, 200), 8) << ErrnoName(errno);
  char buf[8] = {};
  EXPECT_EQ(pread(fd, buf, 8, 200), 8) << ErrnoName(errno);
  EXPECT_EQ(std::string(buf, 8), "unlinked");
  EXPECT_EQ(pread(fd, buf, 7, 100), 7);
  EXPECT_EQ(std::string(buf, 7), "renamed");
  close(fd);
  RunResult ls = SD_RUN_OK("ls " + QP(""));
  EXPECT_EQ(ls.out, "");
  ASSERT_NO_FATAL_FAILURE(Remount());
  ls = SD_RUN_OK("ls " + QP(""));
  EXPECT_EQ(ls.out, "") << "an unlinked image came back";
}

TEST_F(ImagesTest, DirectIOLikeAVMWithCacheNone) {
  const std::string img = P("vm1.img");
  ASSERT_RUN_OK("truncate -s 16M " + QP("vm1.img"));
  int fd = open(img.c_str(), O_RDWR | O_DIRECT);
  ASSERT_GE(fd, 0) << "open O_DIRECT: " << ErrnoName(errno);
  void* buf = nullptr;
  ASSERT_EQ(posix_memalign(&buf, 4096, 256 * KiB), 0);
  std::string data = PatternBytes(256 * KiB, 31);
  memcpy(buf, data.data(), data.size());
  EXPECT_EQ(pwrite(fd, buf, 256 * KiB, 4 * MiB + 4096), static_cast<ssize_t>(256 * KiB)) << ErrnoName(errno);
  EXPECT_EQ(fdatasync(fd), 0) << ErrnoName(errno);
  memset(buf, 0, 256 * KiB);
  EXPECT_EQ(pread(fd, buf, 256 * KiB, 4 * MiB + 4096), static_cast<ssize_t>(256 * KiB)) << ErrnoName(errno);
  EXPECT_TRUE(memcmp(buf, data.data(), data.size()) == 0);
  free(buf);
  close(fd);
  SD_RUN_OK("dd if=/dev/urandom of=" + QS("chunk") + " bs=1M count=2 status=none");
  SD_RUN_OK("dd if=" + QS("chunk") + " of=" + QP("vm1.img") +
            " bs=1M seek=8 oflag=direct conv=notrunc,fsync status=none");
  ASSERT_NO_FATAL_FAILURE(Remount());
  EXPECT_TRUE(PRead(img, 4 * MiB + 4096, 256 * KiB) == data);
  SD_RUN_OK("dd if=" + QP("vm1.img") + " bs=1M skip=8 count=2 iflag=direct status=none | cmp - " +
            QS("chunk"));
}

TEST_F(ImagesTest, TerabyteOffsetsInASparseImage) {
  const std::string img = P("vm1.img");
  ASSERT_RUN_OK("truncate -s 2T " + QP("vm1.img"));
  const uint64_t far = (3ull << 39) + 12345;  // 1.5 TiB and a bit
  ASSERT_TRUE(PWrite(img, far, "far away", true));
  ASSERT_TRUE(PWrite(img, (2ull << 40) - 3, "end"));
  EXPECT_EQ(PRead(img, far, 8), "far away");
  EXPECT_EQ(PRead(img, (2ull << 40) - 3, 3), "end");
  EXPECT_TRUE(PRead(img, far - 4096, 4096) == std::string(4096, '\0'));
  ASSERT_NO_FATAL_FAILURE(Remount());
  EXPECT_EQ(PRead(img, far, 8), "far away");
  struct stat st;
  ASSERT_EQ(stat(img.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 2ull << 40);
  // Far past the store's limit (16 TiB by default) is refused, not wrapped.
  EXPECT_ERRNO_IN(truncate(img.c_str(), static_cast<off_t>(1ull << 50)), EFBIG, EINVAL);
}

TEST_F(ImagesTest, ListingManyImages) {
  // Enough entries that readdir needs several calls.
  constexpr int kImages = 300;
  std::string expected;
  std::vector<std::string> names;
  for (int i = 0; i < kImages; ++i) names.push_back(fmt::format("disk-{:04}-with-a-longer-name.img", i));
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    int fd = open(P(n).c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0) << n << ": " << ErrnoName(errno);
    close(fd);
    expected += n + "\n";
  }
  RunResult ls = SD_RUN_OK("ls " + QP(""));
  EXPECT_EQ(ls.out, expected);
  RunResult snaps = SD_RUN_OK("ls " + QP(".snapshots"));
  EXPECT_EQ(snaps.out, expected) << "one .snapshots folder per image";
  ASSERT_NO_FATAL_FAILURE(Remount());
  ls = SD_RUN_OK("ls -l " + QP("") + " | tail -n +2 | wc -l");
  EXPECT_EQ(ls.out, std::to_string(kImages) + "\n");
}

}  // namespace
}  // namespace snapdisk::testing
