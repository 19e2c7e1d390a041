// Faulty I/O for engine tests (see fault_injection.h).
#include "fault_injection.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <unordered_map>
#include <vector>

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include "data_file.h"
#include "index_db.h"
#include "store_impl.h"

namespace snapdisk::engine {

namespace {
constexpr uint64_t kNoLoss = std::numeric_limits<uint64_t>::max();

bool IsWal(const std::string& name) {
  return name.size() > 4 && name.compare(name.size() - 4, 4, ".log") == 0;
}

rocksdb::IOStatus ToIoStatus(int err, const std::string& what) {
  std::string msg = "injected fault: " + what + ": " + std::strerror(err);
  if (err == ENOSPC) return rocksdb::IOStatus::NoSpace(msg);
  return rocksdb::IOStatus::IOError(msg);
}

class FaultDataIo;
class FaultFs;
}  // namespace

struct FaultHooks::Impl {
  struct Rule {
    int err = 0;
    uint64_t skip = 0, times = 0;
    uint64_t calls = 0, injected = 0;
  };
  // One data-file write or punch since the file's last good sync: enough to
  // put the bytes back.
  struct Undo {
    std::string path;
    off_t pos = 0;
    std::string old;  // the bytes before (zeros past the old end of file)
    off_t old_size = 0;
    bool lost = false;  // a sync covering it failed: a later good sync does not save it
  };
  // A file RocksDB wrote through us.
  struct IndexFile {
    uint64_t size = 0, synced = 0;
    uint64_t lost_from = kNoLoss;  // a failed sync may have dropped bytes from here on
  };

  mutable std::mutex mu;
  std::array<Rule, kFaultOpCount> rules;
  bool crashed = false;
  std::optional<uint32_t> short_max;
  std::unordered_map<int, std::string> fd_paths;
  std::vector<Undo> undo;
  std::map<std::string, IndexFile> index_files;

  std::unique_ptr<FaultDataIo> data_io;
  std::shared_ptr<FaultFs> fs;

  Impl();

  // The errno to fail a call of `op` with, or 0; counts the call.
  int Hit(FaultOp op) {
    std::lock_guard l(mu);
    return HitLocked(op);
  }
  int HitLocked(FaultOp op) {
    Rule& r = rules[static_cast<size_t>(op)];
    ++r.calls;
    if (crashed) return EIO;
    if (r.err == 0 || r.times == 0) return 0;
    if (r.skip > 0) {
      --r.skip;
      return 0;
    }
    if (r.times != kForever) --r.times;
    ++r.injected;
    return r.err;
  }

  // ---- data file ------------------------------------------------------------
  void SaveUndo(int fd, off_t pos, size_t len) {
    std::lock_guard l(mu);
    auto it = fd_paths.find(fd);
    if (it == fd_paths.end()) return;
    Undo u;
    u.path = it->second;
    u.pos = pos;
    struct stat st {};
    u.old_size = ::fstat(fd, &st) == 0 ? st.st_size : 0;
    u.old.assign(len, '\0');
    size_t done = 0;
    while (done < len) {
      ssize_t n = ::pread(fd, u.old.data() + done, len - done, pos + static_cast<off_t>(done));
      if (n <= 0) break;  // past the end: zeros
      done += static_cast<size_t>(n);
    }
    undo.push_back(std::move(u));
  }
  void DataSynced(int fd, bool ok) {
    std::lock_guard l(mu);
    auto it = fd_paths.find(fd);
    if (it == fd_paths.end()) return;
    const std::string& path = it->second;
    if (ok) {
      std::erase_if(undo, [&](const Undo& u) { return u.path == path && !u.lost; });
    } else {
      for (Undo& u : undo)
        if (u.path == path) u.lost = true;
    }
  }

  // ---- index files ------------------------------------------------------------
  rocksdb::IOStatus BeforeIndexWrite(const std::string& name) {
    std::lock_guard l(mu);
    int err = HitLocked(FaultOp::kIndexWrite);
    if (err == 0 && IsWal(name)) err = HitLocked(FaultOp::kWalWrite);
    return err ? ToIoStatus(err, "write " + name) : rocksdb::IOStatus::OK();
  }
  rocksdb::IOStatus BeforeIndexSync(const std::string& name) {
    std::lock_guard l(mu);
    int err = HitLocked(FaultOp::kIndexSync);
    if (err == 0 && IsWal(name)) err = HitLocked(FaultOp::kWalSync);
    if (err) {
      IndexFile& f = index_files[name];
      f.lost_from = std::min(f.lost_from, f.synced);
      return ToIoStatus(err, "sync " + name);
    }
    return rocksdb::IOStatus::OK();
  }
  rocksdb::IOStatus Mutation(const std::string& what) {
    std::lock_guard l(mu);
    return crashed ? ToIoStatus(EIO, what) : rocksdb::IOStatus::OK();
  }
  void IndexAppended(const std::string& name, uint64_t end) {
    std::lock_guard l(mu);
    IndexFile& f = index_files[name];
    f.size = std::max(f.size, end);
  }
  uint64_t IndexSize(const std::string& name) {
    std::lock_guard l(mu);
    return index_files[name].size;
  }
  void IndexTruncated(const std::string& name, uint64_t size) {
    std::lock_guard l(mu);
    IndexFile& f = index_files[name];
    f.size = size;
    f.synced = std::min(f.synced, size);
  }
  void IndexSynced(const std::string& name) {
    std::lock_guard l(mu);
    IndexFile& f = index_files[name];
    f.synced = f.size;
  }
  // `existing_size`: bytes already in a reopened file, taken as durable
  // unless a failed sync said otherwise; 0 for a new file.
  void IndexOpened(const std::string& name, uint64_t existing_size) {
    std::lock_guard l(mu);
    IndexFile& f = index_files[name];
    if (existing_size == 0) f = IndexFile();
    f.size = existing_size;
    f.synced = std::min(existing_size, f.lost_from);
  }
  void IndexRenamed(const std::string& from, const std::string& to) {
    std::lock_guard l(mu);
    auto it = index_files.find(from);
    if (it == index_files.end()) return;
    index_files[to] = it->second;
    index_files.erase(it);
  }
  void IndexDeleted(const std::string& name) {
    std::lock_guard l(mu);
    index_files.erase(name);
  }
};

namespace {

class FaultDataIo final : public DataFileIo {
 public:
  explicit FaultDataIo(FaultHooks::Impl* hooks) : hooks_(hooks) {}

  int Open(const std::string& path, int flags, mode_t mode) override {
    int fd = DataFileIo::Posix()->Open(path, flags, mode);
    if (fd >= 0) {
      std::lock_guard l(hooks_->mu);
      hooks_->fd_paths[fd] = path;
    }
    return fd;
  }
  int Close(int fd) override {
    {
      std::lock_guard l(hooks_->mu);
      hooks_->fd_paths.erase(fd);
    }
    return DataFileIo::Posix()->Close(fd);
  }
  ssize_t Pread(int fd, void* buf, size_t len, off_t pos) override {
    return DataFileIo::Posix()->Pread(fd, buf, len, pos);
  }
  ssize_t Pwrite(int fd, const void* buf, size_t len, off_t pos) override {
    if (int err = hooks_->Hit(FaultOp::kDataWrite)) {
      errno = err;
      return -1;
    }
    {
      std::lock_guard l(hooks_->mu);
      if (hooks_->short_max) len = std::min<size_t>(len, *hooks_->short_max);
    }
    if (len == 0) return 0;
    hooks_->SaveUndo(fd, pos, len);
    return DataFileIo::Posix()->Pwrite(fd, buf, len, pos);
  }
  int PunchHole(int fd, off_t pos, off_t len) override {
    if (int err = hooks_->Hit(FaultOp::kDataPunch)) {
      errno = err;
      return -1;
    }
    hooks_->SaveUndo(fd, pos, static_cast<size_t>(len));
    return DataFileIo::Posix()->PunchHole(fd, pos, len);
  }
  int Fdatasync(int fd) override { return Sync(fd, &DataFileIo::Fdatasync); }
  // A fault here is a failed data sync too. Success counts as synced: the
  // index log sync that the engine always does next flushes the device.
  int Writeback(int fd) override { return Sync(fd, &DataFileIo::Writeback); }

 private:
  // Either way of making the data durable: an injected kDataSync fault, or
  // the real call; the hooks learn whether what was written is now safe.
  int Sync(int fd, int (DataFileIo::*real)(int)) {
    if (int err = hooks_->Hit(FaultOp::kDataSync)) {
      hooks_->DataSynced(fd, false);
      errno = err;
      return -1;
    }
    int r = (DataFileIo::Posix()->*real)(fd);
    int saved = errno;
    hooks_->DataSynced(fd, r == 0);
    errno = saved;
    return r;
  }
  FaultHooks::Impl* hooks_;
};

class FaultWritableFile final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  FaultWritableFile(std::unique_ptr<rocksdb::FSWritableFile>&& f, std::string name,
                    FaultHooks::Impl* hooks)
      : FSWritableFileOwnerWrapper(std::move(f)), name_(std::move(name)), hooks_(hooks) {}

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                           rocksdb::IODebugContext* d) override {
    rocksdb::IOStatus s = hooks_->BeforeIndexWrite(name_);
    if (s.ok()) s = target()->Append(data, o, d);
    if (s.ok()) hooks_->IndexAppended(name_, hooks_->IndexSize(name_) + data.size());
    return s;
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                           const rocksdb::DataVerificationInfo& v,
                           rocksdb::IODebugContext* d) override {
    rocksdb::IOStatus s = hooks_->BeforeIndexWrite(name_);
    if (s.ok()) s = target()->Append(data, o, v, d);
    if (s.ok()) hooks_->IndexAppended(name_, hooks_->IndexSize(name_) + data.size());
    return s;
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                     const rocksdb::IOOptions& o,
                                     rocksdb::IODebugContext* d) override {
    rocksdb::IOStatus s = hooks_->BeforeIndexWrite(name_);
    if (s.ok()) s = target()->PositionedAppend(data, offset, o, d);
    if (s.ok()) hooks_->IndexAppended(name_, offset + data.size());
    return s;
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                     const rocksdb::IOOptions& o,
                                     const rocksdb::DataVerificationInfo& v,
                                     rocksdb::IODebugContext* d) override {
    rocksdb::IOStatus s = hooks_->BeforeIndexWrite(name_);
    if (s.ok()) s = target()->PositionedAppend(data, offset, o, v, d);
    if (s.ok()) hooks_->IndexAppended(name_, offset + data.size());
    return s;
  }
  rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* d) override {
    rocksdb::IOStatus s = hooks_->Mutation("truncate " + name_);
    if (s.ok()) s = target()->Truncate(size, o, d);
    if (s.ok()) hooks_->IndexTruncated(name_, size);
    return s;
  }
  rocksdb::IOStatus Sync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override {
    rocksdb::IOStatus s = hooks_->BeforeIndexSync(name_);
    if (s.ok()) s = target()->Sync(o, d);
    if (s.ok()) hooks_->IndexSynced(name_);
    return s;
  }
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override {
    rocksdb::IOStatus s = hooks_->BeforeIndexSync(name_);
    if (s.ok()) s = target()->Fsync(o, d);
    if (s.ok()) hooks_->IndexSynced(name_);
    return s;
  }
  // Write-back hint, not a durability point.
  rocksdb::IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const rocksdb::IOOptions& o,
                              rocksdb::IODebugContext* d) override {
    rocksdb::IOStatus s = hooks_->Mutation("range sync " + name_);
    return s.ok() ? target()->RangeSync(offset, nbytes, o, d) : s;
  }

 private:
  const std::string name_;
  FaultHooks::Impl* hooks_;
};

class FaultFs final : public rocksdb::FileSystemWrapper {
 public:
  explicit FaultFs(FaultHooks::Impl* hooks)
      : FileSystemWrapper(rocksdb::FileSystem::Default()), hooks_(hooks) {}
  const char* Name() const override { return "SnapdiskFaultFs"; }

  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& fo,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    rocksdb::IODebugContext* d) override {
    if (int err = hooks_->Hit(FaultOp::kIndexCreate)) return ToIoStatus(err, "create " + f);
    rocksdb::IOStatus s = target()->NewWritableFile(f, fo, r, d);
    if (s.ok()) Wrap(f, 0, r);
    return s;
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& fo,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r,
                                       rocksdb::IODebugContext* d) override {
    if (int err = hooks_->Hit(FaultOp::kIndexCreate)) return ToIoStatus(err, "reopen " + f);
    rocksdb::IOStatus s = target()->ReopenWritableFile(f, fo, r, d);
    std::error_code ec;
    uint64_t size = std::filesystem::file_size(f, ec);
    if (s.ok()) Wrap(f, ec ? 0 : size, r);
    return s;
  }
  rocksdb::IOStatus ReuseWritableFile(const std::string& f, const std::string& old,
                                      const rocksdb::FileOptions& fo,
                                      std::unique_ptr<rocksdb::FSWritableFile>* r,
                                      rocksdb::IODebugContext* d) override {
    if (int err = hooks_->Hit(FaultOp::kIndexCreate)) return ToIoStatus(err, "reuse " + old);
    rocksdb::IOStatus s = target()->ReuseWritableFile(f, old, fo, r, d);
    if (s.ok()) {
      hooks_->IndexDeleted(old);
      Wrap(f, 0, r);
    }
    return s;
  }
  rocksdb::IOStatus RenameFile(const std::string& from, const std::string& to,
                               const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override {
    rocksdb::IOStatus s = hooks_->Mutation("rename " + from);
    if (s.ok()) s = target()->RenameFile(from, to, o, d);
    if (s.ok()) hooks_->IndexRenamed(from, to);
    return s;
  }
  rocksdb::IOStatus DeleteFile(const std::string& f, const rocksdb::IOOptions& o,
                               rocksdb::IODebugContext* d) override {
    rocksdb::IOStatus s = hooks_->Mutation("delete " + f);
    if (s.ok()) s = target()->DeleteFile(f, o, d);
    if (s.ok()) hooks_->IndexDeleted(f);
    return s;
  }
  rocksdb::IOStatus Truncate(const std::string& f, size_t size, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* d) override {
    rocksdb::IOStatus s = hooks_->Mutation("truncate " + f);
    if (s.ok()) s = target()->Truncate(f, size, o, d);
    if (s.ok()) hooks_->IndexTruncated(f, size);
    return s;
  }

 private:
  void Wrap(const std::string& f, uint64_t size, std::unique_ptr<rocksdb::FSWritableFile>* r) {
    hooks_->IndexOpened(f, size);
    *r = std::make_unique<FaultWritableFile>(std::move(*r), f, hooks_);
  }
  FaultHooks::Impl* hooks_;
};

}  // namespace

FaultHooks::Impl::Impl()
    : data_io(std::make_unique<FaultDataIo>(this)), fs(std::make_shared<FaultFs>(this)) {}

FaultHooks::FaultHooks() : impl_(std::make_unique<Impl>()) {}
FaultHooks::~FaultHooks() = default;

void FaultHooks::Fail(FaultOp op, int err, uint64_t skip, uint64_t times) {
  std::lock_guard l(impl_->mu);
  Impl::Rule& r = impl_->rules[static_cast<size_t>(op)];
  r.err = err;
  r.skip = skip;
  r.times = times;
}

void FaultHooks::Clear(FaultOp op) { Fail(op, 0, 0, 0); }

void FaultHooks::ClearAll() {
  std::lock_guard l(impl_->mu);
  for (Impl::Rule& r : impl_->rules) r.err = 0, r.skip = 0, r.times = 0;
  impl_->short_max.reset();
}

uint64_t FaultHooks::Calls(FaultOp op) const {
  std::lock_guard l(impl_->mu);
  return impl_->rules[static_cast<size_t>(op)].calls;
}

uint64_t FaultHooks::Injected(FaultOp op) const {
  std::lock_guard l(impl_->mu);
  return impl_->rules[static_cast<size_t>(op)].injected;
}

void FaultHooks::ShortWrites(uint32_t max_bytes) {
  std::lock_guard l(impl_->mu);
  impl_->short_max = max_bytes;
}

void FaultHooks::NoShortWrites() {
  std::lock_guard l(impl_->mu);
  impl_->short_max.reset();
}

void FaultHooks::Crash() {
  std::lock_guard l(impl_->mu);
  impl_->crashed = true;
}

void FaultHooks::DropUnsyncedData(DropMode mode, uint64_t seed) {
  std::lock_guard l(impl_->mu);
  std::mt19937_64 rng(seed);
  // Data file: undo the newest first, so overlapping writes unwind in order.
  std::map<std::string, off_t> size_at_sync;
  for (const Impl::Undo& u : impl_->undo) size_at_sync.try_emplace(u.path, u.old_size);
  for (auto it = impl_->undo.rbegin(); it != impl_->undo.rend(); ++it) {
    if (mode == DropMode::kRandom && !it->lost && (rng() & 1)) continue;  // this write made it
    int fd = ::open(it->path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) continue;
    (void)!::pwrite(fd, it->old.data(), it->old.size(), it->pos);
    ::close(fd);
  }
  if (mode == DropMode::kAll)
    for (const auto& [path, size] : size_at_sync) (void)!::truncate(path.c_str(), size);
  impl_->undo.clear();
  // Index files: cut each back to what was synced (kRandom: plus a random
  // part of the unsynced tail), and never past the point a failed sync lost.
  for (const auto& [name, f] : impl_->index_files) {
    uint64_t keep = std::min(f.synced, f.lost_from);
    if (mode == DropMode::kRandom && f.lost_from == kNoLoss && f.size > f.synced)
      keep = f.synced + rng() % (f.size - f.synced + 1);
    std::error_code ec;
    uint64_t now = std::filesystem::file_size(name, ec);
    if (!ec && now > keep) std::filesystem::resize_file(name, keep, ec);
  }
  impl_->index_files.clear();
}

void FaultHooks::Restart() {
  std::lock_guard l(impl_->mu);
  impl_->crashed = false;
  for (Impl::Rule& r : impl_->rules) r = Impl::Rule();
  impl_->short_max.reset();
  impl_->undo.clear();
  impl_->index_files.clear();
}

struct IoSeamAccess {
  static void Install(StoreImpl* store, FaultHooks::Impl* hooks) {
    store->index_.UseFileSystem(hooks->fs);
    store->data_.UseIo(hooks->data_io.get());
    store->log_.UseIo(hooks->data_io.get());
  }
};

Status OpenStoreWithIo(const Options& options, const std::string& path, FaultHooks* hooks,
                       std::unique_ptr<Store>* store) {
  try {
    auto impl = std::make_unique<StoreImpl>(options, path);
    IoSeamAccess::Install(impl.get(), hooks->impl_.get());
    SNAPDISK_RETURN_IF_ERROR(impl->OpenStore());
    *store = std::move(impl);
    return Status::OK();
  } catch (const std::exception& e) {
    return Status::IOError(std::string("opening store ") + path + ": " + e.what());
  }
}

}  // namespace snapdisk::engine
