// Reclamation and space accounting. Both ask, per stored block version, which
// readers of the image can see which of its 4 KiB pieces. A reader is a
// generation with a size limit: the live image, each snapshot, each clone or
// rollback/shrink epoch based on this image, and each open snapshot handle.
// A version of generation g serves piece p to reader r iff g <= r.gen, r is in
// the same epoch as g, block*block_size < r.limit, and no version of a
// generation in (g, r.gen] defines p. A version that serves nothing is dead.
#include <algorithm>
#include <bit>
#include <limits>

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

// Readers (sorted by gen) that piece `p` of version `i` (newest first in `vs`)
// is served to; stops counting at `cap`.
size_t ServedReaders(const std::vector<Reader>& readers, const std::vector<Epoch>& epochs,
                     const std::vector<BlockVersion>& vs, size_t i, uint32_t p, uint64_t block_start,
                     size_t cap, const Reader** first) {
  const uint64_t g = vs[i].gen;
  uint64_t until = EpochEnd(epochs, g);  // exclusive
  for (size_t k = i; k-- > 0;)          // newer versions, oldest of them first
    if (vs[k].rec.present >> p & 1) {
      until = std::min(until, vs[k].gen);
      break;
    }
  size_t n = 0;
  auto it = std::lower_bound(readers.begin(), readers.end(), Reader{g, 0});
  for (; it != readers.end() && it->gen < until && n < cap; ++it) {
    if (it->limit <= block_start || (it->shadow >> p & 1)) continue;
    if (n == 0 && first) *first = &*it;
    ++n;
  }
  return n;
}

}  // namespace

void StoreImpl::ScheduleGc(NodeId image) {
  {
    std::lock_guard l(gc_mu_);
    if (std::find(gc_queue_.begin(), gc_queue_.end(), image) == gc_queue_.end()) gc_queue_.push_back(image);
  }
  gc_cv_.notify_one();
}

void StoreImpl::GcThread() {
  for (;;) {
    std::unique_lock run(gc_run_mu_);
    NodeId id = 0;
    {
      std::unique_lock l(gc_mu_);
      while (gc_queue_.empty() && !gc_stop_) {
        run.unlock();
        gc_cv_.wait(l);
        l.unlock();
        run.lock();
        l.lock();
      }
      if (gc_stop_) return;
      id = gc_queue_.front();
      gc_queue_.pop_front();
    }
    (void)GcImage(id);  // a failed pass leaves garbage, never damage; it is retried on the next open
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

// Sets each base reader's shadow for `block`: the pieces its clone defines
// itself in the generations that reader stands for.
static Status FillShadows(IndexDb& index, uint32_t pieces, uint64_t block, std::vector<Reader>* readers) {
  rocksdb::ReadOptions ro;
  ro.prefix_same_as_start = true;
  for (Reader& r : *readers) {
    r.shadow = 0;
    if (!r.via) continue;
    std::unique_ptr<rocksdb::Iterator> it(index.db->NewIterator(ro, index.versions));
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
  {
    std::lock_guard l(meta_mu_);
    auto it = nodes_.find(image);
    if (it == nodes_.end() || it->second.kind != NodeKind::kImage) return Status::OK();
    st = StateLocked(image);
    CollectReaders(nodes_, snapshots_, states_, it->second, &readers);
    epochs = it->second.epochs;
    drop_node = readers.empty();
  }
  // Pending live records are invisible to the scan below; flushed, they are
  // judged like the rest (and an image being dropped leaks no slot).
  SNAPDISK_RETURN_IF_ERROR(FlushPending(*st));
  rocksdb::WriteBatch batch;
  std::vector<uint64_t> freed;
  auto flush = [&]() -> Status {
    if (batch.Count() == 0) return Status::OK();
    // Synced before the slots are reused: a crash must never bring back a
    // record that names a slot holding someone else's data.
    SNAPDISK_RETURN_IF_ERROR(Commit(&batch, true, "reclaim block versions"));
    for (uint64_t slot : freed) {
      (void)data_.Punch(slot, 0, block_size_);
      slots_.Free(slot);
    }
    batch.Clear();
    freed.clear();
    return Status::OK();
  };
  SNAPDISK_RETURN_IF_ERROR(ForEachBlock(index_, pieces_, image, [&](uint64_t block, std::vector<BlockVersion>& vs) -> Status {
    const uint64_t block_start = block * block_size_;
    // Closing: stop here; what is left is found again at the next open.
    if (closing_) return Status::Busy("store is closing");
    SNAPDISK_RETURN_IF_ERROR(FillShadows(index_, pieces_, block, &readers));
    for (size_t i = 0; i < vs.size(); ++i) {
      bool alive = false;
      for (uint32_t p = 0; p < pieces_ && !alive; ++p)
        if (vs[i].rec.present >> p & 1)
          alive = ServedReaders(readers, epochs, vs, i, p, block_start, 1, nullptr) > 0;
      if (alive) continue;
      batch.Delete(index_.versions, vs[i].key);
      if (vs[i].rec.slot != kNoSlot) freed.push_back(vs[i].rec.slot);
    }
    if (batch.Count() >= 4096) return flush();
    return Status::OK();
  }));
  SNAPDISK_RETURN_IF_ERROR(flush());

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
  return ForEachBlock(index_, pieces_, image, [&](uint64_t block, std::vector<BlockVersion>& vs) -> Status {
    const uint64_t block_start = block * block_size_;
    SNAPDISK_RETURN_IF_ERROR(FillShadows(index_, pieces_, block, &readers));
    for (size_t i = 0; i < vs.size(); ++i) {
      for (uint32_t p = 0; p < pieces_; ++p) {
        if (!(vs[i].rec.data >> p & 1)) continue;
        const Reader* first = nullptr;
        if (ServedReaders(readers, epochs, vs, i, p, block_start, 2, &first) == 1 && first->gen == self.gen)
          usage->unique += kSubBlockSize;
      }
    }
    return Status::OK();
  });
}

}  // namespace snapdisk::engine
