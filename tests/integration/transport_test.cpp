// The two ways requests reach the daemon (fs/uring_transport.h): FUSE over
// io_uring, the default where the kernel has it, and /dev/fuse (uring=off,
// or kernels without it). Every other integration test runs over the
// default; these pin down the choice itself, and drive both transports with
// concurrent verified I/O from every CPU.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "mount_fixture.h"

namespace snapdisk::testing {
namespace {

constexpr const char* kEnableUringParam = "/sys/module/fuse/parameters/enable_uring";

bool KernelHasFuseOverIoUring() {
  struct stat st;
  return stat(kEnableUringParam, &st) == 0;
}

class TransportTest : public MountFixture {
 protected:
  // The daemon's log from byte `from` on (the log file is appended to across
  // remounts).
  std::string LogSince(size_t from) const {
    std::string log = DaemonLog();
    return from < log.size() ? log.substr(from) : "";
  }

  // Any request waits for INIT and, over io_uring, for every CPU's queue to
  // be registered; the transport's log line is written before either.
  void TouchMount() { ASSERT_RUN_OK("stat " + ShellQuote(mountpoint()) + " >/dev/null"); }

  // Four fio writers on disjoint 16 MiB ranges of one image, mixed request
  // sizes up to 1 MiB, every block verified by checksum after the writes,
  // then verified once more by a second, read-only pass of the same jobs.
  void ConcurrentVerifiedIo(const std::string& image) {
    ASSERT_RUN_OK("truncate -s 64M " + QP(image));
    const std::string job = "fio --name=mix --filename=" + QP(image) +
                            " --ioengine=psync --rw=randwrite --bsrange=4k-1m --numjobs=4 "
                            "--size=16m --offset_increment=16m --cpus_allowed_policy=split "
                            "--verify=crc32c --verify_fatal=1 --verify_state_save=0 --group_reporting "
                            "--output=/dev/null";
    ASSERT_RUN_OK(job);
    ASSERT_RUN_OK(job + " --verify_only=1");
  }
};

TEST_F(TransportTest, DefaultMountServesOverIoUringWhereTheKernelHasIt) {
  ASSERT_NO_FATAL_FAILURE(TouchMount());
  std::string log = DaemonLog();
  if (KernelHasFuseOverIoUring()) {
    EXPECT_NE(log.find("serving over io_uring"), std::string::npos) << log;
    std::ifstream param(kEnableUringParam);
    std::string value;
    std::getline(param, value);
    EXPECT_EQ(value, "Y") << "the daemon (root) turns the fuse module's enable_uring on";
  } else {
    EXPECT_NE(log.find("serving over /dev/fuse: this kernel has no FUSE over io_uring"),
              std::string::npos)
        << log;
  }
}

TEST_F(TransportTest, ConcurrentVerifiedIoOverTheDefaultTransport) {
  ASSERT_NO_FATAL_FAILURE(ConcurrentVerifiedIo("vm1.img"));
}

TEST_F(TransportTest, DevFuseTransportServesEverythingWithUringOff) {
  ASSERT_NO_FATAL_FAILURE(Unmount());
  size_t from = DaemonLog().size();
  set_mount_options("uring=off");
  ASSERT_NO_FATAL_FAILURE(Mount());
  ASSERT_NO_FATAL_FAILURE(TouchMount());
  EXPECT_EQ(LogSince(from).find("io_uring"), std::string::npos) << LogSince(from);

  ASSERT_NO_FATAL_FAILURE(ConcurrentVerifiedIo("vm1.img"));
  ASSERT_RUN_OK("mkdir " + QP(".snapshots/vm1.img/s1"));
  ASSERT_RUN_OK("cp " + QP(".snapshots/vm1.img/s1/vm1.img") + " " + QP("vm2.img"));
  ExpectSameBytes(P("vm1.img"), P("vm2.img"), "clone over /dev/fuse");
}

TEST_F(TransportTest, UringOnMountsOnlyWhereTheKernelHasIt) {
  ASSERT_NO_FATAL_FAILURE(Unmount());
  if (KernelHasFuseOverIoUring()) {
    size_t from = DaemonLog().size();
    set_mount_options("uring=on,uring_threads=1");
    ASSERT_NO_FATAL_FAILURE(Mount());
    ASSERT_NO_FATAL_FAILURE(TouchMount());
    EXPECT_NE(LogSince(from).find("serving over io_uring ("), std::string::npos)
        << LogSince(from);
    EXPECT_NE(LogSince(from).find("x 1 threads)"), std::string::npos) << LogSince(from);
    // One thread per CPU queue still serves concurrent writers (they queue).
    ASSERT_NO_FATAL_FAILURE(ConcurrentVerifiedIo("vm1.img"));
  } else {
    std::string cmd = ShellQuote(daemon_bin()) + " mount " + ShellQuote(store()) + " " +
                      ShellQuote(mountpoint()) + " -f -o uring=on";
    RunResult r = Run(cmd);
    EXPECT_EQ(r.exit_code, 1) << Describe(cmd, r);
    EXPECT_NE(r.err.find("uring=on"), std::string::npos) << Describe(cmd, r);
    EXPECT_FALSE(IsMountpoint(mountpoint()));
    ASSERT_NO_FATAL_FAILURE(Mount());
  }
}

// Does the daemon hold the store's data file open with O_DIRECT (the
// descriptor of polled reads, engine/polled_read.h)?
bool DaemonHasDirectDataFd(pid_t pid) {
  const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(fd_dir.c_str());
  if (d == nullptr) return false;
  bool found = false;
  while (dirent* e = readdir(d)) {
    char target[4096];
    ssize_t n = readlink((fd_dir + "/" + e->d_name).c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    if (!std::string_view(target).ends_with("/data/blocks.dat")) continue;
    std::ifstream info("/proc/" + std::to_string(pid) + "/fdinfo/" + e->d_name);
    std::string key, flags;
    while (info >> key >> flags)
      if (key == "flags:" && (std::stoul(flags, nullptr, 8) & O_DIRECT)) found = true;
  }
  closedir(d);
  return found;
}

// Small reads of data the page cache does not hold go around it and poll
// (mount option read_poll, on by default). Reads 4 KiB pieces of an image in
// random order once its data has left the page cache, and compares every
// byte; then the same with read_poll=0, which keeps every read buffered.
TEST_F(TransportTest, ColdSmallReadsReadExactBytesWithPollingOnAndOff) {
  constexpr size_t kSize = 8 << 20, kPiece = 4096;
  const std::string want = PatternBytes(kSize, 17);
  ASSERT_TRUE(WriteWholeFile(P("cold.img"), want));
  std::vector<size_t> order(kSize / kPiece);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(5));
  for (const char* options : {"", "read_poll=0"}) {
    SCOPED_TRACE(std::string("options: ") + options);
    ASSERT_NO_FATAL_FAILURE(Unmount());
    set_mount_options(options);
    ASSERT_NO_FATAL_FAILURE(Mount());
    EXPECT_EQ(DaemonHasDirectDataFd(daemon_pid()), *options == '\0');
    // Written back, then dropped: the reads below miss the page cache.
    ASSERT_RUN_OK("sync");
    int fd = open((store() + "/data/blocks.dat").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << strerror(errno);
    EXPECT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    close(fd);
    size_t wrong = 0;
    for (size_t i : order)
      if (PRead(P("cold.img"), i * kPiece, kPiece) != want.substr(i * kPiece, kPiece)) ++wrong;
    EXPECT_EQ(wrong, 0u) << "of " << order.size() << " pieces";
  }
}

TEST_F(TransportTest, BadUringOptionsFailTheMountWithAMessage) {
  ASSERT_NO_FATAL_FAILURE(Unmount());
  for (const char* bad : {"uring=maybe", "uring_threads=0", "uring_threads=65", "uring_threads=x",
                          "read_poll=x", "read_poll=10001", "read_poll=-1"}) {
    std::string cmd = ShellQuote(daemon_bin()) + " mount " + ShellQuote(store()) + " " +
                      ShellQuote(mountpoint()) + " -f -o " + bad;
    RunResult r = Run(cmd, std::chrono::seconds(30));
    EXPECT_EQ(r.exit_code, 1) << Describe(cmd, r);
    EXPECT_NE(r.err.find(std::string("bad option '") + bad), std::string::npos)
        << Describe(cmd, r);
    EXPECT_FALSE(IsMountpoint(mountpoint())) << bad;
  }
  ASSERT_NO_FATAL_FAILURE(Mount());
}

}  // namespace
}  // namespace snapdisk::testing
