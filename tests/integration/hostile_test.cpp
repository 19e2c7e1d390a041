// Hostile input and security (issue 5): what a careless script, a confused
// admin or an unprivileged user can throw at a mount, checked with direct
// syscalls so each errno is the kernel's answer to the caller.
//
// DESIGN.md §1 promises: EROFS or EACCES for writing a frozen view or
// anything under .snapshots/ that is not a snapshot operation; EINVAL or
// ENAMETOOLONG for bad names (empty, ./.., over 255 bytes, reserved); EEXIST
// for duplicates; EBUSY for rm of an image with snapshots; standard errno
// everywhere else. Where it is silent the tests ask for what a Linux admin
// expects from a native file system (EFBIG past the size limit, ENXIO for
// SEEK_DATA past the end, E2BIG for an oversized xattr, POSIX unlink).
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mount_fixture.h"

namespace snapdisk::testing {
namespace {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t TiB = MiB * MiB;
// Options::max_image_size's default (include/snapdisk/options.h).
constexpr uint64_t kMaxImageSize = 16 * TiB;

// The names in a directory, without "." and "..", by readdir(3): the exact
// bytes, not what ls makes of them.
std::multiset<std::string> ListNames(const std::string& dir) {
  std::multiset<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    ADD_FAILURE() << "opendir " << dir << ": " << ErrnoName(errno);
    return names;
  }
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.insert(name);
  }
  closedir(d);
  return names;
}

// A printable form of a name with odd bytes, for messages.
std::string Printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out.size() > 60 ? out.substr(0, 60) + "...(" + std::to_string(s.size()) + " bytes)" : out;
}

// Everything observable about a tree: names, types, modes, owners, sizes,
// mtimes and xattr names and values. Two equal descriptions mean nothing
// visible changed.
void DescribeTree(const std::string& path, const std::string& rel, std::string* out) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    *out += rel + " lstat:" + ErrnoName(errno) + "\n";
    return;
  }
  std::ostringstream line;
  line << rel << " mode=" << std::oct << st.st_mode << std::dec << " uid=" << st.st_uid
       << " gid=" << st.st_gid << " size=" << st.st_size << " mtime=" << st.st_mtim.tv_sec << "."
       << st.st_mtim.tv_nsec;
  char names[4096];
  ssize_t n = llistxattr(path.c_str(), names, sizeof names);
  for (ssize_t i = 0; i > -1 && i < n; i += static_cast<ssize_t>(strlen(names + i)) + 1) {
    std::string name = names + i;
    // Space accounting may move in the background (reclamation); the rest
    // of the facts and all stored attributes must not.
    if (name.find("referenced") != std::string::npos || name.find("unique") != std::string::npos ||
        name.find("used") != std::string::npos) {
      continue;
    }
    char value[256];
    ssize_t v = lgetxattr(path.c_str(), name.c_str(), value, sizeof value);
    line << " " << name << "=" << (v >= 0 ? std::string(value, static_cast<size_t>(v)) : "?");
  }
  *out += line.str() + "\n";
  if (S_ISDIR(st.st_mode)) {
    for (const std::string& child : ListNames(path)) {
      DescribeTree(path + "/" + child, rel + "/" + child, out);
    }
  }
}

// Runs `body` in a forked child with the given uid and gid (and no
// supplementary groups); returns what body returned: 0 for success or an
// errno. Returns -1 if the child could not change identity or crashed.
// The body must only make syscalls on strings built before the fork.
int AsUser(uid_t uid, gid_t gid, const std::function<int()>& body) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setresgid(gid, gid, gid) != 0 ||
        setresuid(uid, uid, uid) != 0) {
      _exit(255);
    }
    _exit(body() & 0xff);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) == 255) {
    return -1;
  }
  return WEXITSTATUS(status);
}

// 0 if rc is not -1, else errno: the shape AsUser's bodies return.
int ErrOf(long rc) { return rc == -1 ? errno : 0; }

int OpenClose(const std::string& path, int flags, mode_t mode = 0644) {
  int fd = open(path.c_str(), flags, mode);
  if (fd < 0) return -1;
  close(fd);
  return 0;
}

// The options of the mount at `mnt` in /proc/self/mountinfo: the per-mount
// and the per-superblock fields joined with a comma.
std::string MountOptionsOf(const std::string& mnt) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string w; fields >> w;) f.push_back(w);
    if (f.size() < 10 || f[4] != mnt) continue;
    size_t dash = 6;
    while (dash < f.size() && f[dash] != "-") ++dash;
    if (dash + 3 >= f.size()) continue;
    return f[5] + "," + f[dash + 3];
  }
  return "";
}

bool HasOption(const std::string& options, const std::string& opt) {
  return ("," + options + ",").find("," + opt + ",") != std::string::npos;
}

int FsyncPath(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

off_t SizeOf(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return -1;
  return st.st_size;
}

class HostileTest : public MountFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(MountFixture::SetUp());
    ASSERT_TRUE(WriteWholeFile(P("vm1.img"), PatternBytes(1 * MiB, 1)));
  }

  void Snapshot(const std::string& image, const std::string& name) {
    ASSERT_EQ(mkdir(P(".snapshots/" + image + "/" + name).c_str(), 0755), 0)
        << "mkdir snapshot " << Printable(name) << " of " << Printable(image) << ": "
        << ErrnoName(errno);
  }

  std::string Tree() {
    std::string out;
    DescribeTree(P(".snapshots"), ".snapshots", &out);
    return out;
  }

  // Bytes of block data the store holds (`snapdisk df -f json`): exact, not
  // blurred by RocksDB's files as du would be.
  uint64_t StoredBytes() {
    std::string cmd = ShellQuote(daemon_bin()) + " df " + QP("") + " -f json";
    RunResult r = Run(cmd, std::chrono::seconds(20));
    if (!r.ok()) {
      ADD_FAILURE() << Describe(cmd, r);
      return 0;
    }
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    if (j.is_discarded() || !j.contains("stats") || !j["stats"].contains("stored_bytes")) {
      ADD_FAILURE() << "no stats.stored_bytes in " << r.out;
      return 0;
    }
    return j["stats"]["stored_bytes"].get<uint64_t>();
  }

  // Reads all of an open fd from offset 0 by pread.
  static std::string ReadFd(int fd, size_t len) {
    std::string buf(len, '\0');
    size_t done = 0;
    while (done < len) {
      ssize_t n = pread(fd, buf.data() + done, len - done, static_cast<off_t>(done));
      if (n <= 0) {
        ADD_FAILURE() << "pread at " << done << ": " << (n < 0 ? ErrnoName(errno) : "EOF");
        return "";
      }
      done += static_cast<size_t>(n);
    }
    return buf;
  }
};

// ---------------------------------------------------------------------------
// .snapshots refuses everything that is not a snapshot operation.

TEST_F(HostileTest, SnapshotTreeRefusesCreation) {
  ASSERT_TRUE(WriteWholeFile(P("vm2.img"), PatternBytes(64 * KiB, 2)));
  ASSERT_EQ(mkdir(P("team-a").c_str(), 0755), 0);
  ASSERT_TRUE(WriteWholeFile(P("team-a/db.img"), PatternBytes(64 * KiB, 3)));
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  const std::string before = Tree();
  const std::vector<std::string> dirs = {".snapshots", ".snapshots/vm1.img",
                                         ".snapshots/vm1.img/s1", ".snapshots/team-a"};
  for (const std::string& dir : dirs) {
    SCOPED_TRACE(dir);
    const std::string in = P(dir + "/new.img");
    EXPECT_ERRNO(OpenClose(in, O_WRONLY | O_CREAT), EROFS);
    EXPECT_ERRNO(OpenClose(in, O_RDONLY | O_CREAT | O_EXCL), EROFS);
    EXPECT_ERRNO(mknod(in.c_str(), S_IFREG | 0644, 0), EROFS);
    EXPECT_ERRNO_IN(mknod(P(dir + "/fifo").c_str(), S_IFIFO | 0644, 0), EROFS, EPERM);
    EXPECT_ERRNO_IN(symlink("vm1.img", P(dir + "/link").c_str()), EROFS, EACCES, EPERM);
    EXPECT_ERRNO_IN(link(P("vm2.img").c_str(), P(dir + "/hard").c_str()), EROFS, EACCES, EPERM);
    EXPECT_ERRNO_IN(rename(P("vm2.img").c_str(), P(dir + "/moved.img").c_str()), EROFS, EACCES,
                    EXDEV);
    EXPECT_ERRNO_IN(rename(P("team-a").c_str(), P(dir + "/moved-dir").c_str()), EROFS, EACCES,
                    EXDEV);
  }
  // mkdir creates snapshots only in an image's folder.
  EXPECT_ERRNO_IN(mkdir(P(".snapshots/newdir").c_str(), 0755), EROFS, EACCES);
  EXPECT_ERRNO_IN(mkdir(P(".snapshots/team-a/newdir").c_str(), 0755), EROFS, EACCES);
  EXPECT_ERRNO_IN(mkdir(P(".snapshots/vm1.img/s1/sub").c_str(), 0755), EROFS, EACCES);
  EXPECT_ERRNO(mkdir(P(".snapshots/vm1.img/s1/vm1.img/sub").c_str(), 0755), ENOTDIR);
  // The frozen view, the snapshot directory and the mirror folders cannot be
  // renamed out into the live tree or around it.
  EXPECT_ERRNO_IN(rename(P(".snapshots/vm1.img/s1/vm1.img").c_str(), P("stolen.img").c_str()),
                  EROFS, EACCES, EXDEV);
  EXPECT_ERRNO_IN(rename(P(".snapshots/vm1.img/s1").c_str(), P("stolen-dir").c_str()), EINVAL,
                  EROFS, EXDEV);
  EXPECT_ERRNO_IN(rename(P(".snapshots/vm1.img/s1").c_str(), P(".snapshots/vm2.img/s1").c_str()),
                  EINVAL, EROFS, EXDEV);
  EXPECT_ERRNO_IN(rename(P(".snapshots/vm1.img").c_str(), P(".snapshots/vm9.img").c_str()), EROFS,
                  EACCES);
  EXPECT_ERRNO_IN(rename(P(".snapshots/vm1.img").c_str(), P("mirror-moved").c_str()), EROFS,
                  EACCES, EXDEV);
  EXPECT_ERRNO_IN(rename(P(".snapshots").c_str(), P("snaps").c_str()), EBUSY, EROFS, EACCES);
  EXPECT_ERRNO_IN(rename(P("vm2.img").c_str(), P(".snapshots").c_str()), EEXIST, EISDIR, EBUSY,
                  EROFS);
  EXPECT_ERRNO_IN(link(P(".snapshots/vm1.img/s1/vm1.img").c_str(), P("hard.img").c_str()), EPERM,
                  EROFS, EXDEV);
  // Removing the namespace itself or a mirror folder.
  EXPECT_ERRNO_IN(rmdir(P(".snapshots").c_str()), EBUSY, EROFS, EACCES, EPERM);
  EXPECT_ERRNO_IN(rmdir(P(".snapshots/vm1.img").c_str()), EROFS, EACCES, EPERM);
  EXPECT_ERRNO_IN(rmdir(P(".snapshots/vm2.img").c_str()), EROFS, EACCES, EPERM);
  EXPECT_ERRNO_IN(rmdir(P(".snapshots/team-a").c_str()), EROFS, EACCES, EPERM);
  EXPECT_ERRNO(unlink(P(".snapshots/vm1.img").c_str()), EISDIR);
  EXPECT_ERRNO_IN(unlink(P(".snapshots/vm1.img/s1/other.img").c_str()), ENOENT);
  // Live names that collide with the namespace.
  EXPECT_ERRNO(OpenClose(P(".snapshots"), O_WRONLY | O_CREAT), EISDIR);
  EXPECT_ERRNO(mkdir(P(".snapshots").c_str(), 0755), EEXIST);

  EXPECT_EQ(Tree(), before) << "a refused operation changed .snapshots";
  EXPECT_EQ(ListNames(P("")), (std::multiset<std::string>{".snapshots", "team-a", "vm1.img",
                                                           "vm2.img"}));
  EXPECT_TRUE(ReadWholeFile(P("vm2.img")) == PatternBytes(64 * KiB, 2));
}

TEST_F(HostileTest, FrozenThingsRefuseChangesEvenForRoot) {
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, PatternBytes(64 * KiB, 9)));
  const std::string frozen = P(".snapshots/vm1.img/s1/vm1.img");
  const std::string before = Tree();
  EXPECT_ERRNO(OpenClose(frozen, O_WRONLY), EROFS);
  EXPECT_ERRNO(OpenClose(frozen, O_RDWR), EROFS);
  EXPECT_ERRNO(OpenClose(frozen, O_WRONLY | O_APPEND), EROFS);
  EXPECT_ERRNO(OpenClose(frozen, O_RDWR | O_CREAT), EROFS);
  // Linux truncates on O_RDONLY|O_TRUNC when the bits allow writing: the
  // frozen view's bits are the image's (0644), so this reaches setattr.
  EXPECT_ERRNO_IN(OpenClose(frozen, O_RDONLY | O_TRUNC), EROFS, EACCES);
  EXPECT_ERRNO_IN(truncate(frozen.c_str(), 0), EROFS, EACCES);
  EXPECT_ERRNO_IN(truncate(frozen.c_str(), 8 * MiB), EROFS, EACCES);

  const std::vector<std::string> frozen_things = {
      ".snapshots", ".snapshots/vm1.img", ".snapshots/vm1.img/s1",
      ".snapshots/vm1.img/s1/vm1.img"};
  const timespec times[2] = {{1000, 0}, {2000, 0}};
  for (const std::string& rel : frozen_things) {
    SCOPED_TRACE(rel);
    const std::string path = P(rel);
    EXPECT_ERRNO_IN(chmod(path.c_str(), 0777), EROFS, EACCES, EPERM);
    EXPECT_ERRNO_IN(chown(path.c_str(), 1234, 1234), EROFS, EACCES, EPERM);
    EXPECT_ERRNO_IN(utimensat(AT_FDCWD, path.c_str(), times, 0), EROFS, EACCES, EPERM);
    EXPECT_ERRNO_IN(utimensat(AT_FDCWD, path.c_str(), nullptr, 0), EROFS, EACCES, EPERM);
    EXPECT_ERRNO_IN(setxattr(path.c_str(), "user.note", "x", 1, 0), EROFS, EACCES, EPERM,
                    EOPNOTSUPP);
    EXPECT_ERRNO_IN(removexattr(path.c_str(), "user.description"), EROFS, EACCES, EPERM, ENODATA,
                    EOPNOTSUPP);
  }
  // The frozen view keeps the snapshot's properties read-only: they are set
  // on the snapshot directory.
  EXPECT_ERRNO_IN(setxattr(frozen.c_str(), "user.description", "x", 1, 0), EROFS, EACCES, EPERM);
  EXPECT_ERRNO_IN(setxattr(frozen.c_str(), "user.snapdisk.protected", "1", 1, 0), EROFS, EACCES,
                  EPERM);

  // Directories under .snapshots are not openable for writing either.
  EXPECT_ERRNO(OpenClose(P(".snapshots/vm1.img/s1"), O_RDWR), EISDIR);
  // mmap: a shared writable mapping is refused; a private one may be
  // scribbled on without reaching the snapshot.
  int fd = open(frozen.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  EXPECT_EQ(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), MAP_FAILED);
  EXPECT_EQ(errno, EACCES);
  void* map = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ASSERT_NE(map, MAP_FAILED) << ErrnoName(errno);
  memset(map, 0xAB, 4096);
  munmap(map, 4096);
  close(fd);
  // A protected snapshot refuses rmdir and rm -r (unlink of its view).
  const std::string snapdir = P(".snapshots/vm1.img/s1");
  ASSERT_EQ(setxattr(snapdir.c_str(), "user.snapdisk.protected", "1", 1, 0), 0) << ErrnoName(errno);
  EXPECT_ERRNO(rmdir(snapdir.c_str()), EBUSY);
  EXPECT_ERRNO(unlink(frozen.c_str()), EBUSY);
  RunResult rm = Run("rm -rf " + ShellQuote(snapdir));
  EXPECT_NE(rm.exit_code, 0) << Describe("rm -rf", rm);
  ASSERT_EQ(setxattr(snapdir.c_str(), "user.snapdisk.protected", "0", 1, 0), 0) << ErrnoName(errno);

  EXPECT_EQ(Tree(), before) << "a refused operation changed .snapshots";
  EXPECT_TRUE(ReadWholeFile(frozen) == PatternBytes(1 * MiB, 1)) << "the frozen view changed";
}

// O_TRUNC reaches the daemon inside open (libfuse enables atomic O_TRUNC):
// the daemon must truncate live images there, and refuse it on frozen views.
TEST_F(HostileTest, OpenWithOTruncTruncatesLiveImagesOnly) {
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  ASSERT_TRUE(WriteWholeFile(P("vm2.img"), PatternBytes(1 * MiB, 2)));
  int fd = open(P("vm1.img").c_str(), O_WRONLY | O_TRUNC);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  EXPECT_EQ(write(fd, "abc", 3), 3);
  close(fd);
  EXPECT_EQ(OpenClose(P("vm2.img"), O_RDONLY | O_TRUNC), 0) << ErrnoName(errno);
  EXPECT_ERRNO_IN(OpenClose(P(".snapshots/vm1.img/s1/vm1.img"), O_RDONLY | O_TRUNC), EROFS,
                  EACCES);
  // The kernel believes whatever open answered; a remount asks the store.
  ASSERT_NO_FATAL_FAILURE(Remount());
  EXPECT_EQ(SizeOf(P("vm1.img")), 3) << "open(O_WRONLY|O_TRUNC) did not truncate";
  EXPECT_TRUE(ReadWholeFile(P("vm1.img")) == "abc");
  EXPECT_EQ(SizeOf(P("vm2.img")), 0) << "open(O_RDONLY|O_TRUNC) did not truncate";
  EXPECT_TRUE(ReadWholeFile(P(".snapshots/vm1.img/s1/vm1.img")) == PatternBytes(1 * MiB, 1));
}

// ---------------------------------------------------------------------------
// Names with odd bytes.

TEST_F(HostileTest, OddNamesWorkEndToEnd) {
  const std::vector<std::string> names = {
      "new\nline",         "tab\there",           std::string("\xff\xfe\x80 bytes"),
      "-leading-dash",     " spaces  around ",    "...",
      "....",              "..x",                 "x..",
      "back\\slash",       "quote\"'$(rm -rf)",   std::string("utf8-\xc3\xa9\xe2\x82\xac"),
      "*?[glob]",          ".hidden",             "--",
      std::string(255, 'L')};
  for (const std::string& name : names) {
    SCOPED_TRACE(Printable(name));
    // As an image...
    const std::string data = PatternBytes(8 * KiB, name.size());
    ASSERT_TRUE(WriteWholeFile(P(name), data));
    EXPECT_EQ(ListNames(P("")).count(name), 1u) << "readdir of the root must show the exact name";
    EXPECT_TRUE(ReadWholeFile(P(name)) == data);
    // ...with a snapshot of the same name, listed exactly, its frozen view
    // named like the image.
    ASSERT_NO_FATAL_FAILURE(Snapshot(name, name));
    EXPECT_EQ(ListNames(P(".snapshots/" + name)), (std::multiset<std::string>{name}));
    EXPECT_EQ(ListNames(P(".snapshots/" + name + "/" + name)), (std::multiset<std::string>{name}));
    EXPECT_TRUE(ReadWholeFile(P(".snapshots/" + name + "/" + name + "/" + name)) == data);
    // A snapshot of vm1.img with the odd name too, renamed to plain and back.
    ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", name));
    EXPECT_EQ(ListNames(P(".snapshots/vm1.img")).count(name), 1u);
    EXPECT_EQ(rename(P(".snapshots/vm1.img/" + name).c_str(), P(".snapshots/vm1.img/plain").c_str()),
              0)
        << ErrnoName(errno);
    EXPECT_EQ(rename(P(".snapshots/vm1.img/plain").c_str(), P(".snapshots/vm1.img/" + name).c_str()),
              0)
        << ErrnoName(errno);
    EXPECT_EQ(rmdir(P(".snapshots/vm1.img/" + name).c_str()), 0) << ErrnoName(errno);
    // Delete: snapshot first (EBUSY before), then the image.
    EXPECT_ERRNO(unlink(P(name).c_str()), EBUSY);
    EXPECT_EQ(rmdir(P(".snapshots/" + name + "/" + name).c_str()), 0) << ErrnoName(errno);
    EXPECT_EQ(unlink(P(name).c_str()), 0) << ErrnoName(errno);
    EXPECT_EQ(ListNames(P("")).count(name), 0u);
    // As a project directory.
    EXPECT_EQ(mkdir(P(name).c_str(), 0755), 0) << ErrnoName(errno);
    EXPECT_EQ(ListNames(P(".snapshots")).count(name), 1u);
    EXPECT_EQ(rmdir(P(name).c_str()), 0) << ErrnoName(errno);
  }
  EXPECT_EQ(ListNames(P("")), (std::multiset<std::string>{".snapshots", "vm1.img"}));
  EXPECT_EQ(ListNames(P(".snapshots/vm1.img")), std::multiset<std::string>{});
  // ".snapshots" is reserved at the root only: in a project it is an
  // ordinary image with its own folder.
  ASSERT_EQ(mkdir(P("team-a").c_str(), 0755), 0);
  ASSERT_TRUE(WriteWholeFile(P("team-a/.snapshots"), "inner"));
  ASSERT_NO_FATAL_FAILURE(Snapshot("team-a/.snapshots", "s1"));
  EXPECT_EQ(ReadWholeFile(P(".snapshots/team-a/.snapshots/s1/.snapshots")), "inner");
  EXPECT_EQ(rmdir(P(".snapshots/team-a/.snapshots/s1").c_str()), 0) << ErrnoName(errno);
  EXPECT_EQ(unlink(P("team-a/.snapshots").c_str()), 0) << ErrnoName(errno);
  EXPECT_EQ(rmdir(P("team-a").c_str()), 0) << ErrnoName(errno);
  // The names survive a remount byte for byte.
  ASSERT_TRUE(WriteWholeFile(P(names[0]), "a"));
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", names[2]));
  ASSERT_NO_FATAL_FAILURE(Remount());
  EXPECT_EQ(ListNames(P("")), (std::multiset<std::string>{".snapshots", "vm1.img", names[0]}));
  EXPECT_EQ(ListNames(P(".snapshots/vm1.img")), (std::multiset<std::string>{names[2]}));
}

TEST_F(HostileTest, BadNamesAreRefusedAndChangeNothing) {
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  const std::string folder = P(".snapshots/vm1.img/");
  const std::string too_long(256, 'x');
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, "changed"));  // after s1: a rollback would show
  const std::string before = Tree();
  // 256 bytes: every way of making a name.
  EXPECT_ERRNO(mkdir((folder + too_long).c_str(), 0755), ENAMETOOLONG);
  EXPECT_ERRNO(rename((folder + "s1").c_str(), (folder + too_long).c_str()), ENAMETOOLONG);
  EXPECT_ERRNO(OpenClose(P(too_long), O_WRONLY | O_CREAT), ENAMETOOLONG);
  EXPECT_ERRNO(mkdir(P(too_long).c_str(), 0755), ENAMETOOLONG);
  EXPECT_ERRNO(rename(P("vm1.img").c_str(), P(too_long).c_str()), ENAMETOOLONG);
  // "." and ".." as snapshot names, by mkdir and by rename.
  EXPECT_ERRNO_IN(mkdir((folder + ".").c_str(), 0755), EEXIST, EINVAL);
  EXPECT_ERRNO_IN(mkdir((folder + "..").c_str(), 0755), EEXIST, EINVAL);
  EXPECT_ERRNO_IN(rename((folder + "s1").c_str(), (folder + ".").c_str()), EINVAL, EBUSY, EEXIST);
  EXPECT_ERRNO_IN(rename((folder + "s1").c_str(), (folder + "..").c_str()), EINVAL, EBUSY, EEXIST,
                  ENOTEMPTY);
  // Reserved names.
  EXPECT_ERRNO(mkdir((folder + ".snapdisk-tmp").c_str(), 0755), EINVAL);
  EXPECT_ERRNO(rename((folder + "s1").c_str(), (folder + ".snapdisk").c_str()), EINVAL);
  // A '/' cannot reach the daemon through a path, but a group snapshot takes
  // its name from an xattr value: there it must be refused, as must the
  // names mkdir could never send.
  const std::string mirror = P(".snapshots");
  for (const std::string& bad : {std::string("a/b"), std::string("/"), std::string("."),
                                std::string(".."), std::string(""), std::string(".snapdisk-x"),
                                std::string("nul\0byte", 8), std::string(256, 'g')}) {
    SCOPED_TRACE(Printable(bad));
    EXPECT_ERRNO_IN(setxattr(mirror.c_str(), "user.snapdisk.snapshot", bad.data(), bad.size(), 0),
                    EINVAL, ENAMETOOLONG);
  }
  // A group snapshot's list of images may not escape the tree or name the
  // snapshot namespace itself.
  for (const char* list : {"g1\n..", "g1\n../vm1.img", "g1\n.snapshots",
                           "g1\n.snapshots/vm1.img", "g1\nnope.img", "g1\nvm1.img/x"}) {
    SCOPED_TRACE(Printable(list));
    EXPECT_ERRNO_IN(setxattr(mirror.c_str(), "user.snapdisk.snapshot", list, strlen(list), 0),
                    ENOENT, EINVAL, ENOTDIR);
  }
  // Rollback to names that are not a snapshot of this image.
  const std::string img = P("vm1.img");
  const std::vector<std::string> targets = {"",     "force:",       "nope",      "../s1",
                                            "s1/..", "s1\n",        "force:nope", "s1 ",
                                            std::string("s1\0x", 4)};
  for (const std::string& target : targets) {
    SCOPED_TRACE(Printable(target));
    EXPECT_ERRNO_IN(
        setxattr(img.c_str(), "user.snapdisk.rollback", target.data(), target.size(), 0), ENOENT,
        EINVAL);
  }
  EXPECT_EQ(PRead(img, 0, 7), "changed") << "a refused rollback changed the image";
  EXPECT_EQ(Tree(), before) << "a refused name changed .snapshots";
  EXPECT_EQ(ListNames(P("")), (std::multiset<std::string>{".snapshots", "vm1.img"}));
}

// ---------------------------------------------------------------------------
// Extended attributes outside what snapdisk stores.

TEST_F(HostileTest, XattrNamespacesAndLimits) {
  ASSERT_EQ(mkdir(P("team-a").c_str(), 0755), 0);
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  const std::vector<std::string> targets = {"vm1.img", "team-a", ".snapshots",
                                            ".snapshots/vm1.img", ".snapshots/vm1.img/s1",
                                            ".snapshots/vm1.img/s1/vm1.img"};
  std::string tree_before = Tree();
  for (const std::string& rel : targets) {
    SCOPED_TRACE(rel);
    const std::string path = P(rel);
    char list_before[4096];
    ssize_t n_before = listxattr(path.c_str(), list_before, sizeof list_before);
    ASSERT_GE(n_before, 0) << ErrnoName(errno);
    for (const char* name : {"trusted.evil", "security.evil", "system.evil",
                             "user.snapdisk.made-up", "user.snapdisk."}) {
      SCOPED_TRACE(name);
      EXPECT_ERRNO_IN(setxattr(path.c_str(), name, "1", 1, 0), EPERM, EOPNOTSUPP, EACCES, EROFS);
      EXPECT_ERRNO_IN(getxattr(path.c_str(), name, nullptr, 0), ENODATA, EOPNOTSUPP);
    }
    // Read-only facts refuse a write and keep their value.
    for (const char* name : {"user.snapdisk.used", "user.snapdisk.created"}) {
      SCOPED_TRACE(name);
      char value[64];
      ssize_t before = getxattr(path.c_str(), name, value, sizeof value);
      std::string old = before >= 0 ? std::string(value, static_cast<size_t>(before)) : "";
      EXPECT_ERRNO_IN(setxattr(path.c_str(), name, "1", 1, 0), EPERM, EACCES, EROFS);
      ssize_t after = getxattr(path.c_str(), name, value, sizeof value);
      EXPECT_EQ(after, before);
      if (before >= 0 && after >= 0) {
        EXPECT_EQ(std::string(value, static_cast<size_t>(after)), old);
      }
    }
    // Only the kernel's own ACL handlers answer system.posix_acl_*; without
    // ACL support in the mount they are EOPNOTSUPP, never stored.
    EXPECT_ERRNO_IN(setxattr(path.c_str(), "system.posix_acl_access", "x", 1, 0), EOPNOTSUPP,
                    EINVAL, EROFS);
    EXPECT_ERRNO_IN(removexattr(path.c_str(), "trusted.evil"), EPERM, EOPNOTSUPP, ENODATA, EROFS);
    EXPECT_ERRNO_IN(removexattr(path.c_str(), "user.snapdisk.used"), EPERM, EROFS, ENODATA);
    EXPECT_ERRNO(getxattr(path.c_str(), "user.missing", nullptr, 0), ENODATA);
    char list_after[4096];
    ssize_t n_after = listxattr(path.c_str(), list_after, sizeof list_after);
    ASSERT_GE(n_after, 0) << ErrnoName(errno);
    EXPECT_EQ(std::string(list_after, static_cast<size_t>(n_after)),
              std::string(list_before, static_cast<size_t>(n_before)))
        << "a refused setxattr left an attribute behind";
  }
  EXPECT_EQ(Tree(), tree_before);

  // Values: 64 KiB is the kernel's limit and works; one byte more is E2BIG
  // from the kernel; a too-small buffer is ERANGE.
  const std::string img = P("vm1.img");
  const std::string big = PatternBytes(64 * KiB, 7);
  ASSERT_EQ(setxattr(img.c_str(), "user.big", big.data(), big.size(), 0), 0) << ErrnoName(errno);
  std::string back(64 * KiB, '\0');
  EXPECT_EQ(getxattr(img.c_str(), "user.big", back.data(), back.size()),
            static_cast<ssize_t>(big.size()));
  EXPECT_TRUE(back == big);
  EXPECT_ERRNO(getxattr(img.c_str(), "user.big", back.data(), 10), ERANGE);
  const std::string bigger(64 * KiB + 1, 'b');
  EXPECT_ERRNO_IN(setxattr(img.c_str(), "user.bigger", bigger.data(), bigger.size(), 0), E2BIG,
                  ENOSPC);
  EXPECT_ERRNO(getxattr(img.c_str(), "user.bigger", nullptr, 0), ENODATA);
  // Names: 255 bytes work, 256 are ERANGE (the kernel's XATTR_NAME_MAX).
  const std::string long_name = "user." + std::string(250, 'n');
  EXPECT_EQ(setxattr(img.c_str(), long_name.c_str(), "v", 1, 0), 0) << ErrnoName(errno);
  EXPECT_ERRNO(setxattr(img.c_str(), (long_name + "n").c_str(), "v", 1, 0), ERANGE);
  // XATTR_CREATE / XATTR_REPLACE.
  EXPECT_ERRNO(setxattr(img.c_str(), "user.big", "x", 1, XATTR_CREATE), EEXIST);
  EXPECT_ERRNO(setxattr(img.c_str(), "user.none", "x", 1, XATTR_REPLACE), ENODATA);
  // Snapshot directory: 64 KiB description, bad protected values, an empty
  // property key.
  const std::string snapdir = P(".snapshots/vm1.img/s1");
  EXPECT_EQ(setxattr(snapdir.c_str(), "user.description", big.data(), big.size(), 0), 0)
      << ErrnoName(errno);
  EXPECT_ERRNO_IN(setxattr(snapdir.c_str(), "user.description", bigger.data(), bigger.size(), 0),
                  E2BIG, ENOSPC);
  for (const char* v : {"2", "", "yes", "10"}) {
    SCOPED_TRACE(std::string("value '") + v + "'");
    EXPECT_ERRNO(setxattr(snapdir.c_str(), "user.snapdisk.protected", v, strlen(v), 0), EINVAL);
  }
  EXPECT_ERRNO(setxattr(snapdir.c_str(), "user.property.", "v", 1, 0), EINVAL);
  char prot[4] = {};
  EXPECT_EQ(getxattr(snapdir.c_str(), "user.snapdisk.protected", prot, sizeof prot), 1);
  EXPECT_EQ(prot[0], '0');
  // Everything survives a remount, and nothing refused appeared.
  ASSERT_NO_FATAL_FAILURE(Remount());
  back.assign(64 * KiB, '\0');
  EXPECT_EQ(getxattr(img.c_str(), "user.big", back.data(), back.size()),
            static_cast<ssize_t>(big.size()));
  EXPECT_TRUE(back == big);
  back.assign(64 * KiB, '\0');
  EXPECT_EQ(getxattr(snapdir.c_str(), "user.description", back.data(), back.size()),
            static_cast<ssize_t>(big.size()));
  EXPECT_TRUE(back == big);
  // Namespaces other than user.* are not supported at all (ls then stops
  // asking for security.selinux and ACLs on every entry).
  EXPECT_ERRNO(getxattr(img.c_str(), "trusted.evil", nullptr, 0), ENOTSUP);
  EXPECT_ERRNO(getxattr(img.c_str(), "security.evil", nullptr, 0), ENOTSUP);
}

// ---------------------------------------------------------------------------
// Huge offsets and sizes.

TEST_F(HostileTest, HugeOffsetsFailCleanly) {
  const std::string img = P("vm1.img");
  const off_t size = static_cast<off_t>(1 * MiB);
  int fd = open(img.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  const std::string block = PatternBytes(4 * KiB, 5);
  const off_t near_max = INT64_MAX - 4095;  // 2^63 - 4 KiB
  const off_t limit = static_cast<off_t>(kMaxImageSize);
  for (off_t off : {near_max, INT64_MAX - 1, off_t{1} << 62, limit, limit + 4096}) {
    SCOPED_TRACE(off);
    EXPECT_ERRNO_IN(pwrite(fd, block.data(), block.size(), off), EFBIG, EINVAL);
    EXPECT_EQ(SizeOf(img), size) << "a refused write changed the size";
  }
  EXPECT_ERRNO(pwrite(fd, block.data(), block.size(), -1), EINVAL);
  for (off_t len : {limit + 1, off_t{1} << 62, INT64_MAX}) {
    SCOPED_TRACE(len);
    EXPECT_ERRNO_IN(ftruncate(fd, len), EFBIG, EINVAL);
    EXPECT_ERRNO_IN(truncate(img.c_str(), len), EFBIG, EINVAL);
    EXPECT_EQ(SizeOf(img), size);
  }
  EXPECT_ERRNO(ftruncate(fd, -1), EINVAL);
  // fallocate past the limit, and with ranges that overflow.
  EXPECT_ERRNO_IN(fallocate(fd, 0, limit, 4096), EFBIG, EINVAL);
  EXPECT_ERRNO_IN(fallocate(fd, 0, limit - 4096, 8192), EFBIG, EINVAL);
  EXPECT_ERRNO_IN(fallocate(fd, 0, INT64_MAX - 10, 4096), EFBIG, EINVAL);
  EXPECT_ERRNO_IN(fallocate(fd, FALLOC_FL_ZERO_RANGE, limit - 4096, 8192), EFBIG, EINVAL);
  EXPECT_ERRNO_IN(fallocate(fd, 0, 0, 0), EINVAL);
  EXPECT_ERRNO_IN(fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, 64 * KiB), EOPNOTSUPP, EINVAL);
  EXPECT_ERRNO_IN(fallocate(fd, FALLOC_FL_INSERT_RANGE, 0, 64 * KiB), EOPNOTSUPP, EINVAL);
  EXPECT_ERRNO(fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096), EOPNOTSUPP);  // needs KEEP_SIZE
  // Punching far past the end is a no-op (as on ext4) or a clean error.
  errno = 0;
  int rc = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t{1} << 62, 1 << 20);
  EXPECT_TRUE(rc == 0 || errno == EFBIG || errno == EINVAL) << ErrnoName(errno);
  EXPECT_EQ(SizeOf(img), size) << "a refused fallocate changed the size";
  // Reads far past the end return 0 bytes; a read across the end is short.
  char buf[4096];
  EXPECT_EQ(pread(fd, buf, sizeof buf, off_t{1} << 62), 0);
  EXPECT_EQ(pread(fd, buf, sizeof buf, INT64_MAX - 4096), 0);
  EXPECT_EQ(pread(fd, buf, sizeof buf, size), 0);
  EXPECT_EQ(pread(fd, buf, sizeof buf, size - 100), 100);
  // SEEK_DATA at or past the end: ENXIO; SEEK_HOLE past it: ENXIO.
  EXPECT_ERRNO(lseek(fd, size, SEEK_DATA), ENXIO);
  EXPECT_ERRNO(lseek(fd, off_t{1} << 62, SEEK_DATA), ENXIO);
  EXPECT_ERRNO(lseek(fd, off_t{1} << 62, SEEK_HOLE), ENXIO);
  EXPECT_ERRNO_IN(lseek(fd, -1, SEEK_DATA), ENXIO, EINVAL);
  EXPECT_EQ(lseek(fd, size - 1, SEEK_HOLE), size);
  // The biggest image allowed is fine and sparse; one byte more is not.
  EXPECT_EQ(ftruncate(fd, limit), 0) << ErrnoName(errno);
  EXPECT_EQ(pwrite(fd, block.data(), block.size(), limit - 4096), 4096) << ErrnoName(errno);
  EXPECT_ERRNO_IN(pwrite(fd, block.data(), 1, limit), EFBIG, EINVAL);
  EXPECT_EQ(SizeOf(img), limit);
  EXPECT_EQ(pread(fd, buf, sizeof buf, off_t{1} << 62), 0) << "a read past the end of a 16 TiB image";
  // A snapshot of the biggest image is as cheap and reads its last block.
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "max"));
  EXPECT_EQ(SizeOf(P(".snapshots/vm1.img/max/vm1.img")), limit);
  EXPECT_TRUE(PRead(P(".snapshots/vm1.img/max/vm1.img"), limit - 4096, 4096) == block);
  EXPECT_EQ(rmdir(P(".snapshots/vm1.img/max").c_str()), 0) << ErrnoName(errno);
  EXPECT_EQ(pread(fd, buf, sizeof buf, limit), 0);
  // A write across the limit is short (POSIX: only as many bytes as there is
  // room for) or refused; never past it.
  errno = 0;
  ssize_t across = pwrite(fd, block.data(), block.size(), limit - 2048);
  EXPECT_TRUE(across == 2048 || (across == -1 && errno == EFBIG)) << across << " " << ErrnoName(errno);
  EXPECT_EQ(SizeOf(img), limit);
  EXPECT_EQ(ftruncate(fd, size), 0) << ErrnoName(errno);
  EXPECT_TRUE(ReadWholeFile(img) == PatternBytes(1 * MiB, 1)) << "the image's data changed";

  // copy_file_range to a huge destination offset is refused, the source and
  // destination unchanged.
  ASSERT_TRUE(WriteWholeFile(P("dst.img"), "dst"));
  int out = open(P("dst.img").c_str(), O_RDWR);
  ASSERT_GE(out, 0) << ErrnoName(errno);
  loff_t in_off = 0, out_off = limit;
  EXPECT_ERRNO_IN(copy_file_range(fd, &in_off, out, &out_off, 4096, 0), EFBIG, EINVAL);
  in_off = off_t{1} << 62;
  out_off = 0;
  EXPECT_EQ(copy_file_range(fd, &in_off, out, &out_off, 4096, 0), 0) << ErrnoName(errno);
  close(out);
  EXPECT_EQ(ReadWholeFile(P("dst.img")), "dst");
  close(fd);

  // The frozen view: reads past the end return 0, SEEK_DATA past it ENXIO.
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  int ro = open(P(".snapshots/vm1.img/s1/vm1.img").c_str(), O_RDONLY);
  ASSERT_GE(ro, 0) << ErrnoName(errno);
  EXPECT_EQ(pread(ro, buf, sizeof buf, off_t{1} << 62), 0);
  EXPECT_ERRNO(lseek(ro, off_t{1} << 62, SEEK_DATA), ENXIO);
  EXPECT_ERRNO(pwrite(ro, buf, 1, 0), EBADF);
  EXPECT_ERRNO_IN(fallocate(ro, 0, 0, 4096), EBADF, EROFS);
  close(ro);
}

// ---------------------------------------------------------------------------
// Races on the snapshot namespace.

TEST_F(HostileTest, ConcurrentCreationOfOneSnapshotNameHasOneWinner) {
  ASSERT_EQ(mkdir(P("team-a").c_str(), 0755), 0);
  ASSERT_TRUE(WriteWholeFile(P("team-a/db.img"), PatternBytes(256 * KiB, 3)));
  constexpr int kThreads = 9;
  constexpr int kRounds = 12;
  for (int round = 0; round < kRounds; ++round) {
    const std::string name = "race-" + std::to_string(round);
    const std::string folder = P(".snapshots/team-a/db.img/");
    const std::string mirror = P(".snapshots/team-a");
    const std::string snapshots_root = P(".snapshots");
    const std::string listed = name + "\nteam-a/db.img";
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<int> result(kThreads, -1);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        ready.fetch_add(1);
        while (!go.load()) std::this_thread::yield();
        // Three ways in, each serialized by the kernel on a different inode
        // (the image's folder, the project's mirror, the .snapshots root),
        // so the daemon itself must decide: mkdir, a group snapshot of the
        // project, a group snapshot listing the image.
        int rc = 0;
        if (t % 3 == 0) {
          rc = mkdir((folder + name).c_str(), 0755);
        } else if (t % 3 == 1) {
          rc = setxattr(mirror.c_str(), "user.snapdisk.snapshot", name.data(), name.size(), 0);
        } else {
          rc = setxattr(snapshots_root.c_str(), "user.snapdisk.snapshot", listed.data(),
                        listed.size(), 0);
        }
        result[t] = rc == 0 ? 0 : errno;
      });
    }
    while (ready.load() < kThreads) std::this_thread::yield();
    go.store(true);
    for (std::thread& th : threads) th.join();
    int winners = 0;
    for (int t = 0; t < kThreads; ++t) {
      if (result[t] == 0) {
        ++winners;
      } else {
        EXPECT_EQ(result[t], EEXIST) << "round " << round << " thread " << t << ": "
                                     << ErrnoName(result[t]);
      }
    }
    EXPECT_EQ(winners, 1) << "round " << round;
  }
  std::multiset<std::string> expected;
  for (int round = 0; round < kRounds; ++round) expected.insert("race-" + std::to_string(round));
  EXPECT_EQ(ListNames(P(".snapshots/team-a/db.img")), expected);
  ASSERT_NO_FATAL_FAILURE(Remount());
  EXPECT_EQ(ListNames(P(".snapshots/team-a/db.img")), expected) << "after remount";

  // Racing deletes of one snapshot: one succeeds, the rest ENOENT. Racing
  // renames of two snapshots onto one new name: one wins, the other EEXIST.
  std::vector<int> result(kThreads, -1);
  std::vector<std::thread> threads;
  const std::string victim = P(".snapshots/team-a/db.img/race-0");
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] { result[t] = rmdir(victim.c_str()) == 0 ? 0 : errno; });
  }
  for (std::thread& th : threads) th.join();
  int deleted = 0;
  for (int t = 0; t < kThreads; ++t) {
    if (result[t] == 0) {
      ++deleted;
    } else {
      EXPECT_EQ(result[t], ENOENT) << ErrnoName(result[t]);
    }
  }
  EXPECT_EQ(deleted, 1);
  const std::string dir = P(".snapshots/team-a/db.img/");
  int r1 = -1, r2 = -1;
  std::thread a([&] { r1 = rename((dir + "race-1").c_str(), (dir + "target").c_str()) ? errno : 0; });
  std::thread b([&] { r2 = rename((dir + "race-2").c_str(), (dir + "target").c_str()) ? errno : 0; });
  a.join();
  b.join();
  EXPECT_TRUE((r1 == 0 && r2 == EEXIST) || (r1 == EEXIST && r2 == 0))
      << ErrnoName(r1) << " " << ErrnoName(r2);
  std::multiset<std::string> names = ListNames(P(".snapshots/team-a/db.img"));
  EXPECT_EQ(names.count("target"), 1u);
  EXPECT_EQ(names.size(), static_cast<size_t>(kRounds - 1)) << "a rename must not delete";
}

// ---------------------------------------------------------------------------
// Deleting things that are open.

TEST_F(HostileTest, RmdirOfSnapshotWithOpenFrozenView) {
  constexpr size_t kSize = 8 * MiB;
  const std::string old_data = PatternBytes(kSize, 20);
  ASSERT_TRUE(WriteWholeFile(P("vm1.img"), old_data));
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, PatternBytes(kSize, 21), /*fsync=*/true));
  const uint64_t held = StoredBytes();  // the live image and the snapshot's own 8 MiB
  ASSERT_GE(held, 2 * kSize) << "the snapshot should hold its own copy";

  int fd = open(P(".snapshots/vm1.img/s1/vm1.img").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  ASSERT_EQ(rmdir(P(".snapshots/vm1.img/s1").c_str()), 0) << ErrnoName(errno);
  struct stat st {};
  EXPECT_ERRNO(stat(P(".snapshots/vm1.img/s1").c_str(), &st), ENOENT);
  EXPECT_EQ(ListNames(P(".snapshots/vm1.img")), std::multiset<std::string>{});
  // A new snapshot with the old name sees today's data; the open fd still
  // sees the deleted snapshot's.
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  EXPECT_TRUE(ReadFd(fd, kSize) == old_data) << "the open frozen view changed after rmdir";
  EXPECT_EQ(fstat(fd, &st), 0) << ErrnoName(errno);
  EXPECT_EQ(st.st_size, static_cast<off_t>(kSize));
  EXPECT_TRUE(ReadWholeFile(P(".snapshots/vm1.img/s1/vm1.img")) == PatternBytes(kSize, 21));
  EXPECT_TRUE(ReadFd(fd, kSize) == old_data) << "the open frozen view changed";
  ASSERT_EQ(close(fd), 0);
  // After close the deleted snapshot's 8 MiB go back, in the background.
  uint64_t now = 0;
  EXPECT_TRUE(WaitFor([&] { return (now = StoredBytes()) <= held - kSize / 2; },
                      std::chrono::seconds(20)))
      << "stored bytes " << now << ", before the delete " << held;
}

TEST_F(HostileTest, UnlinkOfAnOpenImage) {
  constexpr size_t kSize = 8 * MiB;
  const std::string data = PatternBytes(kSize, 30);
  ASSERT_TRUE(WriteWholeFile(P("del.img"), data));
  const uint64_t base = StoredBytes();
  int fd = open(P("del.img").c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  ASSERT_EQ(unlink(P("del.img").c_str()), 0) << ErrnoName(errno);
  // The name is gone at once, everywhere.
  struct stat st {};
  EXPECT_ERRNO(stat(P("del.img").c_str(), &st), ENOENT);
  EXPECT_ERRNO(stat(P(".snapshots/del.img").c_str(), &st), ENOENT);
  EXPECT_EQ(ListNames(P("")).count("del.img"), 0u);
  EXPECT_EQ(ListNames(P(".snapshots")).count("del.img"), 0u);
  // The open fd keeps working: read, write, fstat, ftruncate, fsync.
  EXPECT_TRUE(ReadFd(fd, kSize) == data);
  const std::string patch = PatternBytes(64 * KiB, 31);
  EXPECT_EQ(pwrite(fd, patch.data(), patch.size(), 4096), static_cast<ssize_t>(patch.size()))
      << ErrnoName(errno);
  std::string expect = data;
  expect.replace(4096, patch.size(), patch);
  EXPECT_TRUE(ReadFd(fd, kSize) == expect) << "a write through the unlinked fd was lost";
  EXPECT_EQ(fsync(fd), 0) << ErrnoName(errno);
  EXPECT_EQ(fstat(fd, &st), 0) << ErrnoName(errno);
  EXPECT_EQ(st.st_size, static_cast<off_t>(kSize));
  EXPECT_EQ(st.st_nlink, 0u) << "an unlinked file has no links";
  EXPECT_EQ(ftruncate(fd, kSize + MiB), 0) << ErrnoName(errno);
  EXPECT_EQ(fstat(fd, &st), 0) << ErrnoName(errno);
  EXPECT_EQ(st.st_size, static_cast<off_t>(kSize + MiB));
  // A new image of the same name is a different file.
  ASSERT_TRUE(WriteWholeFile(P("del.img"), "new"));
  EXPECT_EQ(ReadWholeFile(P("del.img")), "new");
  EXPECT_TRUE(ReadFd(fd, kSize) == expect) << "the new image of that name clobbered the old fd";
  ASSERT_EQ(close(fd), 0);
  EXPECT_EQ(ReadWholeFile(P("del.img")), "new");
  uint64_t now = 0;
  EXPECT_TRUE(WaitFor([&] { return (now = StoredBytes()) + kSize / 2 <= base; },
                      std::chrono::seconds(20)))
      << "stored bytes " << now << ", with the image " << base;

  // With snapshots, rm is EBUSY (DESIGN.md) and the open fd is untouched.
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  int fd1 = open(P("vm1.img").c_str(), O_RDWR);
  ASSERT_GE(fd1, 0) << ErrnoName(errno);
  EXPECT_ERRNO(unlink(P("vm1.img").c_str()), EBUSY);
  EXPECT_TRUE(ReadFd(fd1, 1 * MiB) == PatternBytes(1 * MiB, 1));
  EXPECT_EQ(pwrite(fd1, "x", 1, 0), 1) << ErrnoName(errno);
  close(fd1);
  EXPECT_EQ(ReadWholeFile(P("vm1.img")).substr(0, 1), "x");
}

TEST_F(HostileTest, OpenFrozenViewOutlivesItsImage) {
  // The last snapshot deleted while its view is open, then the image
  // itself: the open view must keep reading the snapshot.
  constexpr size_t kSize = 4 * MiB;
  const std::string old_data = PatternBytes(kSize, 40);
  ASSERT_TRUE(WriteWholeFile(P("gone.img"), old_data));
  ASSERT_NO_FATAL_FAILURE(Snapshot("gone.img", "s1"));
  ASSERT_TRUE(PWrite(P("gone.img"), 0, PatternBytes(kSize, 41)));
  int fd = open(P(".snapshots/gone.img/s1/gone.img").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << ErrnoName(errno);
  ASSERT_EQ(rmdir(P(".snapshots/gone.img/s1").c_str()), 0) << ErrnoName(errno);
  ASSERT_EQ(unlink(P("gone.img").c_str()), 0) << ErrnoName(errno);
  // Give reclamation every chance to run: other work that schedules it.
  ASSERT_TRUE(WriteWholeFile(P("other.img"), PatternBytes(1 * MiB, 42)));
  ASSERT_EQ(unlink(P("other.img").c_str()), 0);
  StoredBytes();
  EXPECT_TRUE(ReadFd(fd, kSize) == old_data) << "an open frozen view lost its data";
  close(fd);
}

// ---------------------------------------------------------------------------
// Security.

TEST_F(HostileTest, DefaultMountIsPrivateAndStoreIsNotWorldWritable) {
  const std::string options = MountOptionsOf(mountpoint());
  ASSERT_FALSE(options.empty()) << mountpoint() << " not in /proc/self/mountinfo";
  EXPECT_TRUE(HasOption(options, "default_permissions")) << options;
  EXPECT_FALSE(HasOption(options, "allow_other")) << options;
  EXPECT_FALSE(HasOption(options, "allow_root")) << options;
  // Without allow_other no other user gets in, whatever the modes say.
  ASSERT_EQ(chmod(root().c_str(), 0755), 0);
  ASSERT_EQ(chmod(P("vm1.img").c_str(), 0644), 0);
  const std::string img = P("vm1.img"), mnt = mountpoint();
  EXPECT_EQ(AsUser(65534, 65534, [&] {
              struct stat st;
              return ErrOf(stat(img.c_str(), &st));
            }),
            EACCES);
  EXPECT_EQ(AsUser(65534, 65534, [&] { return ErrOf(OpenClose(img, O_RDONLY)); }), EACCES);

  // The store: the directory is the owner's only; the socket 0600; nothing
  // in it is writable by group or others.
  struct stat st {};
  ASSERT_EQ(stat(store().c_str(), &st), 0) << ErrnoName(errno);
  EXPECT_EQ(st.st_mode & 0077, 0u) << "store directory mode " << std::oct << st.st_mode;
  ASSERT_EQ(lstat((store() + "/control.sock").c_str(), &st), 0) << ErrnoName(errno);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u) << "control.sock mode " << std::oct << st.st_mode;
  ASSERT_EQ(lstat((store() + "/LOCK").c_str(), &st), 0) << ErrnoName(errno);
  EXPECT_EQ(st.st_mode & 0022, 0u) << "LOCK mode " << std::oct << st.st_mode;
  RunResult w = SD_RUN_OK("find " + ShellQuote(store()) + " -perm /022 ! -type l");
  EXPECT_EQ(w.out, "") << "group- or world-writable files in the store";
  // Nobody can talk to the control socket.
  const std::string sock = store() + "/control.sock";
  EXPECT_EQ(AsUser(65534, 65534, [&] { return ErrOf(access(sock.c_str(), W_OK)); }), EACCES);
}

// A daemon started with umask 0 (a careless unit file or shell) must still
// create its store's files owner-only: they hold whole disks.
class HostileUmaskTest : public HostileTest {
 protected:
  void SetUp() override {
    mode_t old = umask(0);
    HostileTest::SetUp();
    umask(old);
  }
};

TEST_F(HostileUmaskTest, StoreFilesAreNotWorldWritableUnderUmaskZero) {
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  ASSERT_EQ(FsyncPath(P("vm1.img")), 0);
  struct stat st {};
  ASSERT_EQ(stat(store().c_str(), &st), 0) << ErrnoName(errno);
  EXPECT_EQ(st.st_mode & 0077, 0u) << "store directory mode " << std::oct << st.st_mode;
  ASSERT_EQ(lstat((store() + "/control.sock").c_str(), &st), 0) << ErrnoName(errno);
  EXPECT_EQ(st.st_mode & 07777, 0600u) << "control.sock mode " << std::oct << st.st_mode;
  RunResult w = SD_RUN_OK("find " + ShellQuote(store()) + " -perm /022 ! -type l");
  EXPECT_EQ(w.out, "") << "group- or world-writable files in the store";
}

// The same checks with -o allow_other: now the kernel's permission checks
// (default_permissions) are what keeps other users out.
class HostileAllowOtherTest : public HostileTest {
 protected:
  std::vector<std::string> ExtraMountArgs() const override { return {"-o", "allow_other"}; }
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(HostileTest::SetUp());
    ASSERT_EQ(chmod(root().c_str(), 0755), 0);  // mkdtemp made it 0700
  }
};

constexpr uid_t kNobody = 65534;

TEST_F(HostileAllowOtherTest, PermissionsAreEnforcedForOtherUsers) {
  const std::string options = MountOptionsOf(mountpoint());
  EXPECT_TRUE(HasOption(options, "default_permissions")) << options;
  EXPECT_TRUE(HasOption(options, "allow_other")) << options;

  ASSERT_TRUE(WriteWholeFile(P("secret.img"), "top secret"));
  ASSERT_EQ(chmod(P("secret.img").c_str(), 0600), 0);
  ASSERT_TRUE(WriteWholeFile(P("pub.img"), "public"));
  ASSERT_EQ(chmod(P("pub.img").c_str(), 0644), 0);
  ASSERT_EQ(mkdir(P("team-a").c_str(), 0755), 0);
  ASSERT_TRUE(WriteWholeFile(P("team-a/db.img"), "db"));
  ASSERT_EQ(mkdir(P("mine").c_str(), 0755), 0);
  ASSERT_EQ(chown(P("mine").c_str(), kNobody, kNobody), 0);
  ASSERT_NO_FATAL_FAILURE(Snapshot("secret.img", "s0"));
  ASSERT_NO_FATAL_FAILURE(Snapshot("pub.img", "s0"));
  const std::string before = Tree();

  const std::string secret = P("secret.img"), pub = P("pub.img"), mnt = mountpoint();
  const std::string secret_frozen = P(".snapshots/secret.img/s0/secret.img");
  const std::string pub_frozen = P(".snapshots/pub.img/s0/pub.img");
  const std::string pub_snap = P(".snapshots/pub.img/s0");
  const std::string pub_new_snap = P(".snapshots/pub.img/evil");
  const std::string db_new_snap = P(".snapshots/team-a/db.img/evil");
  const std::string root_new = P("evil.img"), team_new = P("team-a/evil.img");
  const std::string mine = P("mine/mine.img"), mine_snap = P(".snapshots/mine/mine.img/s1");
  auto as_nobody = [&](const std::function<int()>& body) { return AsUser(kNobody, kNobody, body); };

  // Reading: the 0600 image, its frozen view and its xattrs are closed.
  EXPECT_EQ(as_nobody([&] { return ErrOf(OpenClose(secret, O_RDONLY)); }), EACCES);
  EXPECT_EQ(as_nobody([&] { return ErrOf(OpenClose(secret_frozen, O_RDONLY)); }), EACCES);
  EXPECT_EQ(as_nobody([&] { return ErrOf(getxattr(secret.c_str(), "user.snapdisk.used", nullptr,
                                                  0)); }),
            EACCES);
  EXPECT_EQ(as_nobody([&] { return ErrOf(OpenClose(pub, O_RDONLY)); }), 0);
  EXPECT_EQ(as_nobody([&] { return ErrOf(OpenClose(pub_frozen, O_RDONLY)); }), 0);
  // Writing the 0644 image of someone else: open, truncate, chmod, chown,
  // times, xattrs.
  EXPECT_EQ(as_nobody([&] { return ErrOf(OpenClose(pub, O_WRONLY)); }), EACCES);
  EXPECT_EQ(as_nobody([&] { return ErrOf(OpenClose(pub, O_RDONLY | O_TRUNC)); }), EACCES);
  EXPECT_EQ(as_nobody([&] { return ErrOf(truncate(pub.c_str(), 0)); }), EACCES);
  EXPECT_EQ(as_nobody([&] { return ErrOf(chmod(pub.c_str(), 0666)); }), EPERM);
  EXPECT_EQ(as_nobody([&] { return ErrOf(chown(pub.c_str(), kNobody, kNobody)); }), EPERM);
  EXPECT_EQ(as_nobody([&] { return ErrOf(utimensat(AT_FDCWD, pub.c_str(), nullptr, 0)); }),
            EACCES);
  EXPECT_EQ(as_nobody([&] { return ErrOf(setxattr(pub.c_str(), "user.x", "1", 1, 0)); }), EACCES);
  EXPECT_EQ(as_nobody([&] { return ErrOf(setxattr(pub.c_str(), "trusted.x", "1", 1, 0)); }),
            EPERM);
  EXPECT_EQ(as_nobody([&] {
              return ErrOf(setxattr(pub.c_str(), "user.snapdisk.rollback", "s0", 2, 0));
            }),
            EACCES);
  EXPECT_EQ(as_nobody([&] { return ErrOf(unlink(pub.c_str())); }), EACCES);
  EXPECT_EQ(as_nobody([&] { return ErrOf(OpenClose(root_new, O_WRONLY | O_CREAT)); }), EACCES);
  EXPECT_EQ(as_nobody([&] { return ErrOf(OpenClose(team_new, O_WRONLY | O_CREAT)); }), EACCES);
  // Snapshots of someone else's images: create, delete, rename, describe,
  // group snapshot.
  EXPECT_EQ(as_nobody([&] { return ErrOf(mkdir(pub_new_snap.c_str(), 0755)); }), EACCES);
  EXPECT_EQ(as_nobody([&] { return ErrOf(mkdir(db_new_snap.c_str(), 0755)); }), EACCES);
  EXPECT_EQ(as_nobody([&] { return ErrOf(rmdir(pub_snap.c_str())); }), EACCES);
  EXPECT_EQ(as_nobody([&] { return ErrOf(rename(pub_snap.c_str(), pub_new_snap.c_str())); }),
            EACCES);
  EXPECT_EQ(as_nobody([&] {
              return ErrOf(setxattr(pub_snap.c_str(), "user.description", "pwned", 5, 0));
            }),
            EACCES);
  EXPECT_EQ(as_nobody([&] {
              return ErrOf(setxattr(pub_snap.c_str(), "user.snapdisk.protected", "1", 1, 0));
            }),
            EACCES);
  EXPECT_EQ(as_nobody([&] { return ErrOf(unlink(pub_frozen.c_str())); }), EACCES);
  const std::string snapshots_root = P(".snapshots");
  EXPECT_EQ(as_nobody([&] {
              return ErrOf(setxattr(snapshots_root.c_str(), "user.snapdisk.snapshot", "evil", 4,
                                    0));
            }),
            EACCES);
  EXPECT_EQ(Tree(), before) << "another user changed .snapshots";
  EXPECT_EQ(ReadWholeFile(pub), "public");
  EXPECT_EQ(ReadWholeFile(secret), "top secret");

  // Their own image in their own directory: full control, snapshots too;
  // root still reads it.
  EXPECT_EQ(as_nobody([&] {
              int fd = open(mine.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
              if (fd < 0) return errno;
              int rc = write(fd, "mine", 4) == 4 ? 0 : errno;
              close(fd);
              return rc;
            }),
            0);
  struct stat st {};
  ASSERT_EQ(stat(mine.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kNobody);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(as_nobody([&] { return ErrOf(mkdir(mine_snap.c_str(), 0755)); }), 0);
  EXPECT_EQ(as_nobody([&] { return ErrOf(chown(mine.c_str(), 0, 0)); }), EPERM);
  EXPECT_EQ(ReadWholeFile(P(".snapshots/mine/mine.img/s1/mine.img")), "mine");
  // Their frozen view is read-only for them too.
  const std::string mine_frozen = P(".snapshots/mine/mine.img/s1/mine.img");
  EXPECT_EQ(as_nobody([&] { return ErrOf(OpenClose(mine_frozen, O_RDWR)); }), EROFS);
  EXPECT_EQ(as_nobody([&] { return ErrOf(chmod(mine_frozen.c_str(), 0666)); }), EROFS);
  EXPECT_EQ(as_nobody([&] { return ErrOf(rmdir(mine_snap.c_str())); }), 0);
}

TEST_F(HostileTest, ModesAndOwnersPersistAcrossRemount) {
  ASSERT_EQ(mkdir(P("team-a").c_str(), 0755), 0);
  ASSERT_TRUE(WriteWholeFile(P("team-a/db.img"), "db"));
  struct stat at_snapshot {};
  ASSERT_EQ(stat(P("vm1.img").c_str(), &at_snapshot), 0);
  ASSERT_NO_FATAL_FAILURE(Snapshot("vm1.img", "s1"));
  ASSERT_EQ(chmod(P("vm1.img").c_str(), 0640), 0);
  ASSERT_EQ(chown(P("vm1.img").c_str(), 1234, 5678), 0);
  ASSERT_EQ(chmod(P("team-a").c_str(), 02750), 0);
  ASSERT_EQ(chown(P("team-a").c_str(), 4321, 8765), 0);
  ASSERT_EQ(chmod(P("team-a/db.img").c_str(), 04711), 0);
  ASSERT_NO_FATAL_FAILURE(Remount());
  struct stat st {};
  ASSERT_EQ(stat(P("vm1.img").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  ASSERT_EQ(stat(P("team-a").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 02750u);
  EXPECT_EQ(st.st_uid, 4321u);
  EXPECT_EQ(st.st_gid, 8765u);
  ASSERT_EQ(stat(P("team-a/db.img").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 04711u);
  // The frozen view keeps the image's owner and bits from when the snapshot
  // was taken (a later chmod cannot open up old data); the snapshot folder
  // follows the image's current owner.
  ASSERT_EQ(stat(P(".snapshots/vm1.img/s1/vm1.img").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, at_snapshot.st_mode & 07777);
  EXPECT_EQ(st.st_uid, at_snapshot.st_uid);
  EXPECT_EQ(st.st_gid, at_snapshot.st_gid);
  ASSERT_EQ(stat(P(".snapshots/vm1.img").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  // Root still cannot write the frozen view, whatever the bits.
  EXPECT_ERRNO(OpenClose(P(".snapshots/vm1.img/s1/vm1.img"), O_RDWR), EROFS);
}

}  // namespace
}  // namespace snapdisk::testing
