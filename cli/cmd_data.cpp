// snapdisk clone | diff | export | import: moving image data in and out.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/util.h"

namespace snapdisk::cli {
namespace {

using nlohmann::json;

constexpr size_t kChunk = 64 * 1024;  // zero detection unit of export/import
constexpr size_t kIoSize = 1 << 20;

struct View {
  MountRef image;
  std::string snapshot;  // "" = live
  std::string path() const {
    if (snapshot.empty()) return image.abs();
    return image.snapshots_dir() + "/" + snapshot + "/" + image.rel.substr(image.rel.rfind('/') + 1);
  }
  std::string spec() const { return snapshot.empty() ? image.rel : image.rel + "@" + snapshot; }
};

View ParseView(const std::string& spec) {
  View v;
  std::string image;
  SplitAt(spec, &image, &v.snapshot);
  v.image = LocateImage(image);
  if (!v.snapshot.empty()) {
    struct stat st {};
    if (stat(v.path().c_str(), &st) != 0) FailErrno("snapshot " + v.spec(), errno);
  }
  return v;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

bool AllZero(const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

void PReadAll(int fd, char* buf, size_t len, uint64_t off, const std::string& what) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, buf + done, len - done, static_cast<off_t>(off + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) FailErrno("read " + what, errno);
    if (n == 0) {
      std::fill(buf + done, buf + len, 0);
      return;
    }
    done += static_cast<size_t>(n);
  }
}

void PWriteAll(int fd, const char* buf, size_t len, uint64_t off, const std::string& what) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, buf + done, len - done, static_cast<off_t>(off + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) FailErrno("write " + what, errno);
    done += static_cast<size_t>(n);
  }
}

struct Extent {
  uint64_t offset, length;
};

// SEEK_DATA/SEEK_HOLE extents of an open file.
std::vector<Extent> DataExtents(int fd, uint64_t size, const std::string& what) {
  std::vector<Extent> out;
  off_t pos = 0;
  while (static_cast<uint64_t>(pos) < size) {
    off_t data = lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;
      FailErrno("lseek " + what, errno);
    }
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) FailErrno("lseek " + what, errno);
    out.push_back({static_cast<uint64_t>(data), static_cast<uint64_t>(hole - data)});
    pos = hole;
  }
  return out;
}

// Copies the extents from `in` to `out` at the same offsets, skipping
// all-zero 64 KiB chunks (the output stays sparse). Returns bytes written.
uint64_t CopyExtents(int in, int out, const std::vector<Extent>& extents, const std::string& from,
                     const std::string& to, Progress* progress) {
  std::vector<char> buf(kIoSize);
  uint64_t done = 0, written = 0;
  for (const Extent& e : extents) {
    for (uint64_t off = e.offset; off < e.offset + e.length;) {
      const size_t len = static_cast<size_t>(std::min<uint64_t>(kIoSize, e.offset + e.length - off));
      PReadAll(in, buf.data(), len, off, from);
      for (size_t c = 0; c < len; c += kChunk) {
        const size_t n = std::min(kChunk, len - c);
        if (AllZero(buf.data() + c, n)) continue;
        PWriteAll(out, buf.data() + c, n, off + c, to);
        written += n;
      }
      off += len;
      done += len;
      progress->Update(done);
    }
  }
  return written;
}

std::vector<Extent> DiffExtents(const View& from_view, const std::string& to_snapshot,
                                json* reply = nullptr) {
  json req{{"cmd", "diff"}, {"image", from_view.image.rel}};
  req["from"] = from_view.snapshot.empty() ? json(nullptr) : json(from_view.snapshot);
  req["to"] = to_snapshot.empty() ? json(nullptr) : json(to_snapshot);
  json result = ControlRequest(from_view.image, req);
  std::vector<Extent> extents;
  for (const json& e : result.at("extents")) {
    extents.push_back({e.at("offset").get<uint64_t>(), e.at("length").get<uint64_t>()});
  }
  if (reply != nullptr) *reply = std::move(result);
  return extents;
}

struct DataArgs {
  std::string a, b, since, format;
};

void Clone(const DataArgs& args) {
  View src = ParseView(args.a);
  MountRef dst = Locate(args.b);
  if (dst.mountpoint != src.image.mountpoint) {
    FailErrno("clone " + args.b + ": must be in the same mount as " + args.a, EXDEV);
  }
  Fd in(open(src.path().c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) FailErrno(src.spec(), errno);
  struct stat st {};
  if (fstat(in.get(), &st) != 0) FailErrno(src.spec(), errno);
  const int64_t start = NowNs();
  Fd out(open(dst.abs().c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 07777));
  if (out.get() < 0) FailErrno(args.b, errno);
  // One call over the whole source: the daemon makes it a constant-time
  // clone; continue calls cover what a short reply left.
  uint64_t copied = 0;
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  while (copied < size) {
    loff_t in_off = static_cast<loff_t>(copied), out_off = static_cast<loff_t>(copied);
    ssize_t n = copy_file_range(in.get(), &in_off, out.get(), &out_off, size - copied, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      unlink(dst.abs().c_str());
      FailErrno("copy_file_range " + src.spec() + " -> " + args.b, e);
    }
    if (n == 0) break;
    copied += static_cast<uint64_t>(n);
  }
  if (fsync(out.get()) != 0) FailErrno("fsync " + args.b, errno);
  std::printf("cloned %s to %s (%s) in %.3f s\n", src.spec().c_str(), dst.rel.c_str(),
              HumanBytes(size).c_str(), SecondsSince(start));
}

void Diff(const DataArgs& args) {
  View from = ParseView(args.a);
  std::string to_snapshot;
  if (!args.b.empty()) {
    View to = ParseView(args.b);
    if (to.image.abs() != from.image.abs()) FailUsage("both sides of a diff must be one image");
    to_snapshot = to.snapshot;
  }  // else `diff IMG@A` (from A) or `diff IMG` (all data): to the live image
  json reply;
  const int64_t start = NowNs();
  std::vector<Extent> extents = DiffExtents(from, to_snapshot, &reply);
  const double seconds = SecondsSince(start);
  if (IsJson(args.format)) {
    json out{{"image", from.image.rel},
             {"from", from.snapshot.empty() ? json(nullptr) : json(from.snapshot)},
             {"to", to_snapshot.empty() ? json(nullptr) : json(to_snapshot)},
             {"extents", reply["extents"]},
             {"bytes", reply["bytes"]}};
    return PrintJson(out);
  }
  std::vector<std::vector<std::string>> rows;
  for (const Extent& e : extents) {
    rows.push_back({std::to_string(e.offset), std::to_string(e.length), "data"});
  }
  PrintTable({"OFFSET", "LENGTH", "TYPE"}, rows);
  std::fprintf(stderr, "%zu extents, %s, in %.3f s\n", extents.size(),
               HumanBytes(reply["bytes"].get<uint64_t>()).c_str(), seconds);
}

void Export(const DataArgs& args) {
  View src = ParseView(args.a);
  Fd in(open(src.path().c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) FailErrno(src.spec(), errno);
  struct stat st {};
  if (fstat(in.get(), &st) != 0) FailErrno(src.spec(), errno);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  std::vector<Extent> extents;
  if (!args.since.empty()) {
    View since{src.image, args.since};
    struct stat sst {};
    if (stat(since.path().c_str(), &sst) != 0) FailErrno("snapshot " + since.spec(), errno);
    extents = DiffExtents(since, src.snapshot);
  } else {
    extents = DataExtents(in.get(), size, src.spec());
  }
  Fd out(open(args.b.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (out.get() < 0) FailErrno(args.b, errno);
  if (ftruncate(out.get(), static_cast<off_t>(size)) != 0) FailErrno(args.b, errno);
  uint64_t total = 0;
  for (const Extent& e : extents) total += e.length;
  const int64_t start = NowNs();
  Progress progress("export", total);
  uint64_t written = CopyExtents(in.get(), out.get(), extents, src.spec(), args.b, &progress);
  if (fsync(out.get()) != 0) FailErrno("fsync " + args.b, errno);
  progress.Finish();
  std::printf("exported %s to %s: %s of %s written in %.3f s\n", src.spec().c_str(),
              args.b.c_str(), HumanBytes(written).c_str(), HumanBytes(size).c_str(),
              SecondsSince(start));
}

void Import(const DataArgs& args) {
  Fd in(open(args.a.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) FailErrno(args.a, errno);
  struct stat st {};
  if (fstat(in.get(), &st) != 0) FailErrno(args.a, errno);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  MountRef dst = Locate(args.b);
  Fd out(open(dst.abs().c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (out.get() < 0) FailErrno(args.b, errno);
  if (ftruncate(out.get(), static_cast<off_t>(size)) != 0) FailErrno(args.b, errno);
  std::vector<Extent> extents;
  if (S_ISREG(st.st_mode)) {
    extents = DataExtents(in.get(), size, args.a);
  } else {
    FailErrno(args.a + ": not a regular file", EINVAL);
  }
  uint64_t total = 0;
  for (const Extent& e : extents) total += e.length;
  const int64_t start = NowNs();
  Progress progress("import", total);
  uint64_t written = CopyExtents(in.get(), out.get(), extents, args.a, args.b, &progress);
  if (fsync(out.get()) != 0) FailErrno("fsync " + args.b, errno);
  progress.Finish();
  std::printf("imported %s to %s: %s of %s written in %.3f s\n", args.a.c_str(), dst.rel.c_str(),
              HumanBytes(written).c_str(), HumanBytes(size).c_str(), SecondsSince(start));
}

}  // namespace

void AddDataCommands(CLI::App& app) {
  auto clone = std::make_shared<DataArgs>();
  CLI::App* cmd = app.add_subcommand(
      "clone", "Thin-clone an image or a snapshot into a new image (copy_file_range)");
  cmd->add_option("SOURCE", clone->a, "IMG or IMG@SNAPSHOT")->required();
  cmd->add_option("DEST", clone->b, "New image in the same mount")->required();
  cmd->callback(RunVerb("clone", [clone] { Clone(*clone); }));

  auto diff = std::make_shared<DataArgs>();
  cmd = app.add_subcommand("diff",
                           "Byte ranges that differ between two views of an image (rbd diff): "
                           "IMG@A IMG@B, IMG@A IMG (live), or IMG (all data)");
  cmd->add_option("FROM", diff->a, "IMG@A (or IMG: from nothing)")->required();
  cmd->add_option("TO", diff->b, "IMG@B, or IMG for the live image (default)");
  AddFormatOption(cmd, &diff->format);
  cmd->callback(RunVerb("diff", [diff] { Diff(*diff); }));

  auto exp = std::make_shared<DataArgs>();
  cmd = app.add_subcommand("export",
                           "Write an image or snapshot to a sparse raw FILE (only its data, or "
                           "with --since only what changed since a snapshot)");
  cmd->add_option("SOURCE", exp->a, "IMG or IMG@SNAPSHOT")->required();
  cmd->add_option("FILE", exp->b, "Output file (created or truncated)")->required();
  cmd->add_option("--since", exp->since, "Older snapshot: write only the ranges changed since");
  cmd->callback(RunVerb("export", [exp] { Export(*exp); }));

  auto imp = std::make_shared<DataArgs>();
  cmd = app.add_subcommand("import",
                           "Copy a raw FILE into a new image, skipping holes and all-zero "
                           "64 KiB chunks");
  cmd->add_option("FILE", imp->a, "Raw disk image")->required();
  cmd->add_option("IMAGE", imp->b, "New image (a path inside a mount)")->required();
  cmd->callback(RunVerb("import", [imp] { Import(*imp); }));
}

}  // namespace snapdisk::cli
