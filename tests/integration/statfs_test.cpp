// statfs: `df` on the mount works and reports the store's capacity.
#include <sys/statvfs.h>

#include <sstream>

#include "mount_fixture.h"

namespace snapdisk::testing {
namespace {

class StatfsTest : public MountFixture {};

TEST_F(StatfsTest, DfReportsNonZeroSize) {
  ASSERT_RUN_OK("truncate -s 64M " + QP("vm1.img"));
  RunResult df = SD_RUN_OK("df -P -B1 " + ShellQuote(mountpoint()));
  // Filesystem 1-blocks Used Available Capacity Mounted-on
  std::istringstream lines(df.out);
  std::string header, line;
  std::getline(lines, header);
  ASSERT_TRUE(std::getline(lines, line)) << df.out;
  std::istringstream fields(line);
  std::string fs, mounted_on;
  unsigned long long size = 0, used = 0, avail = 0;
  std::string capacity;
  fields >> fs >> size >> used >> avail >> capacity >> mounted_on;
  EXPECT_EQ(mounted_on, mountpoint()) << df.out;
  EXPECT_GT(size, 0u) << df.out;
  EXPECT_GT(avail, 0u) << df.out;
  EXPECT_LE(avail, size) << df.out;

  struct statvfs sv;
  ASSERT_EQ(statvfs(mountpoint().c_str(), &sv), 0) << ErrnoName(errno);
  EXPECT_GT(sv.f_blocks, 0u);
  EXPECT_GT(sv.f_bsize, 0u);
  EXPECT_LE(sv.f_bavail, sv.f_blocks);
  EXPECT_GE(sv.f_namemax, 255u);
  // The same answer inside the .snapshots folder and a project.
  struct statvfs inner;
  ASSERT_EQ(statvfs(P(".snapshots").c_str(), &inner), 0) << ErrnoName(errno);
  EXPECT_EQ(inner.f_blocks, sv.f_blocks);
  SD_RUN_OK("df -i " + ShellQuote(mountpoint()));
  SD_RUN_OK("stat -f " + QP("vm1.img"));
}

}  // namespace
}  // namespace snapdisk::testing
