// snapdisk mount | unmount.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "cli/commands.h"
#include "fs/mount.h"
#include "fs/mount_table.h"

namespace snapdisk::cli {
namespace {

int RunFusermount(const std::string& mountpoint);

// The store behind a snapdisk mount, or "" if `mountpoint` is not one.
std::string StoreOfMount(const std::string& mountpoint) {
  char real[PATH_MAX];
  if (realpath(mountpoint.c_str(), real) == nullptr) return "";
  std::string found;
  for (const fs::SnapdiskMount& m : fs::SnapdiskMounts())
    if (m.mountpoint == real) found = m.store;  // the last (topmost) mount wins
  return found;
}

// Waits until the daemon serving `store` has exited: it holds the store's
// LOCK until its last write is synced and the index closed, so that a
// `snapdisk fsck` or a new mount right after unmount finds the store free.
bool WaitForStoreRelease(const std::string& store, std::chrono::seconds limit) {
  int fd = ::open((store + "/LOCK").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return true;  // nothing to wait for
  const auto deadline = std::chrono::steady_clock::now() + limit;
  bool told = false;
  while (::flock(fd, LOCK_SH | LOCK_NB) != 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::close(fd);
      return false;
    }
    if (!told) {
      std::fprintf(stderr, "snapdisk: waiting for the daemon of %s to close the store...\n", store.c_str());
      told = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a lock, not hoping
  }
  ::close(fd);  // drops the shared lock
  return true;
}

// Runs `fusermount3 -u MOUNTPOINT`, then waits for the daemon to release the
// store; returns fusermount3's exit code (1 if the daemon does not finish).
int Unmount(const std::string& mountpoint) {
  const std::string store = StoreOfMount(mountpoint);
  int rc = RunFusermount(mountpoint);
  if (rc != 0 || store.empty()) return rc;
  if (!WaitForStoreRelease(store, std::chrono::seconds(120))) {
    std::fprintf(stderr, "snapdisk: %s is unmounted but its daemon still holds %s after 120 s\n",
                 mountpoint.c_str(), store.c_str());
    return 1;
  }
  return 0;
}

// Runs `fusermount3 -u MOUNTPOINT` and returns its exit code.
int RunFusermount(const std::string& mountpoint) {
  pid_t pid = fork();
  if (pid < 0) {
    std::fprintf(stderr, "snapdisk: fork: %s\n", std::strerror(errno));
    return 1;
  }
  if (pid == 0) {
    const char* argv[] = {"fusermount3", "-u", mountpoint.c_str(), nullptr};
    execvp(argv[0], const_cast<char* const*>(argv));
    std::fprintf(stderr, "snapdisk: cannot run fusermount3: %s\n", std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      std::fprintf(stderr, "snapdisk: waitpid: %s\n", std::strerror(errno));
      return 1;
    }
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 1;
}

}  // namespace

void AddMountCommands(CLI::App& app) {
  auto mount = std::make_shared<fs::MountOptions>();
  CLI::App* cmd =
      app.add_subcommand("mount", "Mount a store (a directory, created if absent) on MOUNTPOINT");
  cmd->add_option("STORE", mount->store, "Store directory")->required();
  cmd->add_option("MOUNTPOINT", mount->mountpoint, "Existing directory to mount on")->required();
  cmd->add_flag("-f,--foreground", mount->foreground, "Stay in the foreground, log to stderr");
  cmd->add_flag("-d,--debug", mount->debug, "Trace FUSE requests (implies --foreground)");
  cmd->add_option("-o", mount->options,
                  "Mount options, comma-separated (allow_other, ro, block_size=N for a new "
                  "store, cache=direct|page for live images, uring=auto|on|off and uring_threads=N "
                  "for the kernel transport, read_poll=USEC (0: off) for cold small reads, ...); "
                  "may repeat")
      ->allow_extra_args(false);
  cmd->add_option("--threads", mount->threads, "Most FUSE worker threads (default: libfuse's)");
  cmd->callback([mount] {
    int rc = fs::RunMount(*mount);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });

  auto mountpoint = std::make_shared<std::string>();
  CLI::App* umount = app.add_subcommand("unmount",
                                        "Unmount a snapdisk mount (fusermount3 -u), then wait (at most 120 s) "
                                        "until its daemon has written the store's data to disk and released it");
  umount->alias("umount");
  umount->add_option("MOUNTPOINT", *mountpoint, "Mounted directory")->required();
  umount->callback([mountpoint] {
    int rc = Unmount(*mountpoint);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace snapdisk::cli
