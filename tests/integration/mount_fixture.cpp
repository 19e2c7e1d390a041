#include "mount_fixture.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

extern char** environ;

namespace snapdisk::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How long a mount may take to appear, and the daemon to exit after unmount.
constexpr auto kMountTimeout = std::chrono::seconds(10);
constexpr auto kExitTimeout = std::chrono::seconds(30);

int PidfdOpen(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
#else
  errno = ENOSYS;
  return -1;
#endif
}

int MillisUntil(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::max<int64_t>(0, left));
}

std::string DescribeWaitStatus(int st) {
  if (WIFEXITED(st)) return fmt::format("exit status {}", WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return fmt::format("killed by signal {} ({})", WTERMSIG(st), strsignal(WTERMSIG(st)));
  return fmt::format("wait status {:#x}", st);
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string UnescapeMountinfo(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool octal = true;
      for (size_t k = 1; k <= 3; ++k) {
        if (i + k >= s.size() || s[i + k] < '0' || s[i + k] > '7') { octal = false; break; }
        v = v * 8 + (s[i + k] - '0');
      }
      if (octal) { out.push_back(static_cast<char>(v)); i += 3; continue; }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::vector<std::string> Mountpoints() {
  std::vector<std::string> result;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mountpoint;
    if (fields >> id >> parent >> devno >> root >> mountpoint) {
      result.push_back(UnescapeMountinfo(mountpoint));
    }
  }
  return result;
}

std::string Tail(const std::string& s, size_t n) {
  if (s.size() <= n) return s;
  return "...(" + std::to_string(s.size() - n) + " bytes cut)...\n" + s.substr(s.size() - n);
}

}  // namespace

const char* ErrnoName(int e) {
  if (e == 0) return "0 (no error)";
  const char* name = strerrorname_np(e);
  return name != nullptr ? name : "unknown errno";
}

bool WaitFor(const std::function<bool()>& done, std::chrono::seconds limit) {
  auto deadline = Clock::now() + limit;
  for (;;) {
    if (done()) return true;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(50));
  }
}

bool IsMountpoint(const std::string& path) {
  auto mps = Mountpoints();
  return std::find(mps.begin(), mps.end(), path) != mps.end();
}

std::string ShellQuote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out.push_back(c);
  }
  out.push_back('\'');
  return out;
}

std::string Describe(const std::string& cmd, const RunResult& r) {
  return fmt::format("command: {}\nexit: {}{}\nstdout:\n{}\nstderr:\n{}", cmd, r.exit_code,
                     r.timed_out ? " (timed out, killed)" : "", Tail(r.out, 4000),
                     Tail(r.err, 4000));
}

RunResult RunShell(const std::string& cmd, std::chrono::seconds timeout) {
  RunResult result;
  int outp[2], errp[2];
  if (pipe2(outp, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0) {
    result.err = fmt::format("pipe2: {}", strerror(errno));
    return result;
  }
  // Everything the child needs is built before fork: only async-signal-safe
  // calls happen between fork and exec.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    if (strncmp(*e, "LC_ALL=", 7) != 0) env_strings.emplace_back(*e);
  }
  env_strings.emplace_back("LC_ALL=C");
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string sh = "/bin/sh", dash_c = "-c", command = cmd;
  char* argv[] = {sh.data(), dash_c.data(), command.data(), nullptr};

  pid_t pid = fork();
  if (pid < 0) {
    result.err = fmt::format("fork: {}", strerror(errno));
    return result;
  }
  if (pid == 0) {
    setpgid(0, 0);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(outp[1], 1);
    dup2(errp[1], 2);
    execve(argv[0], argv, envp.data());
    _exit(127);
  }
  setpgid(pid, pid);  // also in the parent, so a timeout can kill the group at once
  close(outp[1]);
  close(errp[1]);
  int pidfd = PidfdOpen(pid);
  fcntl(outp[0], F_SETFL, O_NONBLOCK);
  fcntl(errp[0], F_SETFL, O_NONBLOCK);

  auto deadline = Clock::now() + timeout;
  bool out_open = true, err_open = true, exited = false;
  int status = 0;
  auto drain = [&](int fd, std::string* into, bool* open_flag) {
    char buf[65536];
    for (;;) {
      ssize_t n = read(fd, buf, sizeof buf);
      if (n > 0) { into->append(buf, static_cast<size_t>(n)); continue; }
      if (n == 0) *open_flag = false;
      return;  // EOF, EAGAIN or error
    }
  };
  while (true) {
    if (!exited && waitpid(pid, &status, WNOHANG) == pid) exited = true;
    if (exited) {
      // A daemonizing command may leave a grandchild holding the pipes:
      // collect what is there and stop instead of waiting for EOF.
      if (out_open) drain(outp[0], &result.out, &out_open);
      if (err_open) drain(errp[0], &result.err, &err_open);
      break;
    }
    if (Clock::now() >= deadline) {
      result.timed_out = true;
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      exited = true;
      continue;
    }
    std::vector<pollfd> fds;
    if (out_open) fds.push_back({outp[0], POLLIN, 0});
    if (err_open) fds.push_back({errp[0], POLLIN, 0});
    if (pidfd >= 0) fds.push_back({pidfd, POLLIN, 0});
    int wait_ms = MillisUntil(deadline);
    if (pidfd < 0) wait_ms = std::min(wait_ms, 20);
    poll(fds.data(), fds.size(), wait_ms);
    if (out_open) drain(outp[0], &result.out, &out_open);
    if (err_open) drain(errp[0], &result.err, &err_open);
  }
  close(outp[0]);
  close(errp[0]);
  if (pidfd >= 0) close(pidfd);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status)) result.exit_code = 128 + WTERMSIG(status);
  return result;
}

std::string PatternBytes(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
  for (size_t i = 0; i < n; i += 8) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    uint64_t v = x * 0x2545F4914F6CDD1Dull;
    memcpy(out.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return out;
}

std::string ReadWholeFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    ADD_FAILURE() << "open(" << path << ", O_RDONLY): " << ErrnoName(errno);
    return {};
  }
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) {
      ADD_FAILURE() << "read(" << path << "): " << ErrnoName(errno);
      break;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

namespace {
bool WriteFd(int fd, const std::string& path, uint64_t offset, std::string_view data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = pwrite(fd, data.data() + done, data.size() - done,
                       static_cast<off_t>(offset + done));
    if (n <= 0) {
      ADD_FAILURE() << "pwrite(" << path << ", offset " << offset + done
                    << "): " << (n < 0 ? ErrnoName(errno) : "wrote 0 bytes");
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}
}  // namespace

bool WriteWholeFile(const std::string& path, std::string_view data) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    ADD_FAILURE() << "open(" << path << ", O_CREAT|O_TRUNC): " << ErrnoName(errno);
    return false;
  }
  bool ok = WriteFd(fd, path, 0, data);
  if (close(fd) != 0) {
    ADD_FAILURE() << "close(" << path << "): " << ErrnoName(errno);
    ok = false;
  }
  return ok;
}

bool PWrite(const std::string& path, uint64_t offset, std::string_view data, bool do_fsync) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    ADD_FAILURE() << "open(" << path << ", O_WRONLY|O_CREAT): " << ErrnoName(errno);
    return false;
  }
  bool ok = WriteFd(fd, path, offset, data);
  if (ok && do_fsync && fsync(fd) != 0) {
    ADD_FAILURE() << "fsync(" << path << "): " << ErrnoName(errno);
    ok = false;
  }
  if (close(fd) != 0) {
    ADD_FAILURE() << "close(" << path << "): " << ErrnoName(errno);
    ok = false;
  }
  return ok;
}

std::string PRead(const std::string& path, uint64_t offset, size_t len) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    ADD_FAILURE() << "open(" << path << ", O_RDONLY): " << ErrnoName(errno);
    return {};
  }
  std::string out(len, '\0');
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, out.data() + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      ADD_FAILURE() << "pread(" << path << ", offset " << offset + done << "): " << ErrnoName(errno);
      break;
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  close(fd);
  return out;
}

// ---- MountFixture ----------------------------------------------------------

std::string MountFixture::daemon_bin() const {
  if (const char* env = getenv("SNAPDISK_BIN"); env != nullptr && *env != '\0') return env;
#ifdef SNAPDISK_BIN
  return SNAPDISK_BIN;
#else
  return "snapdisk";
#endif
}

std::string MountFixture::DaemonLog() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void MountFixture::SetUp() {
  char tmpl[] = "/tmp/snapdisk-it-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr) << "mkdtemp: " << ErrnoName(errno);
  root_ = tmpl;
  store_ = root_ + "/store";
  mnt_ = root_ + "/mnt";
  scratch_ = root_ + "/scratch";
  log_path_ = root_ + "/daemon.log";
  ASSERT_EQ(mkdir(mnt_.c_str(), 0755), 0) << ErrnoName(errno);
  ASSERT_EQ(mkdir(scratch_.c_str(), 0755), 0) << ErrnoName(errno);
  if (uint64_t bytes = StoreFilesystemBytes(); bytes > 0) {
    ASSERT_EQ(mkdir(store_.c_str(), 0700), 0) << ErrnoName(errno);
    std::string cmd = fmt::format("mount -t tmpfs -o size={} snapdisk-it-store {}", bytes,
                                  ShellQuote(store_));
    RunResult r = RunShell(cmd);
    ASSERT_TRUE(r.ok()) << Describe(cmd, r);
    store_on_tmpfs_ = true;
  }
  ASSERT_NO_FATAL_FAILURE(Mount());
}

void MountFixture::StartDaemon() {
  int logfd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  ASSERT_GE(logfd, 0) << "open " << log_path_ << ": " << ErrnoName(errno);
  std::vector<std::string> args = {daemon_bin(), "mount", store_, mnt_, "-f"};
  if (!mount_options_.empty()) {
    args.push_back("-o");
    args.push_back(mount_options_);
  }
  for (const std::string& extra : ExtraMountArgs()) args.push_back(extra);
  std::string header = fmt::format("=== {} ===\n", fmt::join(args, " "));
  (void)!write(logfd, header.data(), header.size());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  ASSERT_GE(pid, 0) << "fork: " << ErrnoName(errno);
  if (pid == 0) {
    // If the test process dies, take the daemon with it; the dead mount is
    // then cleaned by .ci/test.sh.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(logfd, 1);
    dup2(logfd, 2);
    execv(argv[0], argv.data());
    const char msg[] = "integration test: execv of the snapdisk binary failed\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(127);
  }
  close(logfd);
  daemon_pid_ = pid;
  daemon_pidfd_ = PidfdOpen(pid);
}

void MountFixture::WaitForMount() {
  // /proc/self/mountinfo signals POLLPRI when the mount table changes; it is
  // opened before the first check so a change in between is not missed.
  int mfd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
  auto deadline = Clock::now() + kMountTimeout;
  std::string failure;
  for (;;) {
    if (IsMountpoint(mnt_)) break;
    int st = 0;
    if (waitpid(daemon_pid_, &st, WNOHANG) == daemon_pid_) {
      daemon_pid_ = -1;
      if (daemon_pidfd_ >= 0) close(daemon_pidfd_);
      daemon_pidfd_ = -1;
      failure = fmt::format("snapdisk exited ({}) before {} was mounted", DescribeWaitStatus(st), mnt_);
      break;
    }
    if (Clock::now() >= deadline) {
      failure = fmt::format("{} was not mounted within {} s of starting snapdisk", mnt_,
                            std::chrono::duration_cast<std::chrono::seconds>(kMountTimeout).count());
      break;
    }
    // poll() ignores negative fds; without either, fall back to short waits.
    pollfd fds[2] = {{mfd, POLLPRI, 0}, {daemon_pidfd_, POLLIN, 0}};
    int wait_ms = MillisUntil(deadline);
    if (mfd < 0 || daemon_pidfd_ < 0) wait_ms = std::min(wait_ms, 20);
    poll(fds, 2, wait_ms);
  }
  if (mfd >= 0) close(mfd);
  if (failure.empty()) {
    // The mount is there; make sure the daemon answers (a daemon that died
    // after mounting leaves a mount that fails with ENOTCONN).
    struct stat st;
    if (stat(mnt_.c_str(), &st) != 0) {
      failure = fmt::format("{} is mounted but stat() fails with {}", mnt_, ErrnoName(errno));
    } else if (!S_ISDIR(st.st_mode)) {
      failure = fmt::format("{} is mounted but is not a directory", mnt_);
    } else {
      return;
    }
  }
  // Failed: leave nothing behind, then report with the daemon's log.
  if (daemon_pid_ > 0) {
    kill(daemon_pid_, SIGKILL);
    WaitDaemonExit(kExitTimeout);
  }
  if (IsMountpoint(mnt_)) RunShell("fusermount3 -u -z " + ShellQuote(mnt_), std::chrono::seconds(30));
  FAIL() << failure << "\n--- daemon log (" << log_path_ << ") ---\n" << Tail(DaemonLog(), 8000);
}

int MountFixture::WaitDaemonExit(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  int st = 0;
  for (;;) {
    pid_t r = waitpid(daemon_pid_, &st, WNOHANG);
    if (r == daemon_pid_ || (r < 0 && errno == ECHILD)) break;
    if (Clock::now() >= deadline) {
      kill(daemon_pid_, SIGKILL);
      waitpid(daemon_pid_, &st, 0);
      st = -1;
      break;
    }
    pollfd pfd{daemon_pidfd_, POLLIN, 0};
    int wait_ms = MillisUntil(deadline);
    if (daemon_pidfd_ < 0) wait_ms = std::min(wait_ms, 20);
    poll(&pfd, 1, wait_ms);
  }
  if (daemon_pidfd_ >= 0) close(daemon_pidfd_);
  daemon_pidfd_ = -1;
  daemon_pid_ = -1;
  return st;
}

void MountFixture::Mount() {
  ASSERT_FALSE(mounted()) << "Mount() while the daemon is running";
  ASSERT_FALSE(IsMountpoint(mnt_)) << mnt_ << " is already a mountpoint";
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_NO_FATAL_FAILURE(WaitForMount());
}

void MountFixture::Unmount() {
  if (!mounted()) {
    if (IsMountpoint(mnt_)) RunShell("fusermount3 -u -z " + ShellQuote(mnt_));
    return;
  }
  std::string cmd = "fusermount3 -u " + ShellQuote(mnt_);
  RunResult r = RunShell(cmd, std::chrono::seconds(60));
  if (!r.ok()) {
    ADD_FAILURE() << "unmount failed (something still uses the mount?)\n" << Describe(cmd, r);
    RunShell("fusermount3 -u -z " + ShellQuote(mnt_), std::chrono::seconds(30));
  }
  int st = WaitDaemonExit(kExitTimeout);
  if (st == -1) {
    ADD_FAILURE() << "snapdisk did not exit within 30 s after the unmount; SIGKILLed it\n"
                  << "--- daemon log ---\n" << Tail(DaemonLog(), 8000);
  } else {
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0)
        << "snapdisk ended with " << DescribeWaitStatus(st) << " after the unmount\n"
        << "--- daemon log ---\n" << Tail(DaemonLog(), 8000);
  }
  if (IsMountpoint(mnt_)) {
    ADD_FAILURE() << mnt_ << " still mounted after the daemon exited";
    RunShell("fusermount3 -u -z " + ShellQuote(mnt_), std::chrono::seconds(30));
  }
}

void MountFixture::Remount() {
  ASSERT_NO_FATAL_FAILURE(Unmount());
  ASSERT_NO_FATAL_FAILURE(Mount());
}

void MountFixture::Kill9() {
  ASSERT_TRUE(mounted()) << "Kill9() without a running daemon";
  ASSERT_EQ(kill(daemon_pid_, SIGKILL), 0) << ErrnoName(errno);
  int st = WaitDaemonExit(kExitTimeout);
  EXPECT_TRUE(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
      << "daemon did not die of SIGKILL: " << (st == -1 ? "timeout" : DescribeWaitStatus(st));
  std::string cmd = "fusermount3 -u -z " + ShellQuote(mnt_);
  RunResult r = RunShell(cmd, std::chrono::seconds(30));
  EXPECT_TRUE(r.ok()) << Describe(cmd, r);
  EXPECT_FALSE(IsMountpoint(mnt_));
}

void MountFixture::ExpectSameBytes(const std::string& a, const std::string& b,
                                   const std::string& context) {
  std::string cmd = "cmp " + ShellQuote(a) + " " + ShellQuote(b);
  RunResult r = RunShell(cmd);
  EXPECT_TRUE(r.ok()) << context << (context.empty() ? "" : ": ") << a << " and " << b
                      << " differ\n" << Describe(cmd, r);
}

std::string MountFixture::Sha256(const std::string& path) {
  std::string cmd = "sha256sum " + ShellQuote(path);
  RunResult r = RunShell(cmd);
  EXPECT_TRUE(r.ok()) << Describe(cmd, r);
  if (!r.ok() || r.out.size() < 64) return "sha256sum failed: " + r.err;
  return r.out.substr(0, 64);
}

uint64_t MountFixture::StoreDiskUsage() {
  // RocksDB preallocates its WAL (*.log, ~18 MiB) and MANIFEST files; that
  // space comes and goes with index flushes and is noise, not data.
  std::string cmd = "du -sk --exclude='*.log' --exclude='MANIFEST-*' " + ShellQuote(store_);
  RunResult r = RunShell(cmd);
  EXPECT_TRUE(r.ok()) << Describe(cmd, r);
  return std::strtoull(r.out.c_str(), nullptr, 10) * 1024;
}

void MountFixture::TearDown() {
  // Safety net for tests that stopped half-way: guest file systems mounted
  // under our directory and loop devices backed by files in the mount would
  // keep the FUSE mount busy.
  for (const auto& mp : Mountpoints()) {
    if (mp != mnt_ && !(store_on_tmpfs_ && mp == store_) && mp.rfind(root_ + "/", 0) == 0) {
      ADD_FAILURE() << "test left " << mp << " mounted; unmounting it";
      RunShell("umount " + ShellQuote(mp) + " || umount -l " + ShellQuote(mp));
    }
  }
  if (!mnt_.empty() && geteuid() == 0) {
    RunResult loops = RunShell("losetup -l -n -O NAME,BACK-FILE 2>/dev/null");
    std::istringstream lines(loops.out);
    std::string dev, back;
    while (lines >> dev && std::getline(lines, back)) {
      back.erase(0, back.find_first_not_of(' '));
      if (back.rfind(mnt_ + "/", 0) == 0) {
        ADD_FAILURE() << "test left loop device " << dev << " on " << back << "; detaching it";
        RunShell("losetup -d " + ShellQuote(dev));
      }
    }
  }
  Unmount();
  if (store_on_tmpfs_) {
    std::string cmd = "umount " + ShellQuote(store_);
    RunResult r = RunShell(cmd);
    if (!r.ok()) {
      ADD_FAILURE() << Describe(cmd, r);
      RunShell("umount -l " + ShellQuote(store_));
    }
    store_on_tmpfs_ = false;
  }
  if (HasFailure() && !log_path_.empty()) {
    std::cout << "--- snapdisk daemon log (" << log_path_ << ") ---\n"
              << Tail(DaemonLog(), 6000) << "--- end of daemon log ---\n";
  }
  CleanupTempDir();
}

void MountFixture::CleanupTempDir() {
  if (root_.empty()) return;
  for (const auto& mp : Mountpoints()) {
    if (mp.rfind(root_ + "/", 0) == 0 || mp == root_) {
      ADD_FAILURE() << "not deleting " << root_ << ": " << mp << " is still mounted";
      return;
    }
  }
  const char* keep = getenv("SNAPDISK_IT_KEEP");
  if (HasFailure() && keep != nullptr && std::string(keep) == "1") {
    std::cout << "keeping " << root_ << " (SNAPDISK_IT_KEEP=1)\n";
    return;
  }
  RunShell("rm -rf --one-file-system " + ShellQuote(root_));
}

}  // namespace snapdisk::testing
