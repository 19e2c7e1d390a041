#include "fs/mount.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fs/control.h"
#include "fs/fuse.h"
#include "fs/log.h"
#include "fs/mount_table.h"
#include "fs/ops.h"
#include "fs/snapfs.h"
#include "fs/uring_transport.h"
#include "snapdisk/options.h"
#include "snapdisk/store.h"

namespace snapdisk::fs {
namespace {

constexpr unsigned kMaxIdleThreads = 10;

// Options of mount(8) and fstab that are no business of libfuse, and atime
// flavours libfuse 3.14 rejects (the kernel's default, relatime, applies).
bool IsDroppedOption(std::string_view opt) {
  static constexpr std::string_view kDropped[] = {
      "defaults",    "auto",     "noauto",     "user",     "nouser",     "users",    "owner",
      "group",       "nofail",   "_netdev",    "relatime", "norelatime", "diratime", "nodiratime",
      "strictatime", "lazytime", "nolazytime", "iversion", "noiversion", "silent",   "loud"};
  for (std::string_view d : kDropped) {
    if (opt == d) return true;
  }
  return opt.starts_with("x-") || opt.starts_with("comment=");
}

// libfuse option values escape ',' and '\' with a backslash.
std::string EscapeOptionValue(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == ',' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// Says on stderr why `opt` is refused; returns false (for ParsedOptions::ok).
bool BadOption(std::string_view opt, std::string_view hint) {
  std::fprintf(stderr, "snapdisk: bad option '%.*s'%s%.*s%s\n", static_cast<int>(opt.size()),
               opt.data(), hint.empty() ? "" : " (", static_cast<int>(hint.size()), hint.data(),
               hint.empty() ? "" : ")");
  return false;
}

// The N of NAME=N if it is a number in [lo, hi] (strtoul's `base`).
std::optional<unsigned long> NumberOption(std::string_view opt, int base, unsigned long lo,
                                          unsigned long hi) {
  std::string digits(opt.substr(opt.find('=') + 1));
  char* end = nullptr;
  errno = 0;
  unsigned long value = std::strtoul(digits.c_str(), &end, base);
  if (digits.empty() || *end != '\0' || errno != 0 || value < lo || value > hi) return std::nullopt;
  return value;
}

// Which of `values` the VALUE of NAME=VALUE is.
std::optional<size_t> ChoiceOption(std::string_view opt,
                                   std::initializer_list<std::string_view> values) {
  std::string_view value = opt.substr(opt.find('=') + 1);
  size_t i = 0;
  for (std::string_view v : values) {
    if (v == value) return i;
    ++i;
  }
  return std::nullopt;
}

struct ParsedOptions {
  std::string fuse_options;  // comma-separated, for -o
  Options store;
  FsConfig fs;
  UringConfig uring;
  bool ok = true;
};

ParsedOptions ParseOptions(const MountOptions& mount, const std::string& abs_store) {
  ParsedOptions parsed;
  parsed.fuse_options =
      "default_permissions,fsname=snapdisk:" + EscapeOptionValue(abs_store) + ",subtype=snapdisk";
  for (const std::string& group : mount.options) {
    size_t start = 0;
    while (start <= group.size()) {
      size_t comma = group.find(',', start);
      if (comma == std::string::npos) comma = group.size();
      std::string_view opt(group.data() + start, comma - start);
      start = comma + 1;
      if (opt.empty() || IsDroppedOption(opt)) continue;
      if (opt.starts_with("block_size=")) {
        auto value = NumberOption(opt, 0, 1, 1ul << 30);
        if (!value) parsed.ok = BadOption(opt, "");
        parsed.store.block_size = static_cast<uint32_t>(value.value_or(0));
        continue;
      }
      if (opt.starts_with("cache=")) {
        auto choice = ChoiceOption(opt, {"direct", "page"});
        if (!choice) parsed.ok = BadOption(opt, "cache=direct or cache=page");
        parsed.fs.live_direct_io = choice.value_or(0) == 0;
        continue;
      }
      if (opt.starts_with("uring=")) {
        static constexpr UringConfig::Mode kModes[] = {
            UringConfig::Mode::kAuto, UringConfig::Mode::kOn, UringConfig::Mode::kOff};
        auto choice = ChoiceOption(opt, {"auto", "on", "off"});
        if (!choice) parsed.ok = BadOption(opt, "uring=auto, uring=on or uring=off");
        parsed.uring.mode = kModes[choice.value_or(0)];
        continue;
      }
      if (opt.starts_with("read_poll=")) {
        auto value = NumberOption(opt, 10, 0, 10000);
        if (!value) parsed.ok = BadOption(opt, "read_poll=0..10000 (microseconds; 0: off)");
        parsed.store.read_poll_us = static_cast<uint32_t>(value.value_or(0));
        continue;
      }
      if (opt.starts_with("uring_threads=")) {
        auto value = NumberOption(opt, 10, 1, 64);
        if (!value) parsed.ok = BadOption(opt, "uring_threads=1..64");
        parsed.uring.threads_per_queue = static_cast<unsigned>(value.value_or(1));
        continue;
      }
      parsed.fuse_options += ',';
      parsed.fuse_options += opt;
    }
  }
  return parsed;
}

// Tells the waiting parent (if any) how the mount went; at most once.
class ParentNotifier {
 public:
  explicit ParentNotifier(int fd) : fd_(fd) {}
  ~ParentNotifier() { Notify(1); }
  void Notify(char code) {
    if (fd_ < 0) return;
    ssize_t ignored = write(fd_, &code, 1);
    (void)ignored;
    close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// Detaches from the terminal once mounted: stdio to /dev/null, log to syslog.
void BecomeDaemon() {
  if (chdir("/") != 0) { /* not fatal: every path in use is absolute */
  }
  int null_fd = open("/dev/null", O_RDWR);
  if (null_fd >= 0) {
    dup2(null_fd, STDIN_FILENO);
    dup2(null_fd, STDOUT_FILENO);
    dup2(null_fd, STDERR_FILENO);
    if (null_fd > STDERR_FILENO) close(null_fd);
  }
  LogToSyslog(true);
}

int LoopMt(fuse_session* se, unsigned max_threads) {
  fuse_loop_config* config = fuse_loop_cfg_create();
  if (config == nullptr) return fuse_session_loop(se);
  fuse_loop_cfg_set_clone_fd(config, 0);
  fuse_loop_cfg_set_idle_threads(config, kMaxIdleThreads);
  if (max_threads != 0) fuse_loop_cfg_set_max_threads(config, max_threads);
  int rc = fuse_session_loop_mt(se, config);
  fuse_loop_cfg_destroy(config);
  return rc;
}

// Everything after the (optional) fork: open, mount, serve, tear down.
int Serve(const MountOptions& mount, const std::string& abs_store, const ParsedOptions& parsed,
          ParentNotifier* parent) {
  std::unique_ptr<Store> store;
  Status st = Store::Open(parsed.store, abs_store, &store);
  if (!st.ok()) {
    std::string hint = st.Is(Status::Code::kBusy) ? "; " + StoreInUseHint(abs_store) : "";
    std::fprintf(stderr, "snapdisk: cannot open store %s: %s%s\n", mount.store.c_str(),
                 st.ToString().c_str(), hint.c_str());
    return 1;
  }
  auto fs = std::make_unique<SnapFs>(store.get(), parsed.fs);

  std::vector<std::string> arg_strings = {"snapdisk", "-o", parsed.fuse_options};
  if (mount.debug) arg_strings.push_back("-d");
  std::vector<char*> argv;
  for (std::string& s : arg_strings) argv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fuse_session* se = fuse_session_new(&args, &SnapdiskOps(), sizeof(fuse_lowlevel_ops), fs.get());
  fuse_opt_free_args(&args);
  if (se == nullptr) {
    std::fprintf(stderr, "snapdisk: cannot mount %s: bad mount options '%s'\n", mount.store.c_str(),
                 parsed.fuse_options.c_str());
    return 1;
  }
  fs->set_session(se);
  if (fuse_set_signal_handlers(se) != 0) {
    std::fprintf(stderr, "snapdisk: cannot install signal handlers\n");
    fuse_session_destroy(se);
    return 1;
  }
  // Undoes the session's set-up when a later step fails (the caller has
  // said why on stderr): the exit status of a failed mount.
  auto give_up = [se](bool mounted) {
    if (mounted) fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    return 1;
  };
  // Before the mount: the kernel decides at mount time whether to offer
  // io_uring, and the rings must exist before it is negotiated.
  UringTransport transport;
  if (Status ts = transport.Prepare(parsed.uring); !ts.ok()) {
    std::fprintf(stderr, "snapdisk: cannot mount %s with uring=on: %s\n", mount.store.c_str(),
                 ts.message().c_str());
    return give_up(false);
  }
  if (fuse_session_mount(se, mount.mountpoint.c_str()) != 0) {
    std::fprintf(stderr, "snapdisk: cannot mount %s on %s (see the message above)\n",
                 mount.store.c_str(), mount.mountpoint.c_str());
    return give_up(false);
  }
  if (Status ts = transport.Attach(se); !ts.ok()) {
    std::fprintf(stderr, "snapdisk: cannot mount %s: %s\n", mount.store.c_str(),
                 ts.message().c_str());
    return give_up(true);
  }
  if (parent != nullptr) {
    BecomeDaemon();
    parent->Notify(0);
  }
  Log(LogLevel::kInfo, "snapdisk: serving {} on {}", abs_store, mount.mountpoint);
  // The control channel (fs/control.h). Without it the mount still works;
  // only the CLI verbs that need it (diff, df, du, scrub) fail.
  ControlServer control(store.get(), abs_store + "/" + kControlSocketName);
  if (Status cs = control.Start(); !cs.ok()) {
    Log(LogLevel::kError, "snapdisk: no control channel: {}", cs.ToString());
  }

  int rc = LoopMt(se, mount.threads);

  control.Stop();  // before the store closes: no request may outlive it

  fuse_session_unmount(se);
  // The mount is gone but the store stays locked until the sync below is
  // done, which after a large write takes seconds: say so, or a new mount
  // meanwhile looks refused for no reason.
  const auto unmounted_at = std::chrono::steady_clock::now();
  Log(LogLevel::kInfo, "snapdisk: {} unmounted; writing its data to disk before closing {}", mount.mountpoint,
      abs_store);
  // After the unmount: the kernel has ended every ring entry by now (or
  // does so at once), so the ring threads are done with their requests.
  transport.Stop();
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  fs.reset();  // closes handles the kernel never released, before the store goes
  Status synced = store->SyncAll();
  store.reset();
  if (rc < 0) {
    Log(LogLevel::kError, "snapdisk: session loop failed: {}", std::strerror(-rc));
    return 1;
  }
  if (!synced.ok()) {
    Log(LogLevel::kError, "snapdisk: final sync of {} failed: {}", abs_store, synced.ToString());
    return 1;
  }
  const std::chrono::duration<double> closing = std::chrono::steady_clock::now() - unmounted_at;
  Log(LogLevel::kInfo, "snapdisk: {} closed, {:.1f} s after the unmount", abs_store, closing.count());
  return 0;
}

}  // namespace

int RunMount(const MountOptions& mount_in) {
  MountOptions mount = mount_in;
  if (mount.debug) mount.foreground = true;
  // The store holds whole disks: whatever umask the daemon inherits (a unit
  // file or a shell with umask 0), what it creates there (index, data file,
  // sockets) is the owner's only. Modes of images and directories on the
  // mount are not affected: they come from the callers' requests.
  umask(077);
  SetDebugLogging(mount.debug);

  const std::string abs_store = StoreSourcePath(mount.store);
  std::error_code ec;
  std::string abs_mountpoint =
      std::filesystem::absolute(mount.mountpoint, ec).lexically_normal().string();
  if (!ec) mount.mountpoint = abs_mountpoint;

  struct stat st {};
  if (stat(mount.mountpoint.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    std::fprintf(stderr, "snapdisk: mount point %s is not a directory\n",
                 mount_in.mountpoint.c_str());
    return 1;
  }
  ParsedOptions parsed = ParseOptions(mount, abs_store);
  if (!parsed.ok) return 1;

  if (mount.foreground) return Serve(mount, abs_store, parsed, nullptr);

  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    std::fprintf(stderr, "snapdisk: pipe: %s\n", std::strerror(errno));
    return 1;
  }
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    std::fprintf(stderr, "snapdisk: fork: %s\n", std::strerror(errno));
    return 1;
  }
  if (pid > 0) {  // parent: wait for the child's verdict
    close(pipe_fds[1]);
    char code = 1;
    ssize_t n;
    do {
      n = read(pipe_fds[0], &code, 1);
    } while (n < 0 && errno == EINTR);
    close(pipe_fds[0]);
    if (n == 1 && code == 0) return 0;
    int status = 0;
    waitpid(pid, &status, 0);
    return 1;
  }
  close(pipe_fds[0]);
  setsid();
  ParentNotifier parent(pipe_fds[1]);
  int rc = Serve(mount, abs_store, parsed, &parent);
  parent.Notify(rc == 0 ? 0 : 1);
  return rc;
}

}  // namespace snapdisk::fs
