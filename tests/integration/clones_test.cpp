// Thin clones with plain `cp` (DESIGN.md §1 "clone", §4 on GNU cp 9.1): the
// copy must reach the daemon as copy_file_range, be identical, independent of
// its source, and outlive the snapshot and the image it came from.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include <regex>

#include "mount_fixture.h"

namespace snapdisk::testing {
namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB;

class ClonesTest : public MountFixture {
 protected:
  // `cp SRC DST` under strace; expects cp to succeed and to have used
  // copy_file_range successfully at least once.
  void CpExpectingCopyFileRange(const std::string& src, const std::string& dst) {
    const std::string trace = Scratch("strace-" + std::to_string(++traces_) + ".log");
    std::string cmd = "strace -f -qq -e trace=copy_file_range -o " + ShellQuote(trace) + " cp " +
                      ShellQuote(src) + " " + ShellQuote(dst);
    RunResult r = Run(cmd);
    ASSERT_TRUE(r.ok()) << Describe(cmd, r);
    std::string log = ReadWholeFile(trace);
    static const std::regex ok_call(R"(copy_file_range\(.*\)\s*=\s*[1-9][0-9]*)");
    EXPECT_TRUE(std::regex_search(log, ok_call))
        << "cp " << src << " " << dst << " did not clone with copy_file_range "
        << "(GNU cp reads and writes instead when st_blocks*512 < st_size)\nstrace:\n"
        << log.substr(0, 2000);
  }
  int traces_ = 0;
};

TEST_F(ClonesTest, CpOfFrozenViewAndOfLiveImageCloneWithCopyFileRange) {
  const std::string img = P("vm1.img");
  ASSERT_TRUE(WriteWholeFile(img, PatternBytes(16 * MiB, 1)));
  ASSERT_EQ(mkdir(P(".snapshots/vm1.img/s1").c_str(), 0755), 0) << ErrnoName(errno);
  const std::string frozen = P(".snapshots/vm1.img/s1/vm1.img");
  ASSERT_TRUE(PWrite(img, 1 * MiB, PatternBytes(64 * KiB, 2)));
  ASSERT_RUN_OK("cp " + QP("vm1.img") + " " + QS("live-copy"));
  ASSERT_RUN_OK("cp " + ShellQuote(frozen) + " " + QS("s1-copy"));

  ASSERT_NO_FATAL_FAILURE(CpExpectingCopyFileRange(frozen, P("vm2.img")));
  ASSERT_NO_FATAL_FAILURE(CpExpectingCopyFileRange(img, P("vm3.img")));
  ExpectSameBytes(P("vm2.img"), frozen, "clone of the snapshot");
  ExpectSameBytes(P("vm2.img"), Scratch("s1-copy"), "clone of the snapshot");
  ExpectSameBytes(P("vm3.img"), img, "clone of the live image");

  // Independent both ways.
  ASSERT_TRUE(PWrite(P("vm2.img"), 0, PatternBytes(4096, 3)));
  ASSERT_TRUE(PWrite(P("vm3.img"), 5 * MiB + 3, "clone write"));
  ASSERT_TRUE(PWrite(img, 9 * MiB, PatternBytes(128 * KiB, 4)));
  ExpectSameBytes(frozen, Scratch("s1-copy"), "snapshot after writes to its clone");
  EXPECT_TRUE(PRead(P("vm3.img"), 9 * MiB, 128 * KiB) == PRead(Scratch("live-copy"), 9 * MiB, 128 * KiB))
      << "a write to the source image changed its clone";
  EXPECT_TRUE(PRead(img, 5 * MiB + 3, 11) == PRead(Scratch("live-copy"), 5 * MiB + 3, 11))
      << "a write to the clone changed its source image";
  EXPECT_TRUE(PRead(P("vm2.img"), 0, 4096) == PatternBytes(4096, 3));
  EXPECT_EQ(PRead(P("vm3.img"), 5 * MiB + 3, 11), "clone write");

  ASSERT_NO_FATAL_FAILURE(Remount());
  ExpectSameBytes(frozen, Scratch("s1-copy"), "after remount");
  EXPECT_EQ(PRead(P("vm3.img"), 5 * MiB + 3, 11), "clone write");
  EXPECT_TRUE(PRead(P("vm2.img"), 4096, 1 * MiB - 4096) ==
              PRead(Scratch("s1-copy"), 4096, 1 * MiB - 4096));
}

TEST_F(ClonesTest, CloneIsThin) {
  ASSERT_RUN_OK("dd if=/dev/urandom of=" + QP("vm1.img") + " bs=1M count=64 conv=fsync status=none");
  ASSERT_EQ(mkdir(P(".snapshots/vm1.img/s1").c_str(), 0755), 0) << ErrnoName(errno);
  uint64_t before = StoreDiskUsage();
  ASSERT_RUN_OK("cp " + QP(".snapshots/vm1.img/s1/vm1.img") + " " + QP("vm2.img") + " && sync " +
                QP("vm2.img"));
  ASSERT_RUN_OK("cp " + QP("vm1.img") + " " + QP("vm3.img") + " && sync " + QP("vm3.img"));
  uint64_t after = StoreDiskUsage();
  EXPECT_LT(after, before + 16 * MiB) << "two clones of a 64 MiB image grew the store from "
                                      << before << " to " << after << " bytes: not thin";
  ExpectSameBytes(P("vm2.img"), P("vm1.img"));
}

TEST_F(ClonesTest, CloneOutlivesItsSnapshotAndItsSourceImage) {
  const std::string img = P("vm1.img");
  ASSERT_TRUE(WriteWholeFile(img, PatternBytes(8 * MiB, 5)));
  ASSERT_EQ(mkdir(P(".snapshots/vm1.img/s1").c_str(), 0755), 0) << ErrnoName(errno);
  ASSERT_RUN_OK("cp " + QP(".snapshots/vm1.img/s1/vm1.img") + " " + QS("s1-copy"));
  ASSERT_TRUE(PWrite(img, 0, PatternBytes(2 * MiB, 6)));
  ASSERT_RUN_OK("cp " + QP(".snapshots/vm1.img/s1/vm1.img") + " " + QP("from-snap.img"));
  ASSERT_RUN_OK("cp " + QP("vm1.img") + " " + QP("from-live.img"));
  ASSERT_RUN_OK("cp " + QP("vm1.img") + " " + QS("live-copy"));

  ASSERT_EQ(rmdir(P(".snapshots/vm1.img/s1").c_str()), 0) << ErrnoName(errno);
  ASSERT_NO_FATAL_FAILURE(Remount());
  ExpectSameBytes(P("from-snap.img"), Scratch("s1-copy"), "after deleting the source snapshot");

  ASSERT_EQ(unlink(img.c_str()), 0) << ErrnoName(errno);
  ASSERT_NO_FATAL_FAILURE(Remount());
  ExpectSameBytes(P("from-snap.img"), Scratch("s1-copy"), "after deleting the source image");
  ExpectSameBytes(P("from-live.img"), Scratch("live-copy"), "after deleting the source image");
  // Clones stay writable images with their own snapshots.
  ASSERT_TRUE(PWrite(P("from-live.img"), 7 * MiB, "still writable"));
  ASSERT_EQ(mkdir(P(".snapshots/from-live.img/c1").c_str(), 0755), 0) << ErrnoName(errno);
  ASSERT_TRUE(PWrite(P("from-live.img"), 7 * MiB, "changed again!"));
  EXPECT_EQ(PRead(P(".snapshots/from-live.img/c1/from-live.img"), 7 * MiB, 14), "still writable");
  // A new image in the old name starts empty.
  ASSERT_RUN_OK("truncate -s 8M " + QP("vm1.img"));
  EXPECT_TRUE(PRead(img, 0, 8 * MiB) == std::string(8 * MiB, '\0'));
}

TEST_F(ClonesTest, CloneOfACloneAndCopyIntoAProject) {
  ASSERT_TRUE(WriteWholeFile(P("base.img"), PatternBytes(4 * MiB + 4096, 7)));
  ASSERT_EQ(mkdir(P("team-a").c_str(), 0755), 0) << ErrnoName(errno);
  ASSERT_NO_FATAL_FAILURE(CpExpectingCopyFileRange(P("base.img"), P("team-a/c1.img")));
  ASSERT_NO_FATAL_FAILURE(CpExpectingCopyFileRange(P("team-a/c1.img"), P("team-a/c2.img")));
  ASSERT_TRUE(PWrite(P("team-a/c1.img"), 4096, "c1"));
  ExpectSameBytes(P("team-a/c2.img"), P("base.img"));
  ASSERT_NO_FATAL_FAILURE(Remount());
  ExpectSameBytes(P("team-a/c2.img"), P("base.img"));
  EXPECT_EQ(PRead(P("team-a/c1.img"), 4096, 2), "c1");
}

// copy_file_range(2) called directly, with ranges that are not block-aligned
// (the engine shares whole blocks and copies the rest), from the live image
// and from a frozen view, growing the destination.
TEST_F(ClonesTest, CopyFileRangeWithUnalignedRanges) {
  const std::string src = P("a.img"), dst = P("b.img");
  std::string src_data = PatternBytes(3 * MiB, 40);
  std::string want = PatternBytes(2 * MiB, 41);
  ASSERT_TRUE(WriteWholeFile(src, src_data));
  ASSERT_TRUE(WriteWholeFile(dst, want));
  ASSERT_EQ(mkdir(P(".snapshots/a.img/s1").c_str(), 0755), 0) << ErrnoName(errno);
  ASSERT_TRUE(PWrite(src, 0, PatternBytes(1 * MiB, 42)));  // the live image moves on
  const std::string frozen = P(".snapshots/a.img/s1/a.img");
  std::string live_data = src_data;
  live_data.replace(0, 1 * MiB, PatternBytes(1 * MiB, 42));

  struct Copy { std::string from; const std::string* from_data; uint64_t src_off, dst_off, len; };
  const Copy copies[] = {
      {src, &live_data, 12345, 777, 100000},
      {src, &live_data, 64 * KiB, 1 * MiB, 512 * KiB},
      {frozen, &src_data, 100, 1 * MiB + 4096, 300 * KiB},
      {frozen, &src_data, 2 * MiB + 1, 2 * MiB - 5000, 600000},  // grows the destination
  };
  for (const Copy& c : copies) {
    int in = open(c.from.c_str(), O_RDONLY);
    int out = open(dst.c_str(), O_WRONLY);
    ASSERT_GE(in, 0) << ErrnoName(errno);
    ASSERT_GE(out, 0) << ErrnoName(errno);
    loff_t in_off = static_cast<loff_t>(c.src_off), out_off = static_cast<loff_t>(c.dst_off);
    uint64_t left = c.len;
    while (left > 0) {
      ssize_t n = copy_file_range(in, &in_off, out, &out_off, left, 0);
      if (n <= 0) {
        ADD_FAILURE() << "copy_file_range(" << c.from << " @" << in_off << " -> @" << out_off
                      << ", " << left << "): " << (n < 0 ? ErrnoName(errno) : "returned 0");
        break;
      }
      left -= static_cast<uint64_t>(n);
    }
    close(in);
    close(out);
    if (want.size() < c.dst_off + c.len) want.resize(c.dst_off + c.len, '\0');
    want.replace(c.dst_off, c.len, c.from_data->substr(c.src_off, c.len));
  }
  auto verify = [&](const char* when) {
    std::string got = ReadWholeFile(dst);
    ASSERT_EQ(got.size(), want.size()) << when;
    for (uint64_t off = 0; off < want.size(); off += 4096) {
      size_t n = std::min<size_t>(4096, want.size() - off);
      ASSERT_TRUE(got.compare(off, n, want, off, n) == 0) << when << ": wrong bytes at " << off;
    }
    EXPECT_TRUE(ReadWholeFile(frozen) == src_data) << when << ": the source snapshot changed";
  };
  verify("before remount");
  ASSERT_NO_FATAL_FAILURE(Remount());
  verify("after remount");
}

}  // namespace
}  // namespace snapdisk::testing
