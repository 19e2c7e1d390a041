// snapdisk mount | unmount.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "fs/mount.h"

namespace snapdisk::cli {
namespace {

// Runs `fusermount3 -u MOUNTPOINT` and returns its exit code.
int Unmount(const std::string& mountpoint) {
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
                  "store, ...); may repeat")
      ->allow_extra_args(false);
  cmd->add_option("--threads", mount->threads, "Most FUSE worker threads (default: libfuse's)");
  cmd->callback([mount] {
    int rc = fs::RunMount(*mount);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });

  auto mountpoint = std::make_shared<std::string>();
  CLI::App* umount = app.add_subcommand("unmount", "Unmount a snapdisk mount (fusermount3 -u)");
  umount->alias("umount");
  umount->add_option("MOUNTPOINT", *mountpoint, "Mounted directory")->required();
  umount->callback([mountpoint] {
    int rc = Unmount(*mountpoint);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace snapdisk::cli
