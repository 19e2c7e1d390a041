// Extended attributes: user.* on images, and snapshot descriptions and
// properties on snapshot folders (DESIGN.md §1 "describe a snapshot").
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "mount_fixture.h"

namespace snapdisk::testing {
namespace {

class XattrsTest : public MountFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(MountFixture::SetUp());
    ASSERT_RUN_OK("truncate -s 4M " + QP("vm1.img"));
  }
  std::string GetValue(const std::string& path, const std::string& name) {
    RunResult r = Run("getfattr --only-values -n " + ShellQuote(name) + " " + ShellQuote(path));
    EXPECT_TRUE(r.ok()) << Describe("getfattr " + name, r);
    return r.out;
  }
};

TEST_F(XattrsTest, UserAttributesOnImagesPersist) {
  ASSERT_RUN_OK("setfattr -n user.owner -v alice " + QP("vm1.img"));
  ASSERT_RUN_OK("setfattr -n user.os -v 'debian 12' " + QP("vm1.img"));
  EXPECT_EQ(GetValue(P("vm1.img"), "user.owner"), "alice");
  RunResult dump = SD_RUN_OK("getfattr -d " + QP("vm1.img"));
  EXPECT_NE(dump.out.find("user.owner=\"alice\""), std::string::npos) << dump.out;
  EXPECT_NE(dump.out.find("user.os=\"debian 12\""), std::string::npos) << dump.out;
  // Direct syscalls: size query, replace, create-only, remove.
  EXPECT_EQ(getxattr(P("vm1.img").c_str(), "user.owner", nullptr, 0), 5) << ErrnoName(errno);
  EXPECT_ERRNO(setxattr(P("vm1.img").c_str(), "user.owner", "bob", 3, XATTR_CREATE), EEXIST);
  EXPECT_ERRNO(setxattr(P("vm1.img").c_str(), "user.none", "x", 1, XATTR_REPLACE), ENODATA);
  EXPECT_EQ(setxattr(P("vm1.img").c_str(), "user.owner", "bob", 3, XATTR_REPLACE), 0) << ErrnoName(errno);
  char small[2];
  EXPECT_ERRNO(getxattr(P("vm1.img").c_str(), "user.owner", small, sizeof small), ERANGE);

  ASSERT_NO_FATAL_FAILURE(Remount());
  EXPECT_EQ(GetValue(P("vm1.img"), "user.owner"), "bob");
  EXPECT_EQ(GetValue(P("vm1.img"), "user.os"), "debian 12");
  ASSERT_RUN_OK("setfattr -x user.os " + QP("vm1.img"));
  EXPECT_ERRNO(getxattr(P("vm1.img").c_str(), "user.os", nullptr, 0), ENODATA);
  EXPECT_ERRNO(removexattr(P("vm1.img").c_str(), "user.os"), ENODATA);
  ASSERT_NO_FATAL_FAILURE(Remount());
  EXPECT_ERRNO(getxattr(P("vm1.img").c_str(), "user.os", nullptr, 0), ENODATA);
  // Attributes are the image's: they follow a rename.
  ASSERT_RUN_OK("mv " + QP("vm1.img") + " " + QP("vm9.img"));
  EXPECT_EQ(GetValue(P("vm9.img"), "user.owner"), "bob");
}

TEST_F(XattrsTest, SnapshotDescriptionPropertiesAndFacts) {
  const std::string snap = P(".snapshots/vm1.img/s1");
  time_t t0 = time(nullptr);
  ASSERT_EQ(mkdir(snap.c_str(), 0755), 0) << ErrnoName(errno);
  ASSERT_RUN_OK("setfattr -n user.description -v 'before the upgrade' " + ShellQuote(snap));
  ASSERT_RUN_OK("setfattr -n user.property.ticket -v OPS-42 " + ShellQuote(snap));
  RunResult dump = SD_RUN_OK("getfattr -d " + ShellQuote(snap));
  EXPECT_NE(dump.out.find("user.description=\"before the upgrade\""), std::string::npos) << dump.out;
  EXPECT_NE(dump.out.find("user.property.ticket=\"OPS-42\""), std::string::npos) << dump.out;
  EXPECT_NE(dump.out.find("user.snapdisk.created="), std::string::npos) << dump.out;

  // The creation time is a read-only fact near now; it cannot be set.
  std::string created = GetValue(snap, "user.snapdisk.created");
  EXPECT_FALSE(created.empty());
  std::string year = std::to_string(1900 + gmtime(&t0)->tm_year);
  bool looks_like_time = created.find(year) != std::string::npos ||
                         created.find(std::to_string(t0).substr(0, 6)) != std::string::npos;
  EXPECT_TRUE(looks_like_time) << "user.snapdisk.created = '" << created
                               << "' does not look like a time near now";
  EXPECT_ERRNO_IN(setxattr(snap.c_str(), "user.snapdisk.created", "0", 1, 0), EPERM, EACCES,
                  EROFS, EINVAL);
  EXPECT_EQ(GetValue(snap, "user.snapdisk.created"), created);
  // The other read-only facts: the size, and the space it uses.
  EXPECT_EQ(GetValue(snap, "user.snapdisk.size"), std::to_string(4 * 1024 * 1024));
  bool has_space_fact = false;
  for (const char* word : {"used", "referenced", "unique", "space"}) {
    has_space_fact = has_space_fact || dump.out.find(word) != std::string::npos;
  }
  EXPECT_TRUE(has_space_fact) << "no user.snapdisk.* fact about space used:\n" << dump.out;

  ASSERT_NO_FATAL_FAILURE(Remount());
  EXPECT_EQ(GetValue(snap, "user.description"), "before the upgrade");
  EXPECT_EQ(GetValue(snap, "user.property.ticket"), "OPS-42");
  EXPECT_EQ(GetValue(snap, "user.snapdisk.created"), created);
  // Description survives a snapshot rename; removing a property works.
  ASSERT_RUN_OK("mv " + ShellQuote(snap) + " " + QP(".snapshots/vm1.img/s2"));
  EXPECT_EQ(GetValue(P(".snapshots/vm1.img/s2"), "user.description"), "before the upgrade");
  ASSERT_RUN_OK("setfattr -x user.property.ticket " + QP(".snapshots/vm1.img/s2"));
  EXPECT_ERRNO(getxattr(P(".snapshots/vm1.img/s2").c_str(), "user.property.ticket", nullptr, 0),
               ENODATA);
}

TEST_F(XattrsTest, ReservedAndForeignNamespacesAreRefused) {
  EXPECT_ERRNO_IN(setxattr(P("vm1.img").c_str(), "user.snapdisk.mine", "x", 1, 0), EPERM, EACCES,
                  EINVAL, EROFS);
  EXPECT_ERRNO_IN(setxattr(P("vm1.img").c_str(), "trusted.test", "x", 1, 0), EOPNOTSUPP, EPERM,
                  EACCES, EINVAL);
  RunResult dump = SD_RUN_OK("getfattr -d -m - " + QP("vm1.img"));
  EXPECT_EQ(dump.out.find("user.snapdisk.mine"), std::string::npos) << dump.out;
  EXPECT_EQ(dump.out.find("trusted.test"), std::string::npos) << dump.out;
}

}  // namespace
}  // namespace snapdisk::testing
