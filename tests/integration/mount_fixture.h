// mount_fixture.h — a real snapdisk mount per test.
//
// MountFixture makes a fresh temporary directory under /tmp holding a store,
// a mountpoint and a scratch area for host-side files, runs the daemon in the
// foreground (`snapdisk mount STORE MNT -f`) as a child process with its
// output captured to a log file, and waits for the mount to appear in
// /proc/self/mountinfo. TearDown unmounts with `fusermount3 -u`, waits for
// the daemon and requires it to exit with status 0. A test that fails gets
// the tail of the daemon's log in its output.
//
// The daemon binary is the one CMake built (SNAPDISK_BIN); the environment
// variable SNAPDISK_BIN overrides it. SNAPDISK_IT_KEEP=1 keeps the temporary
// directory of a failed test for inspection.
//
// Not thread-safe: one fixture per test, used from the test's thread (a test
// may start its own threads for I/O but mounts and unmounts from one thread).
#pragma once

#include <gtest/gtest.h>
#include <string.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace snapdisk::testing {

// What a shell command did.
struct RunResult {
  int exit_code = -1;  // the exit status, or 128 + signal number
  std::string out;
  std::string err;
  bool timed_out = false;
  bool ok() const { return exit_code == 0 && !timed_out; }
};

// Runs `/bin/sh -c cmd` with stdin from /dev/null and LC_ALL=C, in its own
// process group; kills the group after `timeout`. Captures stdout and stderr.
RunResult RunShell(const std::string& cmd,
                   std::chrono::seconds timeout = std::chrono::seconds(120));

// Formats a RunResult for assertion messages.
std::string Describe(const std::string& cmd, const RunResult& r);

// Quotes a string for /bin/sh.
std::string ShellQuote(std::string_view s);

// Deterministic pseudo-random bytes (xorshift), distinct per seed.
std::string PatternBytes(size_t n, uint64_t seed);

// File helpers by direct syscalls; each records a test failure (naming the
// path and errno) and returns false / an empty string when something fails.
// WriteWholeFile creates or truncates; PWrite writes in place (no O_TRUNC),
// creating the file if missing, with fsync before close when asked.
std::string ReadWholeFile(const std::string& path);
bool WriteWholeFile(const std::string& path, std::string_view data);
bool PWrite(const std::string& path, uint64_t offset, std::string_view data, bool fsync = false);
std::string PRead(const std::string& path, uint64_t offset, size_t len);

// "ENOENT" for ENOENT; never null.
const char* ErrnoName(int e);

// Is `path` a mountpoint in this process's mount namespace right now?
bool IsMountpoint(const std::string& path);

// Waits for `done` to hold, checking every 50 ms, for at most `limit`;
// returns whether it held.
bool WaitFor(const std::function<bool()>& done, std::chrono::seconds limit);

class MountFixture : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // A test fixture may put the store on a tmpfs of this many bytes (to run
  // the store out of space); 0 (the default) keeps it on the host's /tmp.
  virtual uint64_t StoreFilesystemBytes() const { return 0; }
  // Extra arguments after `snapdisk mount STORE MNT -f` (for example
  // {"-o", "allow_other"}); none by default.
  virtual std::vector<std::string> ExtraMountArgs() const { return {}; }

  // -o options for the next Mount() (e.g. "cache=page"); empty: none.
  void set_mount_options(std::string options) { mount_options_ = std::move(options); }

  // Starts the daemon and waits for the mount. Fails the test (fatally) if
  // the mount does not appear within 10 s or the daemon exits first.
  void Mount();
  // Unmounts with `fusermount3 -u`, waits for the daemon, expects exit 0.
  void Unmount();
  // Unmount() then Mount() on the same store and mountpoint.
  void Remount();
  // SIGKILLs the daemon, reaps it, and cleans the dead mount with
  // `fusermount3 -u -z`. Follow with Mount() to restart on the same store.
  void Kill9();

  // Runs a shell command (see RunShell).
  RunResult Run(const std::string& cmd,
                std::chrono::seconds timeout = std::chrono::seconds(120)) {
    return RunShell(cmd, timeout);
  }

  // Paths: inside the mount, in the scratch area, of the store.
  std::string P(std::string_view rel) const { return mnt_ + "/" + std::string(rel); }
  std::string Scratch(std::string_view rel) const { return scratch_ + "/" + std::string(rel); }
  // Shell-quoted P(rel) and Scratch(rel), for building commands.
  std::string QP(std::string_view rel) const { return ShellQuote(P(rel)); }
  std::string QS(std::string_view rel) const { return ShellQuote(Scratch(rel)); }

  const std::string& mountpoint() const { return mnt_; }
  const std::string& store() const { return store_; }
  const std::string& root() const { return root_; }
  std::string daemon_bin() const;
  std::string DaemonLog() const;
  bool mounted() const { return daemon_pid_ > 0; }
  pid_t daemon_pid() const { return daemon_pid_; }

  // Expects `cmp a b` to succeed (same size and bytes); prints cmp's verdict.
  void ExpectSameBytes(const std::string& a, const std::string& b, const std::string& context = "");
  // sha256 of a file as a hex string (via sha256sum); fails the test on error.
  std::string Sha256(const std::string& path);
  // Bytes the store directory occupies on the host (du -sk, in bytes),
  // leaving out RocksDB's preallocated WAL and MANIFEST files.
  uint64_t StoreDiskUsage();

 private:
  void StartDaemon();
  void WaitForMount();
  // Waits for the daemon to exit; returns its wait status or -1 on timeout
  // (after which it has been SIGKILLed and reaped).
  int WaitDaemonExit(std::chrono::milliseconds timeout);
  void CleanupTempDir();

  std::string root_, store_, mnt_, scratch_, log_path_, mount_options_;
  bool store_on_tmpfs_ = false;
  pid_t daemon_pid_ = -1;
  int daemon_pidfd_ = -1;
};

}  // namespace snapdisk::testing

// Asserts that a shell command exits 0, printing its output otherwise.
// Evaluates to the RunResult for further checks.
#define SD_RUN_OK(cmd)                                                         \
  [&]() {                                                                      \
    std::string _c = (cmd);                                                    \
    ::snapdisk::testing::RunResult _r = Run(_c);                               \
    EXPECT_TRUE(_r.ok()) << ::snapdisk::testing::Describe(_c, _r);             \
    return _r;                                                                 \
  }()

#define ASSERT_RUN_OK(cmd)                                                     \
  do {                                                                         \
    std::string _c = (cmd);                                                    \
    ::snapdisk::testing::RunResult _r = Run(_c);                               \
    ASSERT_TRUE(_r.ok()) << ::snapdisk::testing::Describe(_c, _r);             \
  } while (0)

// Asserts that a syscall expression returned -1 with errno == expected.
#define ASSERT_ERRNO(expr, expected)                                           \
  do {                                                                         \
    errno = 0;                                                                 \
    auto _rc = (expr);                                                         \
    int _e = errno;                                                            \
    ASSERT_EQ(_rc, -1) << #expr << " succeeded; expected errno "               \
                       << ::snapdisk::testing::ErrnoName(expected);                           \
    ASSERT_EQ(_e, expected) << #expr << ": got " << ::snapdisk::testing::ErrnoName(_e)\
                            << " (" << strerror(_e) << "), expected "          \
                            << ::snapdisk::testing::ErrnoName(expected);                      \
  } while (0)

#define EXPECT_ERRNO(expr, expected)                                           \
  do {                                                                         \
    errno = 0;                                                                 \
    auto _rc = (expr);                                                         \
    int _e = errno;                                                            \
    EXPECT_EQ(_rc, -1) << #expr << " succeeded; expected errno "               \
                       << ::snapdisk::testing::ErrnoName(expected);                           \
    if (_rc == -1) {                                                           \
      EXPECT_EQ(_e, expected) << #expr << ": got "                             \
                              << ::snapdisk::testing::ErrnoName(_e) << " ("    \
                              << strerror(_e) << "), expected "                \
                              << ::snapdisk::testing::ErrnoName(expected);     \
    }                                                                          \
  } while (0)

// Asserts failure with errno in a set the contract allows.
#define EXPECT_ERRNO_IN(expr, ...)                                             \
  do {                                                                         \
    errno = 0;                                                                 \
    auto _rc = (expr);                                                         \
    int _e = errno;                                                            \
    std::vector<int> _allowed{__VA_ARGS__};                                    \
    EXPECT_EQ(_rc, -1) << #expr << " succeeded; expected failure";             \
    if (_rc == -1) {                                                           \
      bool _found = false;                                                     \
      std::string _names;                                                      \
      for (int _a : _allowed) {                                                \
        _found = _found || _a == _e;                                           \
        _names += std::string(::snapdisk::testing::ErrnoName(_a)) + " ";               \
      }                                                                        \
      EXPECT_TRUE(_found) << #expr << ": got " << ::snapdisk::testing::ErrnoName(_e) \
                          << " (" << strerror(_e) << "), expected one of "     \
                          << _names;                                           \
    }                                                                          \
  } while (0)
