// Reclamation and space accounting. Both ask, per stored block version, which
// readers of the image can see which of its 4 KiB pieces. A reader is a
// generation with a size limit: the live image, each snapshot, each clone or
// rollback/shrink epoch based on this image, and each open snapshot handle.
// A version of generation g serves piece p to reader r iff g <= r.gen, r is in
// the same epoch as g, block*block_size < r.limit, and no version of a
// generation in (g, r.gen] defines p. A version that serves nothing is dead.
#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <limits>
#include <thread>

#include <fmt/format.h>

#include "keys.h"
#include "store_impl.h"

namespace snapdisk::engine {

namespace {

struct Reader {
  uint64_t gen;
  uint64_t limit;  // bytes of the image this reader sees
  // A base reader on behalf of image `via` (a clone): it reaches a piece only
  // where `via` has no version of its own in [via_start, via_gen].
  NodeId via = 0;
  uint64_t via_start = 0, via_gen = 0;
  uint64_t shadow = 0;  // pieces of the current block it never reaches
  bool operator<(const Reader& o) const { return gen < o.gen; }
};

struct BlockVersion {
  std::string key;
  uint64_t gen;
  VersionRecord rec;
};

// Generation where the epoch containing `gen` ends (exclusive).
uint64_t EpochEnd(const std::vector<Epoch>& epochs, uint64_t gen) {
  for (const Epoch& e : epochs)
    if (e.start_gen > gen) return e.start_gen;
  return std::numeric_limits<uint64_t>::max();
}

// The readers of one pass, indexed so that the liveness test costs about
// log(readers), not readers: an image with 10,000 snapshots has 10,000
// readers, and a pass asks about every stored version. Readers that stand
// for a clone (`via`) can be shadowed per block; they are kept apart (there
// are few) and only they are touched per block. The others are searched by
// generation (binary search) and by size limit (a max-tree over the limits).
class ReaderSet {
 public:
  explicit ReaderSet(std::vector<Reader> readers) {
    for (Reader& r : readers) (r.via ? via_ : plain_).push_back(r);
    std::sort(plain_.begin(), plain_.end());
    std::sort(via_.begin(), via_.end());
    leaves_ = 1;
    while (leaves_ < plain_.size()) leaves_ *= 2;
    tree_.assign(2 * leaves_, 0);
    for (size_t i = 0; i < plain_.size(); ++i) tree_[leaves_ + i] = plain_[i].limit;
    for (size_t n = leaves_; n-- > 1;) tree_[n] = std::max(tree_[2 * n], tree_[2 * n + 1]);
  }

  bool empty() const { return plain_.empty() && via_.empty(); }

  // Sets each base reader's shadow for `block`: the pieces its clone defines
  // itself in the generations that reader stands for.
  Status FillShadows(IndexDb& index, uint32_t pieces, uint64_t block) {
    if (via_.empty()) return Status::OK();
    rocksdb::ReadOptions ro;
    ro.prefix_same_as_start = true;
    std::unique_ptr<rocksdb::Iterator> it(index.db->NewIterator(ro, index.versions));
    for (Reader& r : via_) {
      r.shadow = 0;
      const std::string prefix = keys::BlockPrefix(r.via, block);
      for (it->Seek(keys::Version(r.via, block, r.via_gen)); it->Valid() && it->key().starts_with(prefix); it->Next()) {
        keys::VersionKey vk;
        if (!keys::ParseVersion(it->key().ToStringView(), &vk) || vk.generation < r.via_start) break;
        VersionRecord rec;
        SNAPDISK_RETURN_IF_ERROR(VersionRecord::Decode(it->value().ToStringView(), pieces, &rec));
        r.shadow |= rec.present;
      }
      SNAPDISK_RETURN_IF_ERROR(FromRocks(it->status(), "scan a clone's versions"));
    }
    return Status::OK();
  }

  // Readers that piece `p` of a version of generation `g` is served to,
  // where `until` is the generation (exclusive) where its epoch ends or the
  // next newer version defining `p` begins: those with g <= gen < until,
  // limit > block_start and `p` not shadowed. Stops counting at `cap`;
  // *first (if asked) gets one with the lowest generation.
  size_t Served(uint64_t g, uint64_t until, uint32_t p, uint64_t block_start, size_t cap,
                const Reader** first) const {
    if (until <= g) return 0;
    size_t n = 0;
    const Reader* best = nullptr;
    const size_t hi = Bound(plain_, until);
    for (size_t i = FirstAbove(Bound(plain_, g), hi, block_start); i < hi && n < cap;
         i = FirstAbove(i + 1, hi, block_start)) {
      if (n == 0) best = &plain_[i];
      ++n;
    }
    size_t m = 0;
    for (size_t i = Bound(via_, g); i < via_.size() && via_[i].gen < until && m < cap; ++i) {
      const Reader& r = via_[i];
      if (r.limit <= block_start || (r.shadow >> p & 1)) continue;
      if (m == 0 && (!best || r.gen < best->gen)) best = &r;
      ++m;
    }
    if (first && best) *first = best;
    return std::min(n + m, cap);
  }

 private:
  // Index of the first reader in `rs` with gen >= g.
  static size_t Bound(const std::vector<Reader>& rs, uint64_t g) {
    return static_cast<size_t>(std::lower_bound(rs.begin(), rs.end(), Reader{g, 0}) - rs.begin());
  }
  // The first i in [lo, hi) with plain_[i].limit > x, or hi.
  size_t FirstAbove(size_t lo, size_t hi, uint64_t x) const {
    if (lo >= hi) return hi;
    if (plain_[lo].limit > x) return lo;  // the usual case: no size limit in the way
    return Find(1, 0, leaves_, lo + 1, hi, x);
  }
  size_t Find(size_t node, size_t nl, size_t nr, size_t lo, size_t hi, uint64_t x) const {
    if (nr <= lo || hi <= nl || tree_[node] <= x) return hi;
    if (nr - nl == 1) return nl;
    const size_t mid = nl + (nr - nl) / 2;
    const size_t r = Find(2 * node, nl, mid, lo, hi, x);
    return r != hi ? r : Find(2 * node + 1, mid, nr, lo, hi, x);
  }

  std::vector<Reader> plain_;  // via == 0, sorted by gen; never shadowed
  std::vector<Reader> via_;    // clones' base readers, sorted by gen
  size_t leaves_ = 1;
  std::vector<uint64_t> tree_;  // max of plain_[].limit over each subtree (leaves at leaves_)
};

// For the versions of one block (newest first), walked oldest-last: the
// generation of the next newer version defining each piece, so that
// liveness needs no rescan of the newer versions per version and piece.
class NextDefiner {
 public:
  NextDefiner() { next_.fill(std::numeric_limits<uint64_t>::max()); }
  uint64_t Of(uint32_t p) const { return next_[p]; }
  void Add(const BlockVersion& v) {
    for (uint64_t m = v.rec.present; m; m &= m - 1) next_[static_cast<size_t>(std::countr_zero(m))] = v.gen;
  }

 private:
  std::array<uint64_t, 64> next_;
};

}  // namespace

// Deleting many snapshots in a row must not run one pass over the whole
// image per deletion back to back: an image queued by ScheduleGc waits until
// it has not been queued again for kGcQuiet, and at most kGcMaxDelay after
// it was first queued. Images queued at open (no entry in gc_due_) and
// CollectGarbage() do not wait.
namespace {
constexpr std::chrono::milliseconds kGcQuiet{200};
constexpr std::chrono::milliseconds kGcMaxDelay{2000};
}  // namespace

void StoreImpl::ScheduleGc(NodeId image) {
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard l(gc_mu_);
    if (std::find(gc_queue_.begin(), gc_queue_.end(), image) == gc_queue_.end()) {
      gc_queue_.push_back(image);
      gc_due_[image] = {now, now};
    } else if (auto it = gc_due_.find(image); it != gc_due_.end()) {
      it->second.last = now;
    }
  }
  gc_cv_.notify_one();
}

std::chrono::steady_clock::time_point StoreImpl::GcDueLocked(NodeId image) const {
  auto it = gc_due_.find(image);
  if (it == gc_due_.end()) return std::chrono::steady_clock::time_point::min();
  return std::min(it->second.last + kGcQuiet, it->second.first + kGcMaxDelay);
}

void StoreImpl::GcThread() {
  std::unique_lock l(gc_mu_);
  while (!gc_stop_) {
    if (gc_queue_.empty()) {
      gc_cv_.wait(l);
      continue;
    }
    // The queued image whose delay ends first.
    NodeId id = 0;
    auto due = std::chrono::steady_clock::time_point::max();
    for (NodeId q : gc_queue_) {
      const auto d = GcDueLocked(q);
      if (d < due) {
        due = d;
        id = q;
      }
    }
    if (due > std::chrono::steady_clock::now()) {
      gc_cv_.wait_until(l, due);  // ScheduleGc and closing wake it early
      continue;
    }
    // One pass at a time (gc_run_mu_ before gc_mu_, as in CollectGarbage).
    l.unlock();
    {
      std::lock_guard run(gc_run_mu_);
      bool take = false;
      {
        std::lock_guard q(gc_mu_);
        auto it = std::find(gc_queue_.begin(), gc_queue_.end(), id);
        // CollectGarbage may have taken it meanwhile, or ScheduleGc delayed it again.
        if (!gc_stop_ && it != gc_queue_.end() && GcDueLocked(id) <= std::chrono::steady_clock::now()) {
          gc_queue_.erase(it);
          gc_due_.erase(id);
          take = true;
        }
      }
      // A failed pass leaves garbage, never damage; it is retried on the next open.
      if (take) (void)GcImage(id);
    }
    l.lock();
  }
}

Status StoreImpl::CollectGarbage() {
  std::lock_guard run(gc_run_mu_);
  for (;;) {
    NodeId id = 0;
    {
      std::lock_guard l(gc_mu_);
      if (gc_queue_.empty()) return Status::OK();
      id = gc_queue_.front();
      gc_queue_.pop_front();
      gc_due_.erase(id);
    }
    SNAPDISK_RETURN_IF_ERROR(GcImage(id));
  }
}

using StateMap = std::unordered_map<NodeId, std::shared_ptr<ImageState>>;

// Caller holds meta_mu_. The readers of `rec` (sorted by gen). A dependent
// image's epoch based on `rec` counts only if some reader of the dependent
// lives in that epoch; its earliest such reader bounds what it can reach.
static void CollectReaders(const std::unordered_map<NodeId, NodeRecord>& nodes,
                           const std::map<SnapshotId, SnapshotInfo>& snapshots, const StateMap& states,
                           const NodeRecord& rec, std::vector<Reader>* readers, int depth = 0) {
  readers->clear();
  auto st = states.find(rec.id);
  const bool open = st != states.end() && st->second->open_handles > 0;
  // No size limit for the live image: a write may grow it at any moment
  // without taking the metadata lock, so its newest versions can lie past
  // the size this pass read.
  if (rec.linked || open) readers->push_back({rec.live_gen, std::numeric_limits<uint64_t>::max()});
  for (const auto& [id, s] : snapshots)
    if (s.image == rec.id) readers->push_back({s.generation, s.size});
  if (st != states.end())
    for (uint64_t g : st->second->pinned_gens) readers->push_back({g, std::numeric_limits<uint64_t>::max()});
  for (const auto& [id, r] : nodes) {
    if (r.kind != NodeKind::kImage || id == rec.id) continue;
    bool based = false;
    for (const Epoch& e : r.epochs) based |= e.base_image == rec.id;
    if (!based) continue;
    std::vector<Reader> theirs;
    if (depth < 32) {
      CollectReaders(nodes, snapshots, states, r, &theirs, depth + 1);
    } else {
      theirs.push_back({0, std::numeric_limits<uint64_t>::max()});  // too deep: keep everything
    }
    for (size_t i = 0; i < r.epochs.size(); ++i) {
      const Epoch& e = r.epochs[i];
      if (e.base_image != rec.id) continue;
      const uint64_t end = i + 1 < r.epochs.size() ? r.epochs[i + 1].start_gen : std::numeric_limits<uint64_t>::max();
      uint64_t earliest = std::numeric_limits<uint64_t>::max();
      for (const Reader& t : theirs)
        if (t.gen >= e.start_gen && t.gen < end) earliest = std::min(earliest, t.gen);
      if (earliest == std::numeric_limits<uint64_t>::max()) continue;
      readers->push_back({e.base_gen, e.base_limit, r.id, e.start_gen, earliest, 0});
    }
  }
  // An epoch based on this image's own past (rollback, shrink) reads through
  // only for readers that live in it; walk newest first so that a base reader
  // added here can in turn keep an older epoch's base alive.
  for (size_t i = rec.epochs.size(); i-- > 0;) {
    const Epoch& e = rec.epochs[i];
    if (e.base_image != rec.id) continue;
    const uint64_t end = i + 1 < rec.epochs.size() ? rec.epochs[i + 1].start_gen : std::numeric_limits<uint64_t>::max();
    bool used = false;
    for (const Reader& r : *readers) used |= r.gen >= e.start_gen && r.gen < end;
    if (used) readers->push_back({e.base_gen, e.base_limit});
  }
  std::sort(readers->begin(), readers->end());
}

// Calls fn(block, versions newest first) for every block of `image` with versions.
template <typename Fn>
static Status ForEachBlock(IndexDb& index, uint32_t pieces, NodeId image, Fn&& fn) {
  rocksdb::ReadOptions ro;
  ro.total_order_seek = true;
  std::unique_ptr<rocksdb::Iterator> it(index.db->NewIterator(ro, index.versions));
  const std::string prefix = keys::ImagePrefix(image);
  std::vector<BlockVersion> vs;
  uint64_t block = 0;
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    keys::VersionKey vk;
    if (!keys::ParseVersion(it->key().ToStringView(), &vk)) return Status::Corruption("damaged version key");
    if (!vs.empty() && vk.block != block) {
      SNAPDISK_RETURN_IF_ERROR(fn(block, vs));
      vs.clear();
    }
    block = vk.block;
    BlockVersion v{it->key().ToString(), vk.generation, {}};
    SNAPDISK_RETURN_IF_ERROR(VersionRecord::Decode(it->value().ToStringView(), pieces, &v.rec));
    vs.push_back(std::move(v));
  }
  SNAPDISK_RETURN_IF_ERROR(FromRocks(it->status(), "scan block versions"));
  if (!vs.empty()) SNAPDISK_RETURN_IF_ERROR(fn(block, vs));
  return Status::OK();
}

Status StoreImpl::GcImage(NodeId image) {
  std::vector<Reader> readers;
  std::vector<Epoch> epochs;
  std::shared_ptr<ImageState> st;
  bool drop_node = false;
  // The readers are those of this instant; a snapshot taken during the pass
  // moves the image to newer generations this pass knows no reader of, so
  // their versions are kept (without this, a version written after such a
  // snapshot and indexed before the scan reached it looked dead).
  uint64_t known_live_gen = 0;
  {
    std::lock_guard l(meta_mu_);
    auto it = nodes_.find(image);
    if (it == nodes_.end() || it->second.kind != NodeKind::kImage) return Status::OK();
    st = StateLocked(image);
    CollectReaders(nodes_, snapshots_, states_, it->second, &readers);
    epochs = it->second.epochs;
    known_live_gen = it->second.live_gen;
    drop_node = readers.empty();
  }
  ReaderSet set(std::move(readers));
  // Pending live records are invisible to the scan below; flushed, they are
  // judged like the rest (and an image being dropped leaks no slot). The
  // first synced commit below makes them durable too, which is what lets
  // the piece log units retired before this point go (FreeRetiredUnits).
  const uint64_t flushed_seq = write_seq_.load();
  SNAPDISK_RETURN_IF_ERROR(FlushPending(*st));
  rocksdb::WriteBatch batch;
  std::vector<uint64_t> freed, freed_units;
  bool synced = false;
  auto flush = [&]() -> Status {
    if (batch.Count() == 0) return Status::OK();
    // Synced before the slots are reused: a crash must never bring back a
    // record that names a slot holding someone else's data.
    SNAPDISK_RETURN_IF_ERROR(Commit(&batch, true, "reclaim block versions"));
    synced = true;
    // A punch holds the data file's inode lock, which every data write
    // takes too, and a loop of punches kept it nearly all the time: a
    // 4 KiB write load fell from ~30k to ~4k writes/s while a deleted
    // 4 GiB image was reclaimed (perf: the writers' pwrite waiting in
    // ext4's inode rwsem). While writes arrive (flush_ticket_ counts
    // them), pausing as long as each punch took leaves the writers half
    // of the time; with none, reclaim runs at full speed.
    uint64_t writes_before = flush_ticket_.load(std::memory_order_relaxed);
    auto start = std::chrono::steady_clock::now();
    auto pause = [&] {
      if (flush_ticket_.load(std::memory_order_relaxed) != writes_before)
        std::this_thread::sleep_for(std::max<std::chrono::steady_clock::duration>(
            std::chrono::steady_clock::now() - start, std::chrono::microseconds(20)));
      writes_before = flush_ticket_.load(std::memory_order_relaxed);
      start = std::chrono::steady_clock::now();
    };
    for (uint64_t slot : freed) {
      (void)data_.Punch(slot, 0, block_size_);
      slots_.Free(slot);
      pause();
    }
    log_.Free(&freed_units, pause);
    batch.Clear();
    freed.clear();
    return Status::OK();
  };
  SNAPDISK_RETURN_IF_ERROR(ForEachBlock(index_, pieces_, image, [&](uint64_t block, std::vector<BlockVersion>& vs) -> Status {
    const uint64_t block_start = block * block_size_;
    // Closing: stop here; what is left is found again at the next open.
    if (closing_) return Status::Busy("store is closing");
    SNAPDISK_RETURN_IF_ERROR(set.FillShadows(index_, pieces_, block));
    NextDefiner next;
    for (size_t i = 0; i < vs.size(); ++i) {
      const uint64_t g = vs[i].gen, end = EpochEnd(epochs, g);
      bool alive = !drop_node && g > known_live_gen;
      for (uint64_t m = vs[i].rec.present; m && !alive; m &= m - 1) {
        const auto p = static_cast<uint32_t>(std::countr_zero(m));
        alive = set.Served(g, std::min(end, next.Of(p)), p, block_start, 1, nullptr) > 0;
      }
      next.Add(vs[i]);
      if (alive) continue;
      batch.Delete(index_.versions, vs[i].key);
      if (vs[i].rec.in_block_file()) freed.push_back(vs[i].rec.slot);
      freed_units.insert(freed_units.end(), vs[i].rec.units.begin(), vs[i].rec.units.end());
    }
    if (batch.Count() >= 4096) return flush();
    return Status::OK();
  }));
  SNAPDISK_RETURN_IF_ERROR(flush());
  if (synced) FreeRetiredUnits({st.get()}, flushed_seq);

  if (drop_node) {
    std::vector<NodeId> bases;
    {
      std::lock_guard l(meta_mu_);
      auto it = nodes_.find(image);
      if (it == nodes_.end()) return Status::OK();
      std::vector<Reader> again;
      CollectReaders(nodes_, snapshots_, states_, it->second, &again);
      if (!again.empty()) return Status::OK();  // someone started using it meanwhile
      for (const Epoch& e : it->second.epochs)
        if (e.base_image && e.base_image != image) bases.push_back(e.base_image);
      rocksdb::WriteBatch b;
      b.Delete(index_.nodes, keys::Id(image));
      SNAPDISK_RETURN_IF_ERROR(Commit(&b, true, "drop image"));
      nodes_.erase(it);
      states_.erase(image);
      children_.erase(image);
    }
    for (NodeId b : bases) ScheduleGc(b);
  }
  return Status::OK();
}

Status StoreImpl::GetSpaceUsage(NodeId image, SnapshotId snapshot, SpaceUsage* usage) {
  *usage = SpaceUsage();
  std::vector<Reader> readers;
  std::vector<Epoch> epochs;
  Reader self{};
  std::shared_ptr<ImageState> st;
  {
    std::lock_guard l(meta_mu_);
    NodeRecord* rec = nullptr;
    SNAPDISK_RETURN_IF_ERROR(ImageLocked(image, &rec));
    st = StateLocked(image);
    CollectReaders(nodes_, snapshots_, states_, *rec, &readers);
    epochs = rec->epochs;
    if (snapshot == kLive) {
      self = {rec->live_gen, rec->size};
    } else {
      auto it = snapshots_.find(snapshot);
      if (it == snapshots_.end() || it->second.image != image)
        return Status::NotFound(fmt::format("no snapshot {} of image '{}'", snapshot, PathOfLocked(image)));
      self = {it->second.generation, it->second.size};
    }
  }
  SNAPDISK_RETURN_IF_ERROR(FlushPending(*st));  // the live generation is read from the index
  // Referenced: every stored piece the view reads (through clones' bases
  // too). Candidate blocks come from one pass over each level of the chain.
  std::vector<uint64_t> blocks;
  {
    const uint64_t nblocks = (self.limit + block_size_ - 1) / block_size_;
    rocksdb::ReadOptions ro;
    ro.total_order_seek = true;
    Status scan;
    ForEachChainLevel(*st, self.gen, nblocks, [&](NodeId id, uint64_t min_gen, uint64_t max_gen, uint64_t limit) {
      if (!scan.ok()) return;
      std::unique_ptr<rocksdb::Iterator> it(index_.db->NewIterator(ro, index_.versions));
      const std::string prefix = keys::ImagePrefix(id);
      for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
        keys::VersionKey vk;
        if (!keys::ParseVersion(it->key().ToStringView(), &vk) || vk.block >= limit) break;
        if (vk.generation <= max_gen && vk.generation >= min_gen) blocks.push_back(vk.block);
      }
      scan = FromRocks(it->status(), "scan block versions");
    });
    SNAPDISK_RETURN_IF_ERROR(scan);
    std::sort(blocks.begin(), blocks.end());
    blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
  }
  const uint64_t all = pieces_ == 64 ? ~uint64_t{0} : ((uint64_t{1} << pieces_) - 1);
  for (uint64_t block : blocks) {
    uint64_t stored = 0;
    SNAPDISK_RETURN_IF_ERROR(ReadBlock(*st, self.gen, block, all, nullptr, &stored));
    usage->referenced += uint64_t{static_cast<unsigned>(std::popcount(stored))} * kSubBlockSize;
  }
  // Unique: stored pieces of this image served to this reader and no other.
  ReaderSet set(std::move(readers));
  return ForEachBlock(index_, pieces_, image, [&](uint64_t block, std::vector<BlockVersion>& vs) -> Status {
    const uint64_t block_start = block * block_size_;
    SNAPDISK_RETURN_IF_ERROR(set.FillShadows(index_, pieces_, block));
    NextDefiner next;
    for (size_t i = 0; i < vs.size(); ++i) {
      const uint64_t g = vs[i].gen, end = EpochEnd(epochs, g);
      for (uint64_t m = vs[i].rec.data; m; m &= m - 1) {
        const auto p = static_cast<uint32_t>(std::countr_zero(m));
        const Reader* first = nullptr;
        if (set.Served(g, std::min(end, next.Of(p)), p, block_start, 2, &first) == 1 && first->gen == self.gen)
          usage->unique += kSubBlockSize;
      }
      next.Add(vs[i]);
    }
    return Status::OK();
  });
}

}  // namespace snapdisk::engine
