// `snapdisk mount STORE MNT` without -f: it returns only once the store is
// open and the mount is ready, and the daemon goes away on unmount.
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "mount_fixture.h"

namespace snapdisk::testing {
namespace {

class DaemonModeTest : public MountFixture {};

// Pids of processes whose command line mentions `needle`.
std::vector<pid_t> ProcessesMentioning(const std::string& needle) {
  std::vector<pid_t> pids;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return pids;
  while (dirent* e = readdir(proc)) {
    pid_t pid = static_cast<pid_t>(atoi(e->d_name));
    if (pid <= 0 || pid == getpid()) continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/cmdline");
    std::stringstream ss;
    ss << in.rdbuf();
    if (ss.str().find(needle) != std::string::npos) pids.push_back(pid);
  }
  closedir(proc);
  return pids;
}

TEST_F(DaemonModeTest, DaemonizesAfterTheMountIsReadyAndExitsOnUnmount) {
  ASSERT_TRUE(WriteWholeFile(P("vm1.img"), "persisted"));
  ASSERT_NO_FATAL_FAILURE(Unmount());
  const std::string mnt2 = root() + "/mnt2";
  ASSERT_EQ(mkdir(mnt2.c_str(), 0755), 0);
  std::string cmd = ShellQuote(daemon_bin()) + " mount " + ShellQuote(store()) + " " + ShellQuote(mnt2);
  RunResult r = Run(cmd, std::chrono::seconds(20));
  bool mounted_now = IsMountpoint(mnt2);  // right when the command returned
  EXPECT_TRUE(r.ok()) << Describe(cmd, r);
  EXPECT_TRUE(mounted_now) << "snapdisk mount returned before the mount was ready";
  if (mounted_now) {
    EXPECT_EQ(ReadWholeFile(mnt2 + "/vm1.img"), "persisted");
    std::string u = "fusermount3 -u " + ShellQuote(mnt2);
    RunResult ur = Run(u);
    EXPECT_TRUE(ur.ok()) << Describe(u, ur);
    if (!ur.ok()) Run("fusermount3 -u -z " + ShellQuote(mnt2));
  }
  // The daemon exits after the unmount (and releases the store).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::vector<pid_t> left;
  for (;;) {
    left = ProcessesMentioning(mnt2);
    if (left.empty() || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(left.empty()) << "the daemon (pid " << (left.empty() ? 0 : left[0])
                            << ") is still running 10 s after the unmount";
  for (pid_t pid : left) kill(pid, SIGKILL);
  // The store can be mounted again by the fixture (TearDown unmounts it).
  ASSERT_NO_FATAL_FAILURE(Mount());
  EXPECT_EQ(ReadWholeFile(P("vm1.img")), "persisted");
}

}  // namespace
}  // namespace snapdisk::testing
