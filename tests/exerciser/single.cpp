// The single-threaded model run: random operations on several images, every
// result checked against an in-memory copy of each image and of each
// snapshot's frozen bytes.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>

#include "runs.h"
#include "util.h"

namespace snapdisk::exerciser {
namespace {

constexpr size_t kMaxImages = 6;
constexpr size_t kMaxSnapshotsPerImage = 4;
constexpr uint64_t kMaxIo = 300 * KiB;
constexpr uint64_t kMaxCopy = 2 * MiB;  // copy_file_range spans several 64 KiB blocks

struct Snapshot {
  std::string name;
  std::vector<uint8_t> bytes;  // the image as it was at mkdir
};

struct Image {
  std::string name;
  std::vector<uint8_t> data;  // the model: size is data.size()
  int fd = -1;                // O_RDWR, open for the whole run except around reopen
  std::vector<Snapshot> snapshots;
};

class SingleRun {
 public:
  SingleRun(const Config& config, OpLog& log, Counters& counters)
      : config_(config), rng_(config.seed), log_(log), counters_(counters) {}

  void Run();

 private:
  std::string Path(const std::string& image) const { return ImagePath(config_, image); }
  std::string SnapDir(const Image& img, const std::string& snap) const {
    return SnapshotDir(config_, img.name, snap);
  }
  std::string FrozenPath(const Image& img, const Snapshot& s) const {
    return SnapDir(img, s.name) + "/" + img.name;
  }
  Image& PickImage() { return *images_[rng_.Below(images_.size())]; }
  // An offset for an access of `len` bytes: mostly inside the current size,
  // sometimes anywhere below max_size.
  uint64_t PickOffset(uint64_t size, uint64_t len);
  void Note(std::string_view op, std::string line) {
    counters_.Count(op);
    log_.Add(std::move(line));
  }

  Image& CreateImage(std::string name);
  void OpenFd(Image& img);
  void Step();
  void OpWrite(Image& img);
  void OpRead(Image& img);
  void OpMmapRead(Image& img);
  void OpMmapWrite(Image& img);
  void OpTruncate(Image& img);
  void OpFallocateGrow(Image& img);
  void OpPunchHole(Image& img);
  void OpZeroRange(Image& img);
  void OpCopyRange(Image& dst);
  void OpClone();
  void OpSnapshot(Image& img);
  void OpDeleteSnapshot(Image& img);
  void OpReopen(Image& img);
  void OpSeek(Image& img);
  void OpDeleteImage();
  void VerifyImage(Image& img, const std::string& why);
  void VerifySnapshot(Image& img, const Snapshot& snap);
  void VerifyAll(const std::string& why);
  void ReadBack(Image& img, uint64_t off, uint64_t len, const std::string& what);

  const Config& config_;
  Rng rng_;
  OpLog& log_;
  Counters& counters_;
  std::vector<std::unique_ptr<Image>> images_;
  uint64_t next_image_ = 0;
  uint64_t next_snapshot_ = 0;
  std::vector<uint8_t> buf_;
};

uint64_t SingleRun::PickOffset(uint64_t size, uint64_t len) {
  uint64_t limit = config_.max_size - len;
  uint64_t off = rng_.Below(4) == 0 ? rng_.Below(limit + 1)
                                    : rng_.Below(std::min(limit, std::max<uint64_t>(size, 1)) + 1);
  if (rng_.OneIn(3)) off &= ~(kPage - 1);  // some page-aligned accesses
  return std::min(off, limit);
}

Image& SingleRun::CreateImage(std::string name) {
  auto img = std::make_unique<Image>();
  img->name = std::move(name);
  img->fd = open(Path(img->name).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (img->fd < 0) Fail("create {}: {}", img->name, ErrnoStr(errno));
  images_.push_back(std::move(img));
  return *images_.back();
}

void SingleRun::OpenFd(Image& img) {
  img.fd = open(Path(img.name).c_str(), O_RDWR | O_CLOEXEC);
  if (img.fd < 0) Fail("open {}: {}", img.name, ErrnoStr(errno));
}

void SingleRun::ReadBack(Image& img, uint64_t off, uint64_t len, const std::string& what) {
  if (off >= img.data.size()) return;
  len = std::min<uint64_t>(len, img.data.size() - off);
  buf_.resize(len);
  size_t got = PReadUpTo(img.fd, buf_.data(), len, off, what);
  if (got != len) Fail("{}: read back {} bytes at {}, got {}", what, len, off, got);
  ExpectBytes(buf_.data(), img.data.data() + off, len, off, what + " read-back");
}

void SingleRun::OpWrite(Image& img) {
  uint64_t len = RandomLength(rng_, kMaxIo);
  uint64_t off = PickOffset(img.data.size(), len);
  std::vector<uint8_t> data(len);
  FillPattern(rng_, data.data(), len);
  Note("pwrite", fmt::format("pwrite {} off={} len={} first={:02x}", img.name, off, len, data[0]));
  PWriteAll(img.fd, data.data(), len, off, "pwrite " + img.name);
  if (img.data.size() < off + len) img.data.resize(off + len, 0);
  std::memcpy(img.data.data() + off, data.data(), len);
  if (rng_.OneIn(4)) ReadBack(img, off, len, "pwrite " + img.name);
}

void SingleRun::OpRead(Image& img) {
  uint64_t len = RandomLength(rng_, kMaxIo);
  uint64_t off = PickOffset(img.data.size(), len);
  Note("pread", fmt::format("pread {} off={} len={}", img.name, off, len));
  buf_.resize(len);
  size_t got = PReadUpTo(img.fd, buf_.data(), len, off, "pread " + img.name);
  uint64_t want = off >= img.data.size() ? 0 : std::min<uint64_t>(len, img.data.size() - off);
  if (got != want) {
    Fail("pread {} off={} len={}: got {} bytes, want {} (model size {})", img.name, off, len, got,
         want, img.data.size());
  }
  if (want > 0) ExpectBytes(buf_.data(), img.data.data() + off, want, off, "pread " + img.name);
}

void SingleRun::OpMmapRead(Image& img) {
  uint64_t size = img.data.size();
  if (size == 0) return OpRead(img);
  uint64_t len = std::min(RandomLength(rng_, kMaxIo), size);
  uint64_t off = rng_.Below(size - len + 1);
  uint64_t map_off = off & ~(kPage - 1);
  uint64_t map_len = off + len - map_off;
  Note("mmap_read", fmt::format("mmap_read {} off={} len={}", img.name, off, len));
  void* p = mmap(nullptr, map_len, PROT_READ, MAP_SHARED, img.fd, static_cast<off_t>(map_off));
  if (p == MAP_FAILED) Fail("mmap_read {}: mmap: {}", img.name, ErrnoStr(errno));
  const uint8_t* bytes = static_cast<const uint8_t*>(p) + (off - map_off);
  buf_.assign(bytes, bytes + len);  // copy out: a compare failure must not hold the map
  munmap(p, map_len);
  ExpectBytes(buf_.data(), img.data.data() + off, len, off, "mmap_read " + img.name);
}

void SingleRun::OpMmapWrite(Image& img) {
  uint64_t size = img.data.size();
  if (size == 0) return OpWrite(img);
  uint64_t len = std::min(RandomLength(rng_, kMaxIo), size);
  uint64_t off = rng_.Below(size - len + 1);
  uint64_t map_off = off & ~(kPage - 1);
  uint64_t map_len = off + len - map_off;
  std::vector<uint8_t> data(len);
  FillPattern(rng_, data.data(), len);
  Note("mmap_write", fmt::format("mmap_write {} off={} len={} first={:02x}", img.name, off, len,
                                 data[0]));
  void* p = mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, img.fd,
                 static_cast<off_t>(map_off));
  if (p == MAP_FAILED) Fail("mmap_write {}: mmap: {}", img.name, ErrnoStr(errno));
  std::memcpy(static_cast<uint8_t*>(p) + (off - map_off), data.data(), len);
  if (msync(p, map_len, MS_SYNC) != 0) Fail("mmap_write {}: msync: {}", img.name, ErrnoStr(errno));
  munmap(p, map_len);
  std::memcpy(img.data.data() + off, data.data(), len);
  if (rng_.OneIn(3)) ReadBack(img, off, len, "mmap_write " + img.name);
}

void SingleRun::OpTruncate(Image& img) {
  uint64_t size = img.data.size();
  uint64_t new_size;
  switch (rng_.Below(4)) {
    case 0: new_size = rng_.Below(size + 1); break;                      // shrink
    case 1: new_size = rng_.Between(size, config_.max_size); break;      // grow
    case 2: new_size = std::min(config_.max_size, size + rng_.Below(kMaxIo)); break;
    default: new_size = size > 0 ? size - rng_.Below(std::min<uint64_t>(size, kMaxIo) + 1) : 0;
  }
  Note("truncate", fmt::format("ftruncate {} {} -> {}", img.name, size, new_size));
  if (ftruncate(img.fd, static_cast<off_t>(new_size)) != 0) {
    Fail("ftruncate {} to {}: {}", img.name, new_size, ErrnoStr(errno));
  }
  img.data.resize(new_size, 0);
  // The bytes around the new end must be right (shrink-then-grow must read zeros).
  if (new_size > 0) ReadBack(img, new_size - std::min<uint64_t>(new_size, 8192), 8192, "ftruncate");
}

void SingleRun::OpFallocateGrow(Image& img) {
  uint64_t len = 1 + rng_.Below(kMaxCopy);
  uint64_t off = PickOffset(img.data.size(), len);
  Note("falloc_grow", fmt::format("fallocate(0) {} off={} len={}", img.name, off, len));
  if (fallocate(img.fd, 0, static_cast<off_t>(off), static_cast<off_t>(len)) != 0) {
    Fail("fallocate(0) {} off={} len={}: {}", img.name, off, len, ErrnoStr(errno));
  }
  if (img.data.size() < off + len) img.data.resize(off + len, 0);
}

void SingleRun::OpPunchHole(Image& img) {
  uint64_t len = RandomLength(rng_, kMaxCopy);
  uint64_t off = PickOffset(img.data.size(), len);
  Note("punch_hole", fmt::format("punch_hole {} off={} len={}", img.name, off, len));
  if (fallocate(img.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                static_cast<off_t>(len)) != 0) {
    Fail("punch_hole {} off={} len={}: {}", img.name, off, len, ErrnoStr(errno));
  }
  if (off < img.data.size()) {
    uint64_t end = std::min<uint64_t>(off + len, img.data.size());
    std::memset(img.data.data() + off, 0, end - off);
  }
  if (rng_.OneIn(3)) ReadBack(img, off > 100 ? off - 100 : 0, len + 200, "punch_hole");
}

void SingleRun::OpZeroRange(Image& img) {
  uint64_t len = RandomLength(rng_, kMaxCopy);
  uint64_t off = PickOffset(img.data.size(), len);
  bool keep_size = rng_.OneIn(2);
  Note("zero_range", fmt::format("zero_range{} {} off={} len={}", keep_size ? "|keep_size" : "",
                                 img.name, off, len));
  int mode = FALLOC_FL_ZERO_RANGE | (keep_size ? FALLOC_FL_KEEP_SIZE : 0);
  if (fallocate(img.fd, mode, static_cast<off_t>(off), static_cast<off_t>(len)) != 0) {
    Fail("zero_range {} off={} len={}: {}", img.name, off, len, ErrnoStr(errno));
  }
  uint64_t end = off + len;
  if (!keep_size && img.data.size() < end) img.data.resize(end, 0);
  if (off < img.data.size()) {
    end = std::min<uint64_t>(end, img.data.size());
    std::memset(img.data.data() + off, 0, end - off);
  }
  if (rng_.OneIn(3)) ReadBack(img, off > 100 ? off - 100 : 0, len + 200, "zero_range");
}

// Copies `len` bytes with copy_file_range, looping over short copies.
// Returns the bytes copied (short only if the source ended).
uint64_t CopyRange(int src_fd, uint64_t src_off, int dst_fd, uint64_t dst_off, uint64_t len,
                   const std::string& what) {
  uint64_t done = 0;
  while (done < len) {
    loff_t in = static_cast<loff_t>(src_off + done), out = static_cast<loff_t>(dst_off + done);
    ssize_t n = copy_file_range(src_fd, &in, dst_fd, &out, len - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) Fail("{}: copy_file_range at {}->{} len {}: {}", what, src_off + done,
                    dst_off + done, len - done, ErrnoStr(errno));
    if (n == 0) break;
    done += static_cast<uint64_t>(n);
  }
  return done;
}

void SingleRun::OpCopyRange(Image& dst) {
  // Source: another live image, or a snapshot's frozen view (any image's).
  Image* src = nullptr;
  const Snapshot* snap = nullptr;
  if (rng_.OneIn(3)) {
    Image& owner = PickImage();
    if (!owner.snapshots.empty()) {
      src = &owner;
      snap = &owner.snapshots[rng_.Below(owner.snapshots.size())];
    }
  }
  if (src == nullptr) {
    if (images_.size() < 2) return OpWrite(dst);
    do src = &PickImage(); while (src == &dst);
  }
  const std::vector<uint8_t>& src_bytes = snap != nullptr ? snap->bytes : src->data;
  if (src_bytes.empty()) return OpWrite(dst);
  uint64_t len = std::min<uint64_t>(RandomLength(rng_, kMaxCopy), src_bytes.size());
  uint64_t src_off = rng_.Below(src_bytes.size() - len + 1);
  uint64_t dst_off = PickOffset(dst.data.size(), len);
  if (rng_.OneIn(3)) {  // block-aligned both sides: the engine may share blocks
    src_off &= ~(64 * KiB - 1);
    dst_off &= ~(64 * KiB - 1);
    len = std::min<uint64_t>(len, src_bytes.size() - src_off);
  }
  std::string src_name = snap != nullptr ? src->name + "@" + snap->name : src->name;
  Note("copy_range", fmt::format("copy_file_range {} off={} -> {} off={} len={}", src_name,
                                 src_off, dst.name, dst_off, len));
  int src_fd = src->fd;
  if (snap != nullptr) {
    src_fd = open(FrozenPath(*src, *snap).c_str(), O_RDONLY | O_CLOEXEC);
    if (src_fd < 0) Fail("open frozen view {}: {}", src_name, ErrnoStr(errno));
  }
  uint64_t copied = CopyRange(src_fd, src_off, dst.fd, dst_off, len, "copy_range " + src_name);
  if (snap != nullptr) close(src_fd);
  if (copied != len) {
    Fail("copy_file_range {} -> {}: copied {} of {} bytes inside the source", src_name, dst.name,
         copied, len);
  }
  if (dst.data.size() < dst_off + len) dst.data.resize(dst_off + len, 0);
  std::memcpy(dst.data.data() + dst_off, src_bytes.data() + src_off, len);
  if (rng_.OneIn(3)) ReadBack(dst, dst_off, len, "copy_range");
}

void SingleRun::OpClone() {
  if (images_.size() >= kMaxImages) OpDeleteImage();
  Image& src = PickImage();
  const Snapshot* snap = nullptr;
  if (!src.snapshots.empty() && rng_.OneIn(2)) {
    snap = &src.snapshots[rng_.Below(src.snapshots.size())];
  }
  std::vector<uint8_t> bytes = snap != nullptr ? snap->bytes : src.data;
  std::string src_name = snap != nullptr ? src.name + "@" + snap->name : src.name;
  int src_fd = src.fd;
  std::string src_frozen = snap != nullptr ? FrozenPath(src, *snap) : "";
  Image& dst = CreateImage(fmt::format("clone{}.img", next_image_++));
  Note("clone", fmt::format("clone {} ({} bytes) -> {}", src_name, bytes.size(), dst.name));
  if (!src_frozen.empty()) {
    src_fd = open(src_frozen.c_str(), O_RDONLY | O_CLOEXEC);
    if (src_fd < 0) Fail("open frozen view {}: {}", src_name, ErrnoStr(errno));
  }
  uint64_t copied = CopyRange(src_fd, 0, dst.fd, 0, bytes.size(), "clone " + src_name);
  if (!src_frozen.empty()) close(src_fd);
  if (copied != bytes.size()) {
    Fail("clone {} -> {}: copied {} of {} bytes", src_name, dst.name, copied, bytes.size());
  }
  dst.data = std::move(bytes);
  if (rng_.OneIn(2)) VerifyImage(dst, "after clone");
}

void SingleRun::OpSnapshot(Image& img) {
  if (img.snapshots.size() >= kMaxSnapshotsPerImage) OpDeleteSnapshot(img);
  Snapshot snap{fmt::format("s{}", next_snapshot_++), img.data};
  Note("snapshot", fmt::format("mkdir snapshot {}@{} (size {})", img.name, snap.name,
                               snap.bytes.size()));
  if (mkdir(SnapDir(img, snap.name).c_str(), 0755) != 0) {
    Fail("mkdir {}: {}", SnapDir(img, snap.name), ErrnoStr(errno));
  }
  img.snapshots.push_back(std::move(snap));
  if (rng_.OneIn(4)) {
    // A duplicate name must be refused with EEXIST.
    const std::string dup = SnapDir(img, img.snapshots.back().name);
    if (mkdir(dup.c_str(), 0755) == 0 || errno != EEXIST) {
      Fail("mkdir of an existing snapshot {}: want EEXIST, got {}", dup, ErrnoStr(errno));
    }
  }
}

void SingleRun::OpDeleteSnapshot(Image& img) {
  if (img.snapshots.empty()) return;
  size_t i = img.snapshots.size() >= kMaxSnapshotsPerImage ? 0 : rng_.Below(img.snapshots.size());
  std::string dir = SnapDir(img, img.snapshots[i].name);
  Note("snap_delete", fmt::format("rmdir snapshot {}@{}", img.name, img.snapshots[i].name));
  if (rmdir(dir.c_str()) != 0) Fail("rmdir {}: {}", dir, ErrnoStr(errno));
  struct stat st;
  if (stat(dir.c_str(), &st) == 0 || errno != ENOENT) {
    Fail("snapshot {} still visible after rmdir ({})", dir, ErrnoStr(errno));
  }
  img.snapshots.erase(img.snapshots.begin() + static_cast<std::ptrdiff_t>(i));
}

void SingleRun::OpReopen(Image& img) {
  Note("reopen", fmt::format("close+open {}", img.name));
  if (close(img.fd) != 0) Fail("close {}: {}", img.name, ErrnoStr(errno));
  OpenFd(img);
  struct stat st;
  if (fstat(img.fd, &st) != 0) Fail("fstat {}: {}", img.name, ErrnoStr(errno));
  if (static_cast<uint64_t>(st.st_size) != img.data.size()) {
    Fail("{} after reopen: st_size {}, model size {}", img.name, st.st_size, img.data.size());
  }
}

// SEEK_DATA/SEEK_HOLE may report zeros as data, never data as a hole.
void SingleRun::OpSeek(Image& img) {
  uint64_t size = img.data.size();
  uint64_t off = rng_.Below(size + 1);
  Note("seek", fmt::format("seek_data/seek_hole {} off={}", img.name, off));
  auto zeros = [&](uint64_t from, uint64_t to) {
    for (uint64_t i = from; i < to; ++i) {
      if (img.data[i] != 0) {
        Fail("seek {} from {}: [{}, {}) reported as a hole but byte {} is {:#x}", img.name, off,
             from, to, i, img.data[i]);
      }
    }
  };
  off_t data = lseek(img.fd, static_cast<off_t>(off), SEEK_DATA);
  if (data < 0) {
    if (errno != ENXIO) Fail("SEEK_DATA {} at {}: {}", img.name, off, ErrnoStr(errno));
    zeros(off, size);
  } else {
    if (static_cast<uint64_t>(data) < off || static_cast<uint64_t>(data) > size) {
      Fail("SEEK_DATA {} at {} returned {} (size {})", img.name, off, data, size);
    }
    zeros(off, static_cast<uint64_t>(data));
  }
  off_t hole = lseek(img.fd, static_cast<off_t>(off), SEEK_HOLE);
  if (hole < 0) {
    if (errno != ENXIO || off < size) Fail("SEEK_HOLE {} at {}: {}", img.name, off, ErrnoStr(errno));
    return;
  }
  if (static_cast<uint64_t>(hole) < off || static_cast<uint64_t>(hole) > size) {
    Fail("SEEK_HOLE {} at {} returned {} (size {})", img.name, off, hole, size);
  }
  if (static_cast<uint64_t>(hole) == size) return;
  off_t next = lseek(img.fd, hole, SEEK_DATA);
  if (next < 0 && errno != ENXIO) Fail("SEEK_DATA {} at {}: {}", img.name, hole, ErrnoStr(errno));
  zeros(static_cast<uint64_t>(hole), next < 0 ? size : static_cast<uint64_t>(next));
}

void SingleRun::OpDeleteImage() {
  if (images_.size() < 2) return;
  size_t i = rng_.Below(images_.size());
  Image& img = *images_[i];
  std::string path = Path(img.name);
  Note("image_delete", fmt::format("unlink {} ({} snapshots)", img.name, img.snapshots.size()));
  if (!img.snapshots.empty()) {
    if (unlink(path.c_str()) == 0 || errno != EBUSY) {
      Fail("unlink {} with snapshots: want EBUSY, got {}", img.name, ErrnoStr(errno));
    }
    while (!img.snapshots.empty()) {
      std::string dir = SnapDir(img, img.snapshots.back().name);
      if (rmdir(dir.c_str()) != 0) Fail("rmdir {}: {}", dir, ErrnoStr(errno));
      img.snapshots.pop_back();
    }
  }
  close(img.fd);
  if (unlink(path.c_str()) != 0) Fail("unlink {}: {}", path, ErrnoStr(errno));
  images_.erase(images_.begin() + static_cast<std::ptrdiff_t>(i));
}

void SingleRun::VerifyImage(Image& img, const std::string& why) {
  struct stat st;
  if (fstat(img.fd, &st) != 0) Fail("fstat {}: {}", img.name, ErrnoStr(errno));
  if (static_cast<uint64_t>(st.st_size) != img.data.size()) {
    Fail("{} ({}): st_size {}, model size {}", img.name, why, st.st_size, img.data.size());
  }
  buf_.resize(img.data.size() + 1);
  size_t got = PReadUpTo(img.fd, buf_.data(), buf_.size(), 0, "verify " + img.name);
  if (got != img.data.size()) {
    Fail("verify {} ({}): read {} bytes, model size {}", img.name, why, got, img.data.size());
  }
  ExpectBytes(buf_.data(), img.data.data(), got, 0, fmt::format("verify {} ({})", img.name, why));
}

void SingleRun::VerifySnapshot(Image& img, const Snapshot& snap) {
  const std::string path = FrozenPath(img, snap);
  if (rng_.OneIn(4)) {
    int wfd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (wfd >= 0 || (errno != EROFS && errno != EACCES && errno != EPERM)) {
      Fail("open of frozen view {} for writing: want EROFS/EACCES, got {}", path,
           wfd >= 0 ? std::string("success") : ErrnoStr(errno));
    }
  }
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail("open frozen view {}: {}", path, ErrnoStr(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) Fail("fstat {}: {}", path, ErrnoStr(errno));
  if (static_cast<uint64_t>(st.st_size) != snap.bytes.size()) {
    Fail("frozen view {}: st_size {}, model size {}", path, st.st_size, snap.bytes.size());
  }
  buf_.resize(snap.bytes.size() + 1);
  size_t got = PReadUpTo(fd, buf_.data(), buf_.size(), 0, "verify " + path);
  close(fd);
  if (got != snap.bytes.size()) {
    Fail("frozen view {}: read {} bytes, model size {}", path, got, snap.bytes.size());
  }
  ExpectBytes(buf_.data(), snap.bytes.data(), got, 0, "frozen view " + img.name + "@" + snap.name);
}

void SingleRun::VerifyAll(const std::string& why) {
  log_.Add("verify all: " + why);
  for (auto& img : images_) {
    VerifyImage(*img, why);
    for (const Snapshot& s : img->snapshots) VerifySnapshot(*img, s);
  }
}

void SingleRun::Step() {
  Image& img = PickImage();
  // Weights out of 100; --skip NAME turns an op into a read (for triage).
  struct Kind {
    uint64_t weight;
    const char* name;
    std::function<void()> run;
  };
  const Kind kinds[] = {
      {24, "pwrite", [&] { OpWrite(img); }},
      {14, "pread", [&] { OpRead(img); }},
      {4, "mmap_read", [&] { OpMmapRead(img); }},
      {5, "mmap_write", [&] { OpMmapWrite(img); }},
      {4, "truncate", [&] { OpTruncate(img); }},
      {2, "falloc_grow", [&] { OpFallocateGrow(img); }},
      {4, "punch_hole", [&] { OpPunchHole(img); }},
      {4, "zero_range", [&] { OpZeroRange(img); }},
      {6, "copy_range", [&] { OpCopyRange(img); }},
      {3, "clone", [&] { OpClone(); }},
      {5, "snapshot", [&] { OpSnapshot(img); }},
      {3, "snap_delete", [&] { OpDeleteSnapshot(img); }},
      {4, "reopen", [&] { OpReopen(img); }},
      {4, "seek", [&] { OpSeek(img); }},
      {1, "drop_caches", [&] {
         Note("drop_caches", "drop_caches");
         DropCaches();
       }},
      {1, "image_delete", [&] {
         if (images_.size() > 2) OpDeleteImage();
       }},
      {2, "image_create", [&] {
         if (images_.size() < kMaxImages) {
           Image& fresh = CreateImage(fmt::format("img{}.img", next_image_++));
           Note("image_create", "create " + fresh.name);
         }
       }},
      {4, "verify_snapshot", [&] {
         if (img.snapshots.empty()) return OpRead(img);
         Note("verify_snapshot", "verify a snapshot of " + img.name);
         VerifySnapshot(img, img.snapshots[rng_.Below(img.snapshots.size())]);
       }},
      {6, "verify_image", [&] {
         Note("verify_image", "verify " + img.name);
         VerifyImage(img, "random verify");
       }},
  };
  uint64_t r = rng_.Below(100);
  for (const Kind& kind : kinds) {
    if (r < kind.weight) {
      if (config_.skip.count(kind.name) != 0) return OpRead(img);
      return kind.run();
    }
    r -= kind.weight;
  }
  Fail("op weights do not add up to 100");
}

void SingleRun::Run() {
  for (int i = 0; i < 3; ++i) {
    Image& img = CreateImage(fmt::format("img{}.img", next_image_++));
    Note("image_create", "create " + img.name);
  }
  for (uint64_t op = 1; op <= config_.ops; ++op) {
    Step();
    if (op % 1000 == 0) VerifyAll(fmt::format("after op {}", op));
  }
  VerifyAll("end of run");
  // Close everything, drop the page cache, reopen: the bytes come from the daemon.
  for (auto& img : images_) {
    if (close(img->fd) != 0) Fail("close {}: {}", img->name, ErrnoStr(errno));
  }
  DropCaches();
  for (auto& img : images_) OpenFd(*img);
  VerifyAll("after close, drop_caches, reopen");
  for (auto& img : images_) close(img->fd);
}

}  // namespace

void RunSingle(const Config& config, OpLog& log, Counters& counters) {
  SingleRun run(config, log, counters);
  run.Run();
}

}  // namespace snapdisk::exerciser
