// StoreImpl: the engine behind the public Store interface.
//
// State and locks (lock order: an image's io_mu, then its flush_mu, then its
// block stripes in ascending order, then meta_mu_; view_mu and dirty_mu are
// leaves, except that dirty_mu is held while appending to the dirty log):
// - meta_mu_ guards the namespace and snapshot maps below (nodes_, children_,
//   snapshots_, by_name_) and ImageState::open_* counters. Critical sections
//   are short and never do data I/O; they may do one RocksDB write.
// - ImageState::io_mu: data operations take it shared; operations that change
//   an image's generation or epochs (snapshot, rollback, shrink, clone of a
//   live image) take it exclusive, which briefly waits for in-flight writes.
// - ImageState::stripes[b % kStripes] orders reads and writes of block b of
//   the live image (an in-place overwrite must not race a checksum check).
// - ImageState::view_mu guards the published view (generation, epochs) that
//   readers of other images (clones) use without taking io_mu.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <absl/container/flat_hash_map.h>

#include "data_file.h"
#include "piece_log.h"
#include "dirty_log.h"
#include "index_db.h"
#include "records.h"
#include "seal_log.h"
#include "rw_lock.h"
#include "snapdisk/store.h"

namespace snapdisk::engine {

struct ImageState;

// An epoch with its base image resolved to a live pointer. A base that is
// the image itself (rollback, shrink) is not held, to avoid a reference
// cycle: `base_is_self` says to keep reading the same image.
struct EpochRt {
  Epoch e;
  std::shared_ptr<ImageState> base;
  bool base_is_self = false;
  bool has_base() const { return base_is_self || base != nullptr; }
  // The image to read next; `hold` keeps a foreign base alive meanwhile.
  ImageState* Next(ImageState* cur, std::shared_ptr<ImageState>* hold) const {
    if (base_is_self) return cur;
    *hold = base;
    return hold->get();
  }
};

struct ImageView {
  uint64_t live_gen = 1;
  std::vector<EpochRt> epochs;
  const EpochRt& EpochFor(uint64_t gen) const;
};

struct ImageState {
  static constexpr size_t kStripes = 64;
  explicit ImageState(NodeId id) : id(id) {}
  const NodeId id;

  WriterPreferringMutex io_mu;
  std::array<std::mutex, kStripes> stripes;
  std::mutex& StripeFor(uint64_t block) { return stripes[block % kStripes]; }

  // Live-generation version records, one map per stripe, each guarded by
  // its stripe mutex and valid for one generation. A write updates the
  // record here only; the index gets it when the image is flushed
  // (FlushPending: at fsync, snapshot, clone, rollback, resize, close, when
  // too many are pending, and every few seconds). Until then the entry is
  // the truth for its key and is never evicted. Clean entries are a cache
  // that spares the write path a RocksDB lookup per block.
  struct CachedRecord {
    VersionRecord rec;
    bool indexed = false;    // some version of this key is in the index
    // Set by a write that changed more than checksums (a new version, slot
    // or piece map); cleared once the index has this record. See
    // StoreImpl::index_changes_.
    bool maps_changed = false;
    uint64_t pending = 0;    // nonzero: newer than the index (a flush ticket)
  };
  struct LiveCache {
    uint64_t gen = 0;
    // Open addressing: an insert may move entries, so a reference into the
    // map is good until the next insert (all under the stripe's mutex).
    absl::flat_hash_map<uint64_t, CachedRecord> records;
    std::vector<uint64_t> pending_blocks;  // blocks whose entry is pending (flush walks only these)
    std::vector<uint64_t> inflight_blocks;  // taken from pending_blocks by a flush not yet committed
    // Entries with pending != 0, including those a flush under way has
    // taken out of pending_blocks but not yet marked indexed.
    uint64_t pending_entries = 0;
    // Every version of `gen` in this stripe that exists is in `records`:
    // the generation began in this process (FreshGen) after this cache was
    // last reset, and nothing has been evicted since. A miss then needs no
    // index lookup: right after a snapshot, each block's first write in the
    // new generation asked RocksDB for a version that cannot be there.
    bool complete = false;
  };
  std::array<LiveCache, kStripes> live_cache;
  static constexpr size_t kLiveCachePerStripe = 2048;
  std::atomic<uint64_t> pending_records{0};  // entries with pending != 0 (sum of pending_entries)
  std::atomic<bool> flush_queued{false};     // in StoreImpl::flusher_queue_
  std::mutex flush_mu;  // one flush of this image at a time (after io_mu, before stripes)

  // The live caches of generations that a snapshot ended, not yet indexed.
  // Taking a snapshot moves the live caches here whole (64 map moves, no
  // index write, so writes pause for microseconds whatever is pending); the
  // flusher indexes their pending entries soon after. A batch never changes
  // once sealed: readers use it without a lock, and the entries are the
  // truth for their keys, (image, block, gen), until the index has them.
  // Readers of any generation consult them (ReadBlock); everything else
  // that reads the index flushes them first (FlushPending).
  struct SealedBatch {
    uint64_t gen = 0;
    uint64_t log_seq = 0;  // its entry in the seal log (seal_log.h)
    std::array<absl::flat_hash_map<uint64_t, CachedRecord>, kStripes> records;
  };
  using SealedList = std::vector<std::shared_ptr<const SealedBatch>>;
  SealedList Sealed() const {
    if (sealed_count.load(std::memory_order_acquire) == 0) return {};
    std::lock_guard l(view_mu);
    return sealed;
  }
  void AddSealed(std::shared_ptr<const SealedBatch> b) {
    std::lock_guard l(view_mu);
    sealed.push_back(std::move(b));
    sealed_count.store(sealed.size(), std::memory_order_release);
  }
  void RemoveSealed(const SealedList& done) {
    std::lock_guard l(view_mu);
    for (const auto& d : done) std::erase(sealed, d);
    sealed_count.store(sealed.size(), std::memory_order_release);
  }
  bool HasUnindexed() const { return pending_records.load() != 0 || sealed_count.load() != 0; }

  std::atomic<uint64_t> size{0};
  std::atomic<uint64_t> change_seq{0};  // bumped by every data change (for cp continuation)

  // Published view; replaced (never mutated) under view_mu.
  std::shared_ptr<const ImageView> View() const {
    std::lock_guard l(view_mu);
    return view;
  }
  void Publish(std::shared_ptr<const ImageView> v) {
    std::lock_guard l(view_mu);
    // A later live generation than the one this state was opened with was
    // started here, under an exclusive io_mu: generations only grow, so
    // the index has no version of it but those this process's writes put
    // there, all through the live caches.
    if (view && v->live_gen > view->live_gen) fresh_gen_.store(v->live_gen, std::memory_order_release);
    live_gen_.store(v->live_gen, std::memory_order_release);
    view = std::move(v);
  }
  // Whether `gen` is a generation this process started (see Publish).
  // Exact for a caller holding io_mu, like LiveGen.
  bool FreshGen(uint64_t gen) const { return gen != 0 && fresh_gen_.load(std::memory_order_acquire) == gen; }
  // View()->live_gen without the lock and the shared_ptr copy (every read
  // and write of the live image asks). Exact for a caller holding io_mu,
  // which every generation change holds exclusively.
  uint64_t LiveGen() const { return live_gen_.load(std::memory_order_acquire); }

  // Indexed versions overwritten in place since the last sync: (block,
  // generation) -> write seq (kInProgress while a write is under way); each
  // is in the dirty log. Hashed on two integers, not on the 24-byte index
  // key: every 4 KiB overwrite looks its version up here.
  struct DirtyKey {
    uint64_t block = 0, gen = 0;
    bool operator==(const DirtyKey&) const = default;
    template <typename H>
    friend H AbslHashValue(H h, const DirtyKey& k) { return H::combine(std::move(h), k.block, k.gen); }
  };
  // Sharded by block stripe, all under dirty_mu: the set only shrinks at a
  // sync, so under a long write load it grows large, and one table's rehash
  // would stall the writer that triggers it for milliseconds.
  // Open addressing (no node per entry: one cache miss fewer per write), so
  // an insert may move a shard's entries. Block b's shard is dirty[b %
  // kStripes], its stripe stripes[b % kStripes]: a shard gets inserts only
  // from a writer holding that stripe, which is what lets WriteRange keep
  // pointers to its entries until it stamps them (erasing moves nothing).
  using DirtyShard = absl::flat_hash_map<DirtyKey, uint64_t>;
  std::mutex dirty_mu;
  std::array<DirtyShard, kStripes> dirty;
  // The keys of all shards' entries, for a sync to visit: an open-addressing
  // table never shrinks, so after one long unsynced write run, walking the
  // 64 tables at every fsync scanned ~130,000 slots for a few dozen entries.
  std::vector<DirtyKey> dirty_keys;
  DirtyShard& DirtyFor(uint64_t block) { return dirty[block % kStripes]; }
  // Piece log units of live versions that a whole-block write moved to a
  // slot, with the write seq of that write: the index may still durably
  // name them until a sync that starts after that write has synced the
  // index (then SyncImages frees them). Guarded by dirty_mu.
  std::vector<std::pair<uint64_t, uint64_t>> retired_units;  // (seq, unit)

  // Guarded by StoreImpl::meta_mu_.
  int open_handles = 0;
  int open_writers = 0;
  std::multiset<uint64_t> pinned_gens;  // snapshot handles keep their generation alive
  // cp continuation: this image is an untouched clone of (src, gen).
  NodeId clone_src = 0;
  uint64_t clone_src_seq = 0, clone_own_seq = 0;
  SnapshotId clone_snap = 0;

 private:
  mutable std::mutex view_mu;
  std::shared_ptr<const ImageView> view;
  std::atomic<uint64_t> live_gen_{1};  // view->live_gen
  std::atomic<uint64_t> fresh_gen_{0};  // the newest live generation started by Publish (0: none)
  SealedList sealed;                    // guarded by view_mu
  std::atomic<size_t> sealed_count{0};  // sealed.size(), for a lock-free "none"
};

class StoreImpl final : public Store {
  // Test seam (engine/fault_injection.cpp): installs faulty I/O under index_
  // and data_ before OpenStore.
  friend struct IoSeamAccess;

 public:
  StoreImpl(const Options& options, std::string path);
  ~StoreImpl() override;

  Status OpenStore();

  // Store interface.
  Status Lookup(NodeId parent, std::string_view name, NodeAttr* attr) override;
  Status GetAttr(NodeId node, NodeAttr* attr) override;
  Status SetAttr(NodeId node, const AttrChange& change, NodeAttr* attr) override;
  Status CreateImage(NodeId parent, std::string_view name, uint32_t mode, uint32_t uid,
                     uint32_t gid, NodeAttr* attr) override;
  Status MakeDirectory(NodeId parent, std::string_view name, uint32_t mode, uint32_t uid,
                       uint32_t gid, NodeAttr* attr) override;
  Status RemoveImage(NodeId parent, std::string_view name, bool cascade) override;
  Status RemoveDirectory(NodeId parent, std::string_view name) override;
  Status Rename(NodeId parent, std::string_view name, NodeId new_parent,
                std::string_view new_name, bool no_replace) override;
  Status ReadDirectory(NodeId dir, std::vector<DirEntry>* entries) override;
  Status Parent(NodeId node, NodeId* parent) override;
  std::string PathOf(NodeId node) override;  // takes meta_mu_
  Status GetXattr(NodeId node, std::string_view name, std::string* value) override;
  Status SetXattr(NodeId node, std::string_view name, std::string_view value, bool create_only,
                  bool replace_only) override;
  Status ListXattr(NodeId node, std::vector<std::string>* names) override;
  Status RemoveXattr(NodeId node, std::string_view name) override;

  Status OpenImage(NodeId image, SnapshotId snapshot, bool writable,
                   std::unique_ptr<ImageHandle>* handle) override;
  Status CloneImage(NodeId src, SnapshotId snapshot, NodeId dst) override;
  Status CopyRange(NodeId src, SnapshotId snapshot, uint64_t src_offset, NodeId dst,
                   uint64_t dst_offset, uint64_t len, uint64_t* copied) override;
  Status GetCloneOrigin(NodeId image, CloneOrigin* origin) override;
  Status GetSpaceUsage(NodeId image, SnapshotId snapshot, SpaceUsage* usage) override;

  Status CreateSnapshot(NodeId image, std::string_view name, SnapshotInfo* info) override;
  Status CreateGroupSnapshot(const std::vector<NodeId>& images, std::string_view name,
                             std::vector<SnapshotInfo>* infos) override;
  Status ListSnapshots(NodeId image, std::vector<SnapshotInfo>* snapshots) override;
  Status GetSnapshot(NodeId image, std::string_view name, SnapshotInfo* info) override;
  Status GetSnapshotById(SnapshotId id, SnapshotInfo* info) override;
  Status DeleteSnapshot(NodeId image, std::string_view name) override;
  Status RenameSnapshot(NodeId image, std::string_view name, std::string_view new_name) override;
  Status SetSnapshotDescription(NodeId image, std::string_view name,
                                std::string_view description) override;
  Status SetSnapshotProperty(NodeId image, std::string_view name, std::string_view key,
                             const std::string* value) override;
  Status ClearSnapshotProperties(NodeId image, std::string_view name) override;
  Status SetSnapshotProtected(NodeId image, std::string_view name, bool is_protected) override;
  Status Rollback(NodeId image, std::string_view name, bool force) override;
  Status Diff(NodeId image, SnapshotId from, SnapshotId to, std::vector<Extent>* extents) override;

  Status GetStats(StoreStats* stats) override;
  Status SyncAll() override;
  Status CollectGarbage() override;
  Status Check(CheckReport* report,
               const std::function<void(uint64_t, uint64_t)>& progress) override;

  // ---- used by ImageHandleImpl (block_io.cpp, image_handle.cpp) ----------
  uint32_t block_size() const { return block_size_; }
  uint32_t pieces() const { return pieces_; }
  // Reads [offset, offset+len) of (img, gen) into buf, after starting the
  // pieces of [prefetch_from, prefetch_to) on their way into the page cache.
  Status ReadRange(ImageState& img, uint64_t gen, bool live, uint64_t size, uint64_t offset,
                   size_t len, char* buf, uint64_t prefetch_from = 0, uint64_t prefetch_to = 0);
  // Starts the pieces of [from, to) (clipped to `size`) of (img, gen) on
  // their way into the page cache, without reading them (a hint).
  void Prefetch(ImageState& img, uint64_t gen, bool live, uint64_t size, uint64_t from, uint64_t to);
  Status WriteRange(ImageState& img, uint64_t offset, const char* data, uint64_t len,
                    bool zeros);
  Status SyncImage(ImageState& img);
  // Frees the piece log units that writes with a seq up to `seq` retired
  // from `images` (ImageState::retired_units). Only once the index has
  // durably dropped every record naming them: after a sync of the index
  // that started when write_seq_ was at least `seq` and that followed a
  // FlushPending of those images.
  void FreeRetiredUnits(const std::vector<ImageState*>& images, uint64_t seq);
  // Makes every write to `images` completed before the call durable, with
  // one data sync and one index log sync for all of them. Without
  // `checkpoint`, a sync whose only unsynced index changes are checksums of
  // in-place overwrites makes the dirty log durable instead of syncing the
  // index (one device flush instead of two); a checkpoint always syncs the
  // index and releases the dirty log's entries.
  Status SyncImages(const std::vector<ImageState*>& images, bool checkpoint);
  Status SeekRange(ImageState& img, uint64_t gen, uint64_t size, uint64_t offset,
                   SeekWhence whence, uint64_t* result);
  Status DiffOnce(NodeId image, SnapshotId from, SnapshotId to, std::vector<Extent>* extents,
                  std::shared_ptr<ImageState>* st, uint64_t* to_gen);
  Status SeekRangeOnce(ImageState& img, uint64_t gen, uint64_t size, uint64_t offset,
                       SeekWhence whence, uint64_t* result);
  Status Writable() const;  // ReadOnly after a failed sync
  void ReleaseHandle(const std::shared_ptr<ImageState>& img, bool writer, bool live,
                     uint64_t pinned_gen);

 private:
  // Reads the pieces `want` of `block` at (img, gen) into buf (block_size_
  // bytes, piece i at i*4096). Pieces no version defines read as zeros.
  // *stored gets the pieces whose bytes came from stored data.
  // `live_stripe_held`: gen is the live generation and the caller holds the
  // block's stripe, so the live record cache may answer.
  // `prefetch` (with buf == nullptr): resolve the versions as a read would
  // and start reading their pieces into the page cache (DataFile::Prefetch).
  Status ReadBlock(ImageState& img, uint64_t gen, uint64_t block, uint64_t want, char* buf,
                   uint64_t* stored, bool live_stripe_held = false, bool prefetch = false);
  // Prefetches the pieces of [offset, end) of (img, gen); caller holds
  // io_mu shared if `live`.
  void PrefetchRange(ImageState& img, uint64_t gen, bool live, uint64_t offset, uint64_t end);
  void PrefetchPieces(const VersionRecord& rec, uint64_t mask);
  // Writes [off, off+len) of `block` of the live image; caller holds io_mu
  // shared and the block's stripe. The new version record stays pending in
  // the image's live cache; in-place overwrites of indexed versions are
  // put in the dirty set (and log) as in progress, and their entries' write
  // seq added to `marked` for the caller to stamp.
  // A whole-block write into a piece log version moves it to a slot and
  // adds its units to `retired`, for the caller to stamp and queue
  // (ImageState::retired_units).
  Status WriteBlock(ImageState& img, uint64_t live_gen, uint64_t block, uint32_t off,
                    const char* data, uint32_t len, std::vector<uint64_t*>* marked,
                    std::vector<uint64_t>* retired);
  // Who runs a flush: the flusher thread gives its vCPU up between index
  // writes (block_io.cpp, WriteInKeyOrder); a caller that waits for the
  // flush does not.
  enum class FlushBy { kCaller, kFlusher };
  // Writes the image's pending live records to the index (not synced).
  // Caller may hold io_mu (either way) but no stripe.
  Status FlushPending(ImageState& img, FlushBy by = FlushBy::kCaller);
  Status FlushAllPending(FlushBy by = FlushBy::kCaller);
  // Ends the live generation's caching for a snapshot: moves the live
  // caches into a sealed batch of generation `gen` (the caller then asks the
  // flusher to index it, QueueFlush). Caller holds io_mu exclusively (no
  // write is in flight).
  // *batch gets the batch (nullptr if nothing was pending). On failure (the
  // seal log could not be written) nothing changed.
  Status SealLiveCache(ImageState& img, uint64_t gen, std::shared_ptr<const ImageState::SealedBatch>* batch);
  // At open: indexes the sealed records a crash left only in the seal log.
  Status ReplaySealLog(const std::vector<SealLog::Record>& records);
  // Undoes a seal whose snapshot failed (caller still holds io_mu
  // exclusively): the batch's records go back to the live caches, unless
  // the flusher has indexed them meanwhile.
  void UnsealLiveCache(ImageState& img, const std::shared_ptr<const ImageState::SealedBatch>& batch);
  void QueueFlush(ImageState& img);
  // Writes the nonzero pieces first..last into rec's slot or piece log
  // units (`pieces` points at piece `first`, the others follow) and punches
  // the other touched pieces that held data, updating rec.crc (and
  // rec.units).
  Status WritePieces(VersionRecord& rec, uint32_t first, uint32_t last, uint64_t nonzero,
                     const char* pieces);
  Status ReadVersion(const std::string& key, VersionRecord* rec, bool* found);
  // Calls fn(image, min_gen, max_gen, limit_blocks) for each level of the
  // read chain of (img, gen): the image's own epoch window, then each base it
  // reads through to, with the number of blocks that level can show.
  template <typename Fn>
  void ForEachChainLevel(ImageState& img, uint64_t gen, uint64_t nblocks, Fn&& fn) {
    ImageState* cur = &img;
    std::shared_ptr<ImageState> hold;  // keeps a base image's state alive
    uint64_t g = gen, limit_blocks = nblocks;
    for (int depth = 0; cur && depth < 64; ++depth) {
      auto view = cur->View();
      const EpochRt& ep = view->EpochFor(g);
      fn(cur->id, ep.e.start_gen, g, limit_blocks);
      if (!ep.has_base()) break;
      limit_blocks = std::min(limit_blocks, (ep.e.base_limit + block_size_ - 1) / block_size_);
      cur = ep.Next(cur, &hold);
      g = ep.e.base_gen;
    }
  }
  // The first block in [from, end) of `image` with a version whose
  // generation lies in [min_gen, max_gen]; `end` if there is none.
  uint64_t NextBlockWithVersion(NodeId image, uint64_t from, uint64_t end, uint64_t min_gen,
                                uint64_t max_gen);
  Status ReadPieces(const VersionRecord& rec, uint64_t mask, char* buf, NodeId image,
                    uint64_t block);
  // One data piece of `rec`, unverified, from its slot or the piece log
  // (Check, and crash repair of checksums).
  Status ReadStoredPiece(const VersionRecord& rec, uint32_t piece, char* buf);
  // Where piece `piece` of `rec` is stored, for messages: "slot 12" or
  // "piece log unit 345".
  static std::string StoredAt(const VersionRecord& rec, uint32_t piece);
  // For Check: a piece of (image, gen, block) whose bytes did not match the
  // record its scan read. The live generation is overwritten in place, so
  // this reads the piece again with the current record; true if that fails
  // too (real damage).
  bool StillDamaged(NodeId image, uint64_t gen, uint64_t block, uint32_t piece);
  Status VerifyPieces(const VersionRecord& rec, uint64_t mask, const char* buf, NodeId image,
                      uint64_t block);

  // Metadata helpers; caller holds meta_mu_.
  Status CreateNode(NodeId parent, std::string_view name, NodeKind kind, uint32_t mode,
                    uint32_t uid, uint32_t gid, NodeAttr* attr);
  Status NodeLocked(NodeId id, NodeRecord** rec);
  Status ImageLocked(NodeId id, NodeRecord** rec);
  Status ChildLocked(NodeId parent, std::string_view name, NodeRecord** rec);
  Status SnapshotLocked(NodeId image, std::string_view name, SnapshotInfo** info);
  std::string PathOfLocked(NodeId node) const;  // PathOf for callers holding meta_mu_
  void FillAttr(const NodeRecord& r, NodeAttr* a) const;
  void PutNode(rocksdb::WriteBatch* b, const NodeRecord& r);
  void PutSnapshot(rocksdb::WriteBatch* b, const SnapshotInfo& s);
  void PutCounters(rocksdb::WriteBatch* b);
  // Writes to the index; counts the write in index_changes_ (after it).
  Status Commit(rocksdb::WriteBatch* b, bool sync, const char* what);
  // The same without counting: for batches of checksum-only records.
  Status WriteIndex(rocksdb::WriteBatch* b, bool sync, const char* what);
  // After a failed index write (e.g. ENOSPC) RocksDB stops accepting writes
  // until DB::Resume() succeeds; every index write and sync goes through
  // here first, so that the store recovers once space returns and never
  // syncs a log whose last write failed.
  Status IndexHealthy();
  Status NoteIndexResult(const rocksdb::Status& s, const char* what);
  std::shared_ptr<ImageState> StateLocked(NodeId id);
  void PublishLocked(const NodeRecord& r);
  size_t SnapshotCountLocked(NodeId image) const;
  bool HasDependentsLocked(NodeId image) const;
  Status DropImageLocked(NodeRecord* rec, rocksdb::WriteBatch* b);
  Status LoadMetadata();
  Status RecoverDirty(const std::vector<std::string>& logged);
  Status SnapshotLockedImpl(NodeRecord* rec, std::string_view name, int64_t now_ns,
                            rocksdb::WriteBatch* b, SnapshotInfo* out);
  // The index commit and in-memory publication of a group snapshot (images
  // in id order); caller holds their io_mu exclusively, not meta_mu_.
  Status CommitGroupSnapshot(const std::vector<NodeId>& order, std::string_view name,
                             std::vector<SnapshotInfo>* made);
  bool IsPristineLocked(const NodeRecord& r);

  // The flusher thread (block_io.cpp): indexes pending live records of
  // queued images, and of all images every few seconds (it never syncs).
  // It also grows the dirty log ahead of need (QueueLogGrowth).
  void FlusherThread();
  void QueueLogGrowth();
  std::mutex flusher_mu_;
  std::condition_variable flusher_cv_;
  std::deque<NodeId> flusher_queue_;  // guarded by flusher_mu_
  bool flusher_stop_ = false;         // guarded by flusher_mu_
  std::atomic<bool> grow_log_{false};  // QueueLogGrowth asked, the flusher has not started
  std::thread flusher_thread_;

  // Garbage collection (gc.cpp).
  void ScheduleGc(NodeId image);
  void GcThread();
  Status GcImage(NodeId image);
  // When the background thread may start a pass for a queued image
  // (time_point::min() for one queued at open). Caller holds gc_mu_.
  std::chrono::steady_clock::time_point GcDueLocked(NodeId image) const;

  Options options_;
  std::string path_;
  int lock_fd_ = -1;
  uint32_t block_size_ = 64 * 1024;
  uint32_t pieces_ = 16;
  IndexDb index_;
  DataFile data_;
  PieceLog log_;  // pieces of versions first written by less than a block
  DirtyLog dirty_log_;
  SealLog seal_log_;
  SlotAllocator slots_;
  std::atomic<uint64_t> flush_ticket_{0};
  std::atomic<uint64_t> write_seq_{0};
  // Index writes that change more than the checksums of versions the index
  // already maps: every Commit, and a FlushPending of a record with
  // maps_changed. Counted after the write returns, so a value read before
  // an index log sync counts only writes that sync covers; a checkpoint
  // stores that value in index_changes_synced_ once its sync succeeded.
  // While the two are equal, the unsynced part of the index log holds
  // nothing but checksums of in-place overwrites, which the dirty log can
  // stand in for (SyncImages).
  // Starts one ahead: what the index holds at open may have come from a
  // log that was never synced (the last process was killed), so the first
  // sync of a session syncs the index.
  std::atomic<uint64_t> index_changes_{1};
  std::atomic<uint64_t> index_changes_synced_{0};
  // The dirty log and the data file share a file system that overwrites in
  // place, so the data file's fdatasync flushes the log's pages too.
  bool dirty_log_flush_shared_ = false;
  std::atomic<bool> failed_sync_{false};
  std::atomic<bool> index_error_{false};
  std::mutex resume_mu_;
  Status index_error_status_;  // guarded by resume_mu_: what stopped the index

  mutable std::mutex meta_mu_;
  Counters counters_;
  std::unordered_map<NodeId, NodeRecord> nodes_;
  std::unordered_map<NodeId, std::map<std::string, NodeId, std::less<>>> children_;
  std::unordered_map<NodeId, std::shared_ptr<ImageState>> states_;
  std::map<SnapshotId, SnapshotInfo> snapshots_;
  std::unordered_map<NodeId, std::map<std::string, SnapshotId, std::less<>>> by_name_;

  std::mutex gc_mu_;
  std::condition_variable gc_cv_;
  std::condition_variable gc_idle_cv_;
  std::deque<NodeId> gc_queue_;
  // Queued by ScheduleGc: when first and last queued (the pass is debounced).
  struct GcDue {
    std::chrono::steady_clock::time_point first, last;
  };
  std::unordered_map<NodeId, GcDue> gc_due_;  // guarded by gc_mu_
  bool gc_busy_ = false;
  bool gc_stop_ = false;
  std::atomic<bool> closing_{false};  // tells a running GC pass to stop early
  std::mutex gc_run_mu_;  // one GC pass at a time
  std::thread gc_thread_;
};

Timestamp NowTimestamp();
int64_t NowNs();

}  // namespace snapdisk::engine
