// Opening and closing a store: the lock, the directory layout, loading the
// metadata into memory, rebuilding the slot allocator and repairing the
// checksums of versions that were being overwritten when the process died.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "checksum.h"
#include "keys.h"
#include "store_impl.h"

namespace snapdisk {

Status Store::Open(const Options& options, const std::string& path, std::unique_ptr<Store>* store) {
  if (options.block_size < 16 * 1024 || options.block_size > 256 * 1024 ||
      (options.block_size & (options.block_size - 1)) != 0)
    return Status::InvalidArgument(
        fmt::format("block size {} must be a power of two from 16 KiB to 256 KiB", options.block_size));
  try {
    auto impl = std::make_unique<engine::StoreImpl>(options, path);
    SNAPDISK_RETURN_IF_ERROR(impl->OpenStore());
    *store = std::move(impl);
    return Status::OK();
  } catch (const std::bad_alloc&) {
    return Status::IOError("out of memory opening store " + path);
  } catch (const std::exception& e) {
    return Status::IOError(std::string("opening store ") + path + ": " + e.what());
  }
}

namespace engine {

namespace fs = std::filesystem;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Timestamp NowTimestamp() {
  int64_t ns = NowNs();
  return Timestamp{ns / 1000000000, static_cast<uint32_t>(ns % 1000000000)};
}

const EpochRt& ImageView::EpochFor(uint64_t gen) const {
  size_t i = epochs.size();
  while (i > 1 && epochs[i - 1].e.start_gen > gen) --i;
  return epochs[i - 1];
}

StoreImpl::StoreImpl(const Options& options, std::string path)
    : options_(options), path_(std::move(path)) {}

StoreImpl::~StoreImpl() {
  closing_ = true;
  {
    std::lock_guard l(flusher_mu_);
    flusher_stop_ = true;
  }
  flusher_cv_.notify_all();
  if (flusher_thread_.joinable()) flusher_thread_.join();
  {
    std::lock_guard l(gc_mu_);
    gc_stop_ = true;
  }
  gc_cv_.notify_all();
  if (gc_thread_.joinable()) gc_thread_.join();
  if (index_.db && IndexHealthy().ok()) {
    // Flushes pending records and empties the dirty log.
    (void)SyncAll();
    // A clean close leaves no dirty markers behind (stores of format 1 kept
    // them in the index).
    rocksdb::WriteBatch b;
    std::unique_ptr<rocksdb::Iterator> it(index_.db->NewIterator(rocksdb::ReadOptions(), index_.dirty));
    for (it->SeekToFirst(); it->Valid(); it->Next()) b.Delete(index_.dirty, it->key());
    rocksdb::WriteOptions wo;
    wo.sync = true;
    if (!failed_sync_ && !index_error_) (void)index_.db->Write(wo, &b);
  }
  (void)index_.Close();
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

Status StoreImpl::OpenStore() {
  std::error_code ec;
  bool exists = fs::exists(path_, ec);
  if (!exists) {
    if (!options_.create_if_missing) return Status::NotFound("store " + path_ + " does not exist");
    if (!fs::create_directories(path_, ec) && ec)
      return Status::IOError(fmt::format("create store directory {}: {}", path_, ec.message()));
    ::chmod(path_.c_str(), 0700);  // the store holds whole disks: owner only
  } else if (!fs::is_directory(path_, ec)) {
    return Status::InvalidArgument("store " + path_ + " is not a directory");
  }
  std::string db_path = path_ + "/db";
  bool has_db = fs::exists(db_path, ec);
  if (!has_db) {
    // Refuse to turn an unrelated, non-empty directory into a store.
    for (const auto& entry : fs::directory_iterator(path_, ec)) {
      std::string n = entry.path().filename().string();
      if (n != "LOCK" && n != "data")
        return Status::InvalidArgument("directory " + path_ +
                                       " is not empty and is not a snapdisk store (no db/)");
    }
    if (!options_.create_if_missing) return Status::NotFound("no snapdisk store at " + path_);
  }

  // One process per store: an advisory lock that dies with the process.
  std::string lock_path = path_ + "/LOCK";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) return Status::IOError(fmt::format("open {}: {}", lock_path, std::strerror(errno)));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    ssize_t n = ::pread(lock_fd_, buf, sizeof(buf) - 1, 0);
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "another process";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    // What to do about it depends on who holds it (a mount, a daemon still
    // closing, an offline check): the callers add that (fs/mount_table.h).
    return Status::Busy(fmt::format("store {} is in use (locked by pid {})", path_, holder));
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_fd_, 0) == 0) (void)::pwrite(lock_fd_, pid.data(), pid.size(), 0);

  fs::create_directories(path_ + "/data", ec);
  SNAPDISK_RETURN_IF_ERROR(index_.Open(db_path, options_, !has_db));

  std::string value;
  rocksdb::Status s = index_.db->Get(rocksdb::ReadOptions(), index_.meta, std::string(keys::kFormatKey), &value);
  if (s.IsNotFound()) {
    if (has_db) return Status::Corruption("index at " + db_path + " has no format record: not a snapdisk store");
    // A new store: format record, counters and the root directory, atomically.
    FormatRecord f;
    f.block_size = options_.block_size;
    NodeRecord root;
    root.id = kRootNode;
    root.parent = kRootNode;
    root.kind = NodeKind::kDirectory;
    root.mode = 0755;
    root.atime = root.mtime = root.ctime = NowTimestamp();
    rocksdb::WriteBatch b;
    b.Put(index_.meta, std::string(keys::kFormatKey), f.Encode());
    b.Put(index_.meta, std::string(keys::kCountersKey), counters_.Encode());
    b.Put(index_.nodes, keys::Id(root.id), root.Encode());
    SNAPDISK_RETURN_IF_ERROR(Commit(&b, true, "create store"));
    value = f.Encode();
  } else if (!s.ok()) {
    return FromRocks(s, "read format record");
  }
  FormatRecord format;
  SNAPDISK_RETURN_IF_ERROR(FormatRecord::Decode(value, &format));
  if (format.version < kFormatVersion) {
    // An older store has no record this build would write differently; from
    // now on it may get some an older build cannot read, so say so.
    format.version = kFormatVersion;
    rocksdb::WriteBatch b;
    b.Put(index_.meta, std::string(keys::kFormatKey), format.Encode());
    SNAPDISK_RETURN_IF_ERROR(Commit(&b, true, "upgrade the store's format record"));
  }
  block_size_ = format.block_size;
  pieces_ = block_size_ / kSubBlockSize;
  SNAPDISK_RETURN_IF_ERROR(data_.Open(path_ + "/data/blocks.dat", block_size_, options_.read_poll_us,
                                       options_.write_behind_bytes));
  SNAPDISK_RETURN_IF_ERROR(log_.Open(path_ + "/data/pieces.dat", options_.read_poll_us));
  std::vector<std::string> logged_dirty;
  const std::string dirty_log_path = path_ + "/data/dirty.log";
  SNAPDISK_RETURN_IF_ERROR(dirty_log_.Open(dirty_log_path, &logged_dirty));
  {
    struct stat data_st {}, log_st {};
    dirty_log_flush_shared_ = data_.overwrites_in_place() && ::stat(data_.path().c_str(), &data_st) == 0 &&
                              ::stat(dirty_log_path.c_str(), &log_st) == 0 && data_st.st_dev == log_st.st_dev;
  }
  std::vector<SealLog::Record> sealed;
  SNAPDISK_RETURN_IF_ERROR(seal_log_.Open(path_ + "/data/sealed.log", &sealed));
  SNAPDISK_RETURN_IF_ERROR(ReplaySealLog(sealed));  // before anything reads the index
  SNAPDISK_RETURN_IF_ERROR(LoadMetadata());
  SNAPDISK_RETURN_IF_ERROR(RecoverDirty(logged_dirty));

  // Reclaim whatever a crash left unreferenced, then keep collecting.
  {
    std::lock_guard l(meta_mu_);
    for (const auto& [id, st] : states_) gc_queue_.push_back(id);
  }
  if (options_.background_gc) gc_thread_ = std::thread([this] { GcThread(); });
  if (options_.background_flush) flusher_thread_ = std::thread([this] { FlusherThread(); });
  return Status::OK();
}

Status StoreImpl::ReplaySealLog(const std::vector<SealLog::Record>& records) {
  if (records.empty()) return seal_log_.Reset();
  // Oldest batch first, so a key sealed twice ends with its newest record.
  // Records of an image that is gone are dropped (its versions went with it).
  rocksdb::WriteBatch b;
  std::string ignored;
  for (const SealLog::Record& r : records) {
    rocksdb::Status s = index_.db->Get(rocksdb::ReadOptions(), index_.nodes, keys::Id(r.image), &ignored);
    if (s.IsNotFound()) continue;
    SNAPDISK_RETURN_IF_ERROR(FromRocks(s, "read image record"));
    VersionRecord check;
    SNAPDISK_RETURN_IF_ERROR(VersionRecord::Decode(r.value, pieces_, &check));
    b.Put(index_.versions, keys::Version(r.image, r.block, r.gen), r.value);
  }
  SNAPDISK_RETURN_IF_ERROR(Commit(&b, true, "index the records of snapshots taken just before a crash"));
  return seal_log_.Reset();
}

Status StoreImpl::LoadMetadata() {
  std::string value;
  SNAPDISK_RETURN_IF_ERROR(FromRocks(
      index_.db->Get(rocksdb::ReadOptions(), index_.meta, std::string(keys::kCountersKey), &value),
      "read counters"));
  SNAPDISK_RETURN_IF_ERROR(Counters::Decode(value, &counters_));

  std::lock_guard l(meta_mu_);
  std::unique_ptr<rocksdb::Iterator> it(index_.db->NewIterator(rocksdb::ReadOptions(), index_.nodes));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    NodeRecord r;
    SNAPDISK_RETURN_IF_ERROR(NodeRecord::Decode(it->value().ToStringView(), &r));
    nodes_[r.id] = std::move(r);
  }
  SNAPDISK_RETURN_IF_ERROR(FromRocks(it->status(), "scan nodes"));
  if (!nodes_.count(kRootNode)) return Status::Corruption("store has no root directory");
  for (auto& [id, r] : nodes_) {
    if (id != kRootNode && r.linked) children_[r.parent][r.name] = id;
    if (r.kind == NodeKind::kImage) {
      auto st = std::make_shared<ImageState>(id);
      st->size = r.size;
      states_[id] = st;
    }
  }
  for (auto& [id, r] : nodes_)
    if (r.kind == NodeKind::kImage) PublishLocked(r);

  it.reset(index_.db->NewIterator(rocksdb::ReadOptions(), index_.snapshots));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    SnapshotInfo s;
    SNAPDISK_RETURN_IF_ERROR(DecodeSnapshot(it->value().ToStringView(), &s));
    by_name_[s.image][s.name] = s.id;
    snapshots_[s.id] = std::move(s);
  }
  SNAPDISK_RETURN_IF_ERROR(FromRocks(it->status(), "scan snapshots"));

  // Every slot named by a version is in use; all others are free.
  rocksdb::ReadOptions ro;
  ro.total_order_seek = true;
  it.reset(index_.db->NewIterator(ro, index_.versions));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    VersionRecord v;
    SNAPDISK_RETURN_IF_ERROR(VersionRecord::Decode(it->value().ToStringView(), pieces_, &v));
    if (v.in_block_file()) slots_.MarkUsed(v.slot);
    if (v.logged()) log_.MarkUsed(v);
  }
  SNAPDISK_RETURN_IF_ERROR(FromRocks(it->status(), "scan block versions"));
  slots_.Finish();
  log_.Finish();
  return Status::OK();
}

Status StoreImpl::RecoverDirty(const std::vector<std::string>& logged) {
  // A version in the dirty log may have had pieces overwritten in place
  // after its checksums were last recorded (the process died mid-write or
  // before the next sync). Its bytes are all legitimate (old or new data of
  // writes nobody saw synced), so record the checksums of what is there now.
  // Older stores kept the same markers in the "dirty" column family.
  std::set<std::string> keys(logged.begin(), logged.end());
  rocksdb::WriteBatch b;
  std::unique_ptr<rocksdb::Iterator> it(index_.db->NewIterator(rocksdb::ReadOptions(), index_.dirty));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    keys.insert(it->key().ToString());
    b.Delete(index_.dirty, it->key());
  }
  SNAPDISK_RETURN_IF_ERROR(FromRocks(it->status(), "scan dirty markers"));
  std::vector<char> piece(kSubBlockSize);
  for (const std::string& key : keys) {
    VersionRecord rec;
    bool found = false;
    SNAPDISK_RETURN_IF_ERROR(ReadVersion(key, &rec, &found));
    if (!found || rec.slot == kNoSlot) continue;
    for (uint32_t i = 0; i < pieces_; ++i) {
      if (!(rec.data >> i & 1)) continue;
      SNAPDISK_RETURN_IF_ERROR(ReadStoredPiece(rec, i, piece.data()));
      rec.crc[i] = PieceChecksum(piece.data());
    }
    b.Put(index_.versions, key, rec.Encode());
  }
  if (b.Count() > 0) {
    SNAPDISK_RETURN_IF_ERROR(data_.Sync());
    SNAPDISK_RETURN_IF_ERROR(log_.Sync());
    SNAPDISK_RETURN_IF_ERROR(Commit(&b, true, "repair checksums after a crash"));
  }
  return dirty_log_.Reset();
}

// ---- small shared helpers ----------------------------------------------------

void StoreImpl::PutNode(rocksdb::WriteBatch* b, const NodeRecord& r) {
  b->Put(index_.nodes, keys::Id(r.id), r.Encode());
}
void StoreImpl::PutSnapshot(rocksdb::WriteBatch* b, const SnapshotInfo& s) {
  b->Put(index_.snapshots, keys::Id(s.id), EncodeSnapshot(s));
}
void StoreImpl::PutCounters(rocksdb::WriteBatch* b) {
  b->Put(index_.meta, std::string(keys::kCountersKey), counters_.Encode());
}

Status StoreImpl::IndexHealthy() {
  if (!index_error_) return Status::OK();
  std::lock_guard l(resume_mu_);
  if (!index_error_) return Status::OK();
  rocksdb::Status s = index_.db->Resume();
  if (!s.ok()) {
    // While RocksDB recovers by itself Resume() answers Busy; the caller
    // wants the error that stopped the index (ENOSPC, EIO), not EBUSY.
    if (s.IsBusy() && !index_error_status_.ok()) return index_error_status_;
    return FromRocks(s, "index is stopped after an earlier write error; retry when space returns");
  }
  index_error_ = false;
  index_error_status_ = Status::OK();
  return Status::OK();
}

Status StoreImpl::NoteIndexResult(const rocksdb::Status& s, const char* what) {
  Status st = FromRocks(s, what);
  if (!s.ok()) {
    std::lock_guard l(resume_mu_);
    index_error_ = true;
    index_error_status_ = st;
  }
  return st;
}

Status StoreImpl::Commit(rocksdb::WriteBatch* b, bool sync, const char* what) {
  Status st = WriteIndex(b, sync, what);
  index_changes_.fetch_add(1);  // even after a failure: the log may hold part of it
  return st;
}

Status StoreImpl::WriteIndex(rocksdb::WriteBatch* b, bool sync, const char* what) {
  SNAPDISK_RETURN_IF_ERROR(IndexHealthy());
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  return NoteIndexResult(index_.db->Write(wo, b), what);
}

std::shared_ptr<ImageState> StoreImpl::StateLocked(NodeId id) {
  auto it = states_.find(id);
  return it == states_.end() ? nullptr : it->second;
}

void StoreImpl::PublishLocked(const NodeRecord& r) {
  auto st = StateLocked(r.id);
  if (!st) return;
  auto v = std::make_shared<ImageView>();
  v->live_gen = r.live_gen;
  for (const Epoch& e : r.epochs) {
    EpochRt rt{e, nullptr, e.base_image == r.id};
    if (e.base_image && !rt.base_is_self) rt.base = StateLocked(e.base_image);
    v->epochs.push_back(std::move(rt));
  }
  st->Publish(std::move(v));
}

Status StoreImpl::Writable() const {
  if (failed_sync_)
    return Status::ReadOnly("an earlier sync of the store failed; writes are refused to avoid "
                            "acknowledging data that may not be on disk. Check the store's disk, "
                            "then remount");
  return Status::OK();
}

Status StoreImpl::GetStats(StoreStats* stats) {
  struct statvfs vfs {};
  if (::statvfs(path_.c_str(), &vfs) != 0)
    return Status::IOError(fmt::format("statvfs {}: {}", path_, std::strerror(errno)));
  stats->block_size = block_size_;
  stats->capacity_bytes = static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize;
  stats->available_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  stats->stored_bytes = data_.AllocatedBytes() + log_.AllocatedBytes();
  std::lock_guard l(meta_mu_);
  stats->images = stats->directories = 0;
  for (const auto& [id, r] : nodes_) {
    if (!r.linked) continue;
    if (r.kind == NodeKind::kImage) ++stats->images;
    else if (id != kRootNode) ++stats->directories;
  }
  stats->snapshots = 0;
  for (const auto& [id, s] : snapshots_)
    if (!s.hidden) ++stats->snapshots;
  return Status::OK();
}

Status StoreImpl::SyncAll() {
  std::vector<std::shared_ptr<ImageState>> all;
  {
    std::lock_guard l(meta_mu_);
    for (auto& [id, st] : states_) all.push_back(st);
  }
  if (all.empty()) {
    SNAPDISK_RETURN_IF_ERROR(IndexHealthy());
    return NoteIndexResult(index_.db->SyncWAL(), "sync index");
  }
  std::vector<ImageState*> images;
  for (auto& st : all) images.push_back(st.get());
  return SyncImages(images, /*checkpoint=*/true);
}

}  // namespace engine
}  // namespace snapdisk
