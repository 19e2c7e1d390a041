// The VM-disk lifecycle: an ext4 guest file system on a snapdisk image,
// written through a loop device, snapshotted, changed, and the snapshot
// mounted read-only and checked file by file; then a clone of the snapshot
// is mounted read-write. DESIGN.md §1 "use a disk", "read a snapshot"
// (`mount -o loop,ro` of the frozen view), "discard" (TRIM), "clone".
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "mount_fixture.h"

namespace snapdisk::testing {
namespace {

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Unmounts guest file systems and detaches loop devices it was told about,
// in reverse order, even when the test stops half-way.
class GuestCleanup {
 public:
  ~GuestCleanup() {
    for (auto it = mounts_.rbegin(); it != mounts_.rend(); ++it) {
      RunShell("umount " + ShellQuote(*it) + " || umount -l " + ShellQuote(*it));
    }
    for (auto it = loops_.rbegin(); it != loops_.rend(); ++it) {
      RunShell("losetup -d " + ShellQuote(*it));
    }
  }
  void AddMount(const std::string& dir) { mounts_.push_back(dir); }
  void AddLoop(const std::string& dev) { loops_.push_back(dev); }
  void Forget(const std::string& what) {
    mounts_.erase(std::remove(mounts_.begin(), mounts_.end(), what), mounts_.end());
    loops_.erase(std::remove(loops_.begin(), loops_.end(), what), loops_.end());
  }

 private:
  std::vector<std::string> mounts_, loops_;
};

class VmLifecycleTest : public MountFixture {
 protected:
  // Attaches a loop device to `image` and mounts it at `dir` read-write.
  void AttachAndMount(const std::string& image, const std::string& dir, GuestCleanup* cleanup) {
    std::string cmd = "losetup -f --show " + ShellQuote(image);
    RunResult r = Run(cmd);
    ASSERT_TRUE(r.ok()) << Describe(cmd, r);
    loop_ = Trim(r.out);
    cleanup->AddLoop(loop_);
    cmd = "mount " + ShellQuote(loop_) + " " + ShellQuote(dir);
    r = Run(cmd);
    ASSERT_TRUE(r.ok()) << Describe(cmd, r);
    cleanup->AddMount(dir);
  }
  // Unmounts `dir`, detaches the loop device and waits until the image is
  // free (the kernel may detach asynchronously).
  void UnmountAndDetach(const std::string& image, const std::string& dir, GuestCleanup* cleanup) {
    ASSERT_RUN_OK("umount " + ShellQuote(dir));
    cleanup->Forget(dir);
    if (!loop_.empty()) {
      ASSERT_RUN_OK("losetup -d " + ShellQuote(loop_));
      cleanup->Forget(loop_);
      loop_.clear();
    }
    ASSERT_NO_FATAL_FAILURE(WaitUntilNoLoopUses(image));
  }
  void WaitUntilNoLoopUses(const std::string& image) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      RunResult r = Run("losetup -j " + ShellQuote(image));
      if (r.ok() && Trim(r.out).empty()) return;
      ASSERT_LT(std::chrono::steady_clock::now(), deadline)
          << "a loop device still uses " << image << ":\n" << r.out;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  // Mounts a frozen view read-only through a loop device (`mount -o loop,ro`;
  // `noload` skips journal replay, which a read-only device cannot take).
  void MountReadOnly(const std::string& image, const std::string& dir, GuestCleanup* cleanup) {
    RunResult r = Run("mount -o loop,ro " + ShellQuote(image) + " " + ShellQuote(dir));
    if (!r.ok()) {
      std::string cmd = "mount -o loop,ro,noload " + ShellQuote(image) + " " + ShellQuote(dir);
      RunResult r2 = Run(cmd);
      ASSERT_TRUE(r2.ok()) << Describe("mount -o loop,ro ...", r) << "\n" << Describe(cmd, r2);
    }
    cleanup->AddMount(dir);
  }

  std::string loop_;
};

TEST_F(VmLifecycleTest, Ext4GuestSnapshotMountedReadOnlyAndCloned) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for losetup and mount (CI runs as root)";
  GuestCleanup cleanup;
  const std::string img = P("vm1.img");
  const std::string guest = Scratch("guest");
  ASSERT_EQ(mkdir(guest.c_str(), 0755), 0);

  ASSERT_RUN_OK("truncate -s 256M " + QP("vm1.img"));
  ASSERT_RUN_OK("mkfs.ext4 -q -F " + QP("vm1.img"));

  // Files with known contents, made on the host.
  ASSERT_RUN_OK("cd " + QS("") + " && head -c 1048576 /dev/urandom > a.bin && "
                "head -c 3145728 /dev/urandom > b.bin && head -c 5242880 /dev/urandom > d.bin && "
                "echo 'hello from the guest' > c.txt && head -c 2097152 /dev/urandom > a2.bin");
  const std::string sha_a = Sha256(Scratch("a.bin")), sha_b = Sha256(Scratch("b.bin")),
                    sha_c = Sha256(Scratch("c.txt")), sha_d = Sha256(Scratch("d.bin")),
                    sha_a2 = Sha256(Scratch("a2.bin"));

  // First boot: install the files.
  ASSERT_NO_FATAL_FAILURE(AttachAndMount(img, guest, &cleanup));
  ASSERT_RUN_OK("cd " + QS("") + " && cp a.bin b.bin c.txt guest/ && mkdir guest/dir && "
                "cp d.bin guest/dir/ && sync");
  ASSERT_NO_FATAL_FAILURE(UnmountAndDetach(img, guest, &cleanup));
  SD_RUN_OK("e2fsck -fn " + QP("vm1.img"));

  ASSERT_EQ(mkdir(P(".snapshots/vm1.img/before").c_str(), 0755), 0) << ErrnoName(errno);

  // Second boot: change, delete, add, and TRIM the freed space.
  ASSERT_NO_FATAL_FAILURE(AttachAndMount(img, guest, &cleanup));
  ASSERT_RUN_OK("cd " + QS("") + " && cp a2.bin guest/a.bin && rm guest/b.bin && "
                "echo new > guest/new.txt && head -c 8388608 /dev/urandom > guest/big && "
                "sync && rm guest/big && sync");
  SD_RUN_OK("fstrim -v " + ShellQuote(guest));
  ASSERT_NO_FATAL_FAILURE(UnmountAndDetach(img, guest, &cleanup));

  // The frozen view, mounted read-only, holds the files as they were.
  const std::string frozen = P(".snapshots/vm1.img/before/vm1.img");
  const std::string ro = Scratch("ro");
  ASSERT_EQ(mkdir(ro.c_str(), 0755), 0);
  ASSERT_NO_FATAL_FAILURE(MountReadOnly(frozen, ro, &cleanup));
  EXPECT_EQ(Sha256(ro + "/a.bin"), sha_a);
  EXPECT_EQ(Sha256(ro + "/b.bin"), sha_b);
  EXPECT_EQ(Sha256(ro + "/c.txt"), sha_c);
  EXPECT_EQ(Sha256(ro + "/dir/d.bin"), sha_d);
  struct stat st;
  EXPECT_ERRNO(stat((ro + "/new.txt").c_str(), &st), ENOENT);
  ASSERT_RUN_OK("umount " + ShellQuote(ro));
  cleanup.Forget(ro);
  ASSERT_NO_FATAL_FAILURE(WaitUntilNoLoopUses(frozen));
  SD_RUN_OK("e2fsck -fn " + ShellQuote(frozen));

  // The live disk has the changes.
  ASSERT_NO_FATAL_FAILURE(MountReadOnly(img, ro, &cleanup));
  EXPECT_EQ(Sha256(ro + "/a.bin"), sha_a2);
  EXPECT_ERRNO(stat((ro + "/b.bin").c_str(), &st), ENOENT);
  EXPECT_EQ(ReadWholeFile(ro + "/new.txt"), "new\n");
  ASSERT_RUN_OK("umount " + ShellQuote(ro));
  cleanup.Forget(ro);
  ASSERT_NO_FATAL_FAILURE(WaitUntilNoLoopUses(img));

  // A clone of the snapshot boots read-write and is its own disk.
  ASSERT_RUN_OK("cp " + ShellQuote(frozen) + " " + QP("vm2.img"));
  ASSERT_NO_FATAL_FAILURE(AttachAndMount(P("vm2.img"), guest, &cleanup));
  EXPECT_EQ(Sha256(guest + "/a.bin"), sha_a);
  EXPECT_EQ(Sha256(guest + "/b.bin"), sha_b);
  ASSERT_RUN_OK("echo clone > " + ShellQuote(guest + "/clone.txt") + " && rm " +
                ShellQuote(guest + "/c.txt") + " && sync");
  ASSERT_NO_FATAL_FAILURE(UnmountAndDetach(P("vm2.img"), guest, &cleanup));
  SD_RUN_OK("e2fsck -fn " + QP("vm2.img"));
  SD_RUN_OK("e2fsck -fn " + ShellQuote(frozen));

  // Everything still reads the same from a fresh mount of the store.
  ASSERT_NO_FATAL_FAILURE(Remount());
  ASSERT_NO_FATAL_FAILURE(MountReadOnly(frozen, ro, &cleanup));
  EXPECT_EQ(Sha256(ro + "/dir/d.bin"), sha_d);
  EXPECT_EQ(Sha256(ro + "/c.txt"), sha_c);
  ASSERT_RUN_OK("umount " + ShellQuote(ro));
  cleanup.Forget(ro);
  ASSERT_NO_FATAL_FAILURE(WaitUntilNoLoopUses(frozen));
}

}  // namespace
}  // namespace snapdisk::testing
