// The data path: resolving a block at a generation, reading it with checksum
// verification, the copy-on-write / in-place write, durability (sync) and
// SEEK_DATA / SEEK_HOLE. See docs/format.md for why it is shaped this way.
#include <sched.h>

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>

#include <fmt/format.h>

#include "checksum.h"
#include "keys.h"
#include "piece_mask.h"
#include "store_impl.h"

namespace snapdisk::engine {

namespace {
constexpr uint64_t kInProgress = std::numeric_limits<uint64_t>::max();
constexpr uint64_t kMaxChunkBlocks = 16;  // blocks locked together (1 MiB at 64 KiB)
// Pending live records of an image at which a write asks the flusher thread
// to index them: group commit, and a snapshot (which flushes first) never
// waits for more than a few hundred. At kMaxPendingRecords a writer flushes
// itself (back pressure if the flusher falls behind).
constexpr uint64_t kFlushSoonRecords = 128;
// Reads of at most this many pieces of a version are "small": scattered
// reads, served without kernel readahead (DataFile::Read random_access).
constexpr int kSmallReadPieces = 4;
// A version's runs of pieces separated by at most this many pieces in all
// are read (and prefetched) as one span, and the gap's bytes thrown away.
// After a snapshot, a 4 KiB write into an older block leaves that block's
// older version in two runs around it: one disk request instead of two.
// A cold seq read of 1 GiB after 10,000 such writes made 25.6k disk
// requests instead of 31k (/proc/diskstats); its speed did not change
// measurably.
constexpr uint32_t kMaxSpanGapPieces = 4;
constexpr uint64_t kMaxPendingRecords = 16384;

// Like ForEachRun, but consecutive runs join one span p..q while the span's
// unset bits number at most kMaxSpanGapPieces.
template <typename Fn>
Status ForEachSpan(uint64_t mask, uint32_t first, uint32_t last, Fn&& fn) {
  bool open = false;
  uint32_t span_p = 0, span_q = 0, gaps = 0;
  SNAPDISK_RETURN_IF_ERROR(ForEachRun(mask, first, last, [&](uint32_t p, uint32_t q) -> Status {
    if (open && gaps + (p - span_q - 1) <= kMaxSpanGapPieces) {
      gaps += p - span_q - 1;
      span_q = q;
      return Status::OK();
    }
    if (open) SNAPDISK_RETURN_IF_ERROR(fn(span_p, span_q));
    open = true;
    span_p = p;
    span_q = q;
    gaps = 0;
    return Status::OK();
  }));
  return open ? fn(span_p, span_q) : Status::OK();
}

// Page-aligned, so that a small read through it can be polled
// (DataFile::Read needs 4 KiB alignment for O_DIRECT).
char* ScratchBlock(uint32_t block_size) {
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  thread_local std::unique_ptr<char, Free> buf;
  thread_local size_t capacity = 0;
  if (capacity < block_size) {
    const size_t size = (size_t{block_size} + 4095) / 4096 * 4096;
    capacity = 0;  // until the new buffer is in place
    buf.reset(static_cast<char*>(std::aligned_alloc(4096, size)));
    if (!buf) throw std::bad_alloc();
    capacity = size;
  }
  return buf.get();
}

const char* ZeroBlock(uint32_t block_size) {
  static std::vector<char> zeros(256 * 1024, 0);
  (void)block_size;
  return zeros.data();
}
}  // namespace

namespace {
// A version record on its way to the index.
struct IndexPut {
  uint64_t block, gen;
  std::string value;
};

// Records per RocksDB write when pending records go to the index. A flush
// under a 4 KiB write load carried 50-200 records (bench/README.md, "Since
// 21:20 on 2026-12-05"), more when it includes a sealed batch. As one batch,
// snapshots taken meanwhile were slower: in the throwaway series of
// bench/README.md ("Since 07:40 on 2026-12-06": a fresh 1 GiB image, the
// harness's writer, 100 mkdirs 10 ms apart, one round per store, variants
// alternating), p99 stayed under 1 ms in 2 of 17 rounds with one batch and
// in 20 of 21 with at most 32 records a write (4 of 4 at 16, 2 of 4 at 64).
// Why is not settled: the flusher's time on the CPU did not get shorter.
// Each write costs a few microseconds on top of its records.
// At 32 GiB written the same series needed more: see WriteInKeyOrder.
constexpr size_t kRecordsPerIndexWrite = 32;

// Writes `puts` of `image` to the versions family in key order,
// kRecordsPerIndexWrite records per call of `write` (WriteIndex or Commit).
// Stops at the first failure; the caller then keeps every record of the
// flush pending, those already written too (a put is idempotent).
// With `yield`, between two writes the thread lets whatever waits for its
// vCPU run first (sched_yield returns at once if nothing does). Under a
// 4 KiB write load the flusher ran for 0.2-0.33 ms at a time at the median
// (p90 0.65-0.89 ms), and a task woken on its vCPU meanwhile, such as a
// client whose mkdir the daemon had just answered, waited for it: this
// kernel's scheduler seldom preempts a running thread for a woken one. In
// the series above on a 32 GiB image, three rounds each: mkdirs over 1 ms
// 5, 6 and 4 with the writes split but no yield (p99 1.21-1.86 ms); 1, 1
// and 0 with the yield (p99 0.62-0.98 ms); 5, 11 and 8 unchanged.
// Key order: RocksDB's memtable starts each insert from where the previous
// one landed in its skip list (the "splice"), so ascending keys cost a
// short search each, while keys in stripe or hash order each searched from
// the top: that search was the flusher's largest cost under 4 KiB random
// writes.
template <typename WriteFn>
Status WriteInKeyOrder(uint64_t image, std::vector<IndexPut>* puts, rocksdb::ColumnFamilyHandle* cf,
                       bool yield, WriteFn write) {
  std::sort(puts->begin(), puts->end(), [](const IndexPut& a, const IndexPut& b) {
    return a.block != b.block ? a.block < b.block : a.gen > b.gen;  // keys hold ~gen
  });
  for (size_t i = 0; i < puts->size(); i += kRecordsPerIndexWrite) {
    if (yield && i > 0) sched_yield();
    rocksdb::WriteBatch batch;
    const size_t end = std::min(puts->size(), i + kRecordsPerIndexWrite);
    for (size_t k = i; k < end; ++k) {
      const IndexPut& p = (*puts)[k];
      batch.Put(cf, keys::Version(image, p.block, p.gen), p.value);
    }
    SNAPDISK_RETURN_IF_ERROR(write(&batch));
  }
  return Status::OK();
}
}  // namespace

Status StoreImpl::ReadVersion(const std::string& key, VersionRecord* rec, bool* found) {
  std::string value;
  rocksdb::Status s = index_.db->Get(rocksdb::ReadOptions(), index_.versions, key, &value);
  if (s.IsNotFound()) {
    *found = false;
    return Status::OK();
  }
  SNAPDISK_RETURN_IF_ERROR(FromRocks(s, "read block version"));
  *found = true;
  return VersionRecord::Decode(value, pieces_, rec);
}

Status StoreImpl::ReadPieces(const VersionRecord& rec, uint64_t mask, char* buf, NodeId image,
                             uint64_t block) {
  const bool small = std::popcount(mask) <= kSmallReadPieces;
  if (rec.logged()) {
    SNAPDISK_RETURN_IF_ERROR(log_.Read(rec, mask, buf, small));
    return VerifyPieces(rec, mask, buf, image, block);
  }
  SNAPDISK_RETURN_IF_ERROR(ForEachSpan(mask, 0, pieces_ - 1, [&](uint32_t i, uint32_t j) {
    // The span's gap pieces are not this version's: a newer version may
    // have filled them already. They are kept aside and put back.
    thread_local std::array<char, kMaxSpanGapPieces * kSubBlockSize> kept;
    auto gap_pieces = [&](auto&& move) {
      size_t n = 0;
      for (uint32_t p = i; p <= j; ++p)
        if (!(mask >> p & 1)) move(buf + size_t{p} * kSubBlockSize, kept.data() + n++ * kSubBlockSize);
    };
    gap_pieces([](char* piece, char* keep) { std::memcpy(keep, piece, kSubBlockSize); });
    Status s = data_.Read(rec.slot, i * kSubBlockSize, (j - i + 1) * kSubBlockSize, buf + size_t{i} * kSubBlockSize, small);
    gap_pieces([](char* piece, char* keep) { std::memcpy(piece, keep, kSubBlockSize); });
    return s;
  }));
  return VerifyPieces(rec, mask, buf, image, block);
}

Status StoreImpl::VerifyPieces(const VersionRecord& rec, uint64_t mask, const char* buf, NodeId image,
                               uint64_t block) {
  if (!options_.verify_checksums) return Status::OK();
  for (uint32_t p = 0; p < pieces_; ++p) {
    if (!(mask >> p & 1)) continue;
    if (PieceChecksum(buf + size_t{p} * kSubBlockSize) != rec.crc[p])
      return Status::Corruption(fmt::format(
          "checksum mismatch in image {} block {} piece {} (data {}): the stored data "
          "is damaged; nothing was returned. Run 'snapdisk scrub' to list damaged blocks",
          PathOf(image), block, p, StoredAt(rec, p)));
  }
  return Status::OK();
}

Status StoreImpl::ReadStoredPiece(const VersionRecord& rec, uint32_t piece, char* buf) {
  if (rec.logged()) return log_.ReadPiece(rec, piece, buf);
  return data_.Read(rec.slot, piece * kSubBlockSize, kSubBlockSize, buf);
}

std::string StoreImpl::StoredAt(const VersionRecord& rec, uint32_t piece) {
  if (rec.logged()) return fmt::format("piece log unit {}", rec.unit(piece));
  return fmt::format("slot {}", rec.slot);
}

void StoreImpl::PrefetchPieces(const VersionRecord& rec, uint64_t mask) {
  if (rec.logged()) return log_.Prefetch(rec, mask);
  (void)ForEachSpan(mask, 0, pieces_ - 1, [&](uint32_t i, uint32_t j) {
    data_.Prefetch(rec.slot, i * kSubBlockSize, (j - i + 1) * kSubBlockSize);
    return Status::OK();
  });
}

void StoreImpl::PrefetchRange(ImageState& img, uint64_t gen, bool live, uint64_t offset, uint64_t end) {
  for (uint64_t block = offset / block_size_; block * block_size_ < end; ++block) {
    const uint64_t start = std::max(offset, block * block_size_) - block * block_size_;
    const uint64_t stop = std::min(end, (block + 1) * block_size_) - block * block_size_;
    const uint64_t want = MaskRange(static_cast<uint32_t>(start / kSubBlockSize),
                                    static_cast<uint32_t>((stop - 1) / kSubBlockSize));
    uint64_t stored = 0;
    std::unique_lock<std::mutex> stripe;
    if (live) stripe = std::unique_lock(img.StripeFor(block));
    // A failure here is the read's to report.
    if (!ReadBlock(img, gen, block, want, nullptr, &stored, live, true).ok()) return;
  }
}

Status StoreImpl::ReadBlock(ImageState& img, uint64_t gen, uint64_t block, uint64_t want, char* buf,
                            uint64_t* stored, bool live_stripe_held, bool prefetch) {
  *stored = 0;
  ImageState* cur = &img;
  std::shared_ptr<ImageState> hold;  // keeps a base image's state alive while we read it
  uint64_t g = gen;
  uint64_t cut = std::numeric_limits<uint64_t>::max();  // bytes at and past it read as zeros
  const uint64_t block_start = block * block_size_;
  rocksdb::ReadOptions ro;
  ro.prefix_same_as_start = true;
  uint64_t seek_gen = gen;
  // Takes from version `rec` (of image `owner`) the wanted pieces it
  // defines: reads (or prefetches) its data pieces, zeros the rest.
  auto use = [&](const VersionRecord& rec, NodeId owner) -> Status {
    const uint64_t m = rec.present & want;
    if (!m) return Status::OK();
    const uint64_t dm = m & rec.data;
    if (dm && buf) SNAPDISK_RETURN_IF_ERROR(ReadPieces(rec, dm, buf, owner, block));
    if (dm && prefetch) PrefetchPieces(rec, dm);
    if (buf)
      for (uint32_t p = 0; p < pieces_; ++p)
        if ((m & ~dm) >> p & 1) std::memset(buf + size_t{p} * kSubBlockSize, 0, kSubBlockSize);
    *stored |= dm;
    want &= ~m;
    return Status::OK();
  };
  if (live_stripe_held) {
    // The live cache is the truth for the live generation's key: it holds
    // pending records the index has not seen yet.
    const ImageState::LiveCache& cache = img.live_cache[block % ImageState::kStripes];
    auto hit = cache.gen == gen ? cache.records.find(block) : cache.records.end();
    if (hit != cache.records.end()) {
      SNAPDISK_RETURN_IF_ERROR(use(hit->second.rec, img.id));
      if (!want) return Status::OK();
      seek_gen = gen - 1;  // older versions come from the index
    }
  }
  while (want) {
    auto view = cur->View();
    const EpochRt& ep = view->EpochFor(g);
    const uint64_t top = cur == &img ? std::min(g, seek_gen) : g;
    // Sealed (not yet indexed) versions of this block in the window, newest
    // first: each supersedes the index's record of the same generation.
    // `sealed` keeps the batches alive while `from_sealed` points into them.
    const ImageState::SealedList sealed = cur->Sealed();
    std::vector<std::pair<uint64_t, const VersionRecord*>> from_sealed;
    for (const auto& batch : sealed) {
      if (batch->gen < ep.e.start_gen || batch->gen > top) continue;
      const auto& map = batch->records[block % ImageState::kStripes];
      if (auto hit = map.find(block); hit != map.end()) from_sealed.emplace_back(batch->gen, &hit->second.rec);
    }
    std::sort(from_sealed.begin(), from_sealed.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    size_t next_sealed = 0;
    auto apply = [&](const VersionRecord& rec) { return use(rec, cur->id); };
    std::string prefix = keys::BlockPrefix(cur->id, block);
    std::unique_ptr<rocksdb::Iterator> it(index_.db->NewIterator(ro, index_.versions));
    for (it->Seek(keys::Version(cur->id, block, top)); it->Valid() && want; it->Next()) {
      if (!it->key().starts_with(prefix)) break;
      keys::VersionKey vk;
      if (!keys::ParseVersion(it->key().ToStringView(), &vk)) return Status::Corruption("damaged version key");
      if (vk.generation < ep.e.start_gen) break;
      while (want && next_sealed < from_sealed.size() && from_sealed[next_sealed].first > vk.generation)
        SNAPDISK_RETURN_IF_ERROR(apply(*from_sealed[next_sealed++].second));
      if (!want) break;
      if (next_sealed < from_sealed.size() && from_sealed[next_sealed].first == vk.generation) {
        SNAPDISK_RETURN_IF_ERROR(apply(*from_sealed[next_sealed++].second));
        continue;
      }
      VersionRecord rec;
      SNAPDISK_RETURN_IF_ERROR(VersionRecord::Decode(it->value().ToStringView(), pieces_, &rec));
      SNAPDISK_RETURN_IF_ERROR(apply(rec));
    }
    SNAPDISK_RETURN_IF_ERROR(FromRocks(it->status(), "scan block versions"));
    while (want && next_sealed < from_sealed.size()) SNAPDISK_RETURN_IF_ERROR(apply(*from_sealed[next_sealed++].second));
    if (!want) break;
    if (!ep.has_base()) break;
    // Only the base's first base_limit bytes show through.
    uint64_t limit = ep.e.base_limit;
    if (limit <= block_start) break;
    if (limit < block_start + block_size_) {
      uint64_t rel = limit - block_start;
      uint32_t first_gone = static_cast<uint32_t>((rel + kSubBlockSize - 1) / kSubBlockSize);
      if (first_gone < pieces_) {
        uint64_t gone = want & MaskRange(first_gone, pieces_ - 1);
        if (buf)
          for (uint32_t p = first_gone; p < pieces_; ++p)
            if (gone >> p & 1) std::memset(buf + size_t{p} * kSubBlockSize, 0, kSubBlockSize);
        want &= ~gone;
      }
      if (rel % kSubBlockSize && (want >> (rel / kSubBlockSize) & 1)) cut = std::min(cut, limit);
    }
    cur = ep.Next(cur, &hold);
    g = ep.e.base_gen;
  }
  if (buf) {
    for (uint32_t p = 0; p < pieces_; ++p)
      if (want >> p & 1) std::memset(buf + size_t{p} * kSubBlockSize, 0, kSubBlockSize);
    if (cut < block_start + block_size_) {
      uint64_t rel = cut - block_start;
      uint64_t piece_end = (rel / kSubBlockSize + 1) * kSubBlockSize;
      std::memset(buf + rel, 0, piece_end - rel);
    }
  }
  return Status::OK();
}

void StoreImpl::Prefetch(ImageState& img, uint64_t gen, bool live, uint64_t size, uint64_t from, uint64_t to) {
  to = std::min(to, size);
  if (to <= from) return;
  std::shared_lock<WriterPreferringMutex> io;
  if (live) io = std::shared_lock(img.io_mu);
  if (live) gen = img.LiveGen();
  PrefetchRange(img, gen, live, from, to);
}

Status StoreImpl::ReadRange(ImageState& img, uint64_t gen, bool live, uint64_t size, uint64_t offset,
                            size_t len, char* buf, uint64_t prefetch_from, uint64_t prefetch_to) {
  if (offset >= size) return Status::OK();
  len = static_cast<size_t>(std::min<uint64_t>(len, size - offset));
  std::shared_lock<WriterPreferringMutex> io;
  if (live) io = std::shared_lock(img.io_mu);
  if (live) gen = img.LiveGen();
  // The blocks below are read one after another, and each version's
  // pieces by one pread per span. An image with many snapshots holds its
  // blocks' pieces in scattered slots, and those small reads would reach
  // the device one at a time: hand the device all of them first.
  prefetch_to = std::min(prefetch_to, size);
  if (prefetch_to > prefetch_from) PrefetchRange(img, gen, live, prefetch_from, prefetch_to);
  char* scratch = ScratchBlock(block_size_);
  size_t done = 0;
  while (done < len) {
    uint64_t pos = offset + done;
    uint64_t block = pos / block_size_;
    uint32_t in = static_cast<uint32_t>(pos % block_size_);
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(block_size_ - in, len - done));
    uint64_t want = MaskRange(in / kSubBlockSize, (in + n - 1) / kSubBlockSize);
    uint64_t stored = 0;
    // A whole block is read straight into the caller's buffer; a part of
    // one goes through the scratch block (ReadBlock fills whole pieces).
    const bool whole = in == 0 && n == block_size_;
    {
      std::unique_lock<std::mutex> stripe;
      if (live) stripe = std::unique_lock(img.StripeFor(block));
      SNAPDISK_RETURN_IF_ERROR(ReadBlock(img, gen, block, want, whole ? buf + done : scratch, &stored, live));
    }
    if (!whole) std::memcpy(buf + done, scratch + in, n);
    done += n;
  }
  return Status::OK();
}

Status StoreImpl::WriteBlock(ImageState& img, uint64_t live_gen, uint64_t block, uint32_t off,
                             const char* data, uint32_t len, std::vector<uint64_t*>* marked,
                             std::vector<uint64_t>* retired) {
  ImageState::LiveCache& cache = img.live_cache[block % ImageState::kStripes];
  if (cache.gen != live_gen) {
    // Every generation change first flushes pending records (FlushPending)
    // or seals them (SealLiveCache), under an exclusive io_mu, so nothing
    // pending is dropped here.
    cache.records.clear();
    cache.pending_blocks.clear();
    cache.inflight_blocks.clear();
    cache.pending_entries = 0;
    cache.gen = live_gen;
    cache.complete = img.FreshGen(live_gen);
  }
  // A cached entry is updated in place (no copy: this is the 4 KiB write
  // path); every failure before the data write leaves it untouched, and a
  // failed data write puts back what it changed (see below). `hit` stays
  // valid to the end: nothing below inserts into or erases from this
  // stripe's map before the final store.
  ImageState::CachedRecord fresh;
  auto hit = cache.records.find(block);
  const bool cached = hit != cache.records.end();
  ImageState::CachedRecord& entry = cached ? hit->second : fresh;
  bool exists = cached;
  if (!cached) {
    if (!cache.complete)
      SNAPDISK_RETURN_IF_ERROR(ReadVersion(keys::Version(img.id, block, live_gen), &entry.rec, &exists));
    entry.indexed = exists;
  }
  VersionRecord& rec = entry.rec;
  if (!exists) {
    rec = VersionRecord();
    rec.crc.assign(pieces_, 0);
  }
  const uint64_t data_before = rec.data, present_before = rec.present;

  // Assemble the touched 4 KiB pieces; partial pieces need their current bytes.
  const uint32_t first = off / kSubBlockSize, last = (off + len - 1) / kSubBlockSize;
  const uint64_t touched = MaskRange(first, last);
  // `pieces` points at piece `first` of the new bytes: the caller's buffer
  // itself when the write covers whole pieces (no copy), else a scratch
  // block assembled from the current bytes and the new ones.
  const char* pieces = data;
  uint64_t partial = 0;
  if (off % kSubBlockSize) partial |= uint64_t{1} << first;
  if ((off + len) % kSubBlockSize) partial |= uint64_t{1} << last;
  if (partial) {
    char* piece_buf = ScratchBlock(block_size_);
    thread_local std::vector<char> cur;
    cur.resize(block_size_);
    uint64_t ignored = 0;
    SNAPDISK_RETURN_IF_ERROR(ReadBlock(img, live_gen, block, partial, cur.data(), &ignored, true));
    for (uint32_t p = first; p <= last; ++p)
      if (partial >> p & 1)
        std::memcpy(piece_buf + size_t{p} * kSubBlockSize, cur.data() + size_t{p} * kSubBlockSize, kSubBlockSize);
    std::memcpy(piece_buf + off, data, len);
    pieces = piece_buf + size_t{first} * kSubBlockSize;
  }
  auto piece = [&](uint32_t p) { return pieces + size_t{p - first} * kSubBlockSize; };

  uint64_t nonzero = 0;
  for (uint32_t p = first; p <= last; ++p)
    if (!IsZeroPiece(piece(p))) nonzero |= uint64_t{1} << p;

  if (!exists && nonzero == 0) {
    // An all-zero write over pieces that already read as zeros stores
    // nothing, not even a record.
    uint64_t stored = 0;
    SNAPDISK_RETURN_IF_ERROR(ReadBlock(img, live_gen, block, touched, nullptr, &stored, true));
    if (stored == 0) return Status::OK();
  }

  // A version's first data decides where its bytes live: a whole-block
  // write gets a slot of the block file (bulk data stays in block order),
  // anything smaller goes to the piece log (piece_log.h says why). A
  // whole-block write into a piece log version moves it to a fresh slot, so
  // that a block rewritten in bulk after small writes (a restore, a copy)
  // reads back in one request again instead of one per scattered unit.
  const bool new_slot = nonzero && rec.slot == kNoSlot;
  const bool whole_block = touched == MaskRange(0, pieces_ - 1);
  const bool to_slot = nonzero && whole_block && rec.logged();

  // Overwriting or punching bytes of an indexed version in place: log it
  // first, so that a crash before the new record is flushed and synced is
  // repaired at open (RecoverDirty) instead of surfacing as a checksum
  // error. A version the index has never seen needs no trace: a crash
  // forgets it and frees its slot.
  const uint64_t in_place = to_slot ? 0 : touched & rec.data;
  if (entry.indexed && in_place) {
    std::lock_guard l(img.dirty_mu);
    ImageState::DirtyShard& shard = img.DirtyFor(block);
    auto [it, inserted] = shard.try_emplace(ImageState::DirtyKey{block, live_gen}, kInProgress);
    if (inserted) {
      Status s = dirty_log_.Append(keys::VersionBytes(img.id, block, live_gen));
      if (!s.ok()) {
        shard.erase(it);
        return s;
      }
      if (dirty_log_.WantsGrowth()) QueueLogGrowth();
      img.dirty_keys.push_back(it->first);
    } else {
      it->second = kInProgress;
    }
    // The entry stays put until WriteRange stamps it: a sync erases only
    // stamped entries, and no other write inserts into this shard while
    // we hold the block's stripe (DirtyShard).
    marked->push_back(&it->second);
  }

  // The checksums WritePieces may change, to put back if it fails.
  std::array<uint32_t, 64> saved_crc;
  std::copy(rec.crc.begin() + first, rec.crc.begin() + last + 1, saved_crc.begin());
  auto undo = [&] { std::copy(saved_crc.begin(), saved_crc.begin() + (last - first + 1), rec.crc.begin() + first); };
  if (new_slot) rec.slot = whole_block ? slots_.Allocate() : kLogSlot;
  // Moving to a slot: the units stay with the old record until the write
  // succeeds; the new slot starts empty (every piece a hole).
  const uint64_t data_kept = rec.data;
  absl::InlinedVector<uint64_t, 2> units_kept;
  const uint64_t unit_mask_kept = rec.unit_mask;
  if (to_slot) {
    units_kept = std::move(rec.units);
    rec.ClearUnits();
    rec.slot = slots_.Allocate();
    rec.data = 0;
  }
  Status io = WritePieces(rec, first, last, nonzero, pieces);
  if (!io.ok()) {
    if (to_slot) {
      slots_.Free(rec.slot);
      rec.slot = kLogSlot;
      rec.units = std::move(units_kept);
      rec.unit_mask = unit_mask_kept;
      rec.data = data_kept;
      undo();
      return io;
    }
    if (new_slot) {
      if (rec.in_block_file()) slots_.Free(rec.slot);
      rec.slot = kNoSlot;
      rec.ClearUnits();  // WritePieces took back the units it gave
      undo();
      return io;
    }
    if (!in_place) {
      undo();
      return io;
    }
    // Some pieces of this version may hold new bytes now: record the
    // checksums of what is on disk, so that it reads as old or new data
    // rather than as damage. (The dirty log still lists it.)
    std::vector<char> piece(kSubBlockSize);
    for (uint32_t p = first; p <= last; ++p) {
      if (!(in_place >> p & 1)) continue;
      if (!ReadStoredPiece(rec, p, piece.data()).ok()) continue;
      rec.crc[p] = PieceChecksum(piece.data());
    }
  } else {
    rec.data = (rec.data & ~touched) | nonzero;
    rec.present |= touched;
  }
  // Only a record that changed nothing but checksums of a version the index
  // maps may have its sync left to the dirty log (SyncImages).
  if (!entry.indexed || new_slot || to_slot || rec.data != data_before || rec.present != present_before)
    entry.maps_changed = true;
  if (to_slot)
    retired->insert(retired->end(), units_kept.begin(), units_kept.end());
  if (entry.pending == 0) {
    img.pending_records.fetch_add(1);
    ++cache.pending_entries;
    cache.pending_blocks.push_back(block);
  }
  entry.pending = ++flush_ticket_;
  if (cached) return io;
  if (cache.records.size() >= ImageState::kLiveCachePerStripe) {
    // Evict what the index already has; pending entries stay (WriteRange
    // flushes the image when too many are pending).
    absl::erase_if(cache.records, [](const auto& kv) { return kv.second.pending == 0; });
    cache.complete = false;  // the index alone has those now
  }
  cache.records.emplace(block, std::move(fresh));
  return io;
}

Status StoreImpl::WritePieces(VersionRecord& rec, uint32_t first, uint32_t last, uint64_t nonzero,
                              const char* pieces) {
  if (rec.logged()) return log_.Write(rec, first, last, nonzero, pieces);
  const uint64_t touched = MaskRange(first, last);
  SNAPDISK_RETURN_IF_ERROR(ForEachRun(nonzero, first, last, [&](uint32_t p, uint32_t q) {
    // Pieces this version has no data in are holes of the file (a new slot,
    // or never written, or punched): writing them allocates blocks.
    const bool fills_hole = (MaskRange(p, q) & ~rec.data) != 0;
    SNAPDISK_RETURN_IF_ERROR(data_.Write(rec.slot, p * kSubBlockSize, pieces + size_t{p - first} * kSubBlockSize,
                                         (q - p + 1) * kSubBlockSize, fills_hole));
    for (uint32_t r = p; r <= q; ++r) rec.crc[r] = PieceChecksum(pieces + size_t{r - first} * kSubBlockSize);
    return Status::OK();
  }));
  const uint64_t punched = touched & ~nonzero & rec.data;
  return ForEachRun(punched, first, last, [&](uint32_t r, uint32_t q) {
    SNAPDISK_RETURN_IF_ERROR(data_.Punch(rec.slot, r * kSubBlockSize, (q - r + 1) * kSubBlockSize));
    for (uint32_t z = r; z <= q; ++z) rec.crc[z] = 0;
    return Status::OK();
  });
}

Status StoreImpl::WriteRange(ImageState& img, uint64_t offset, const char* data, uint64_t len, bool zeros) {
  SNAPDISK_RETURN_IF_ERROR(Writable());
  if (len == 0) return Status::OK();
  if (offset > options_.max_image_size || len > options_.max_image_size - offset)
    return Status::TooLarge(fmt::format("write ends at {} bytes, past the image size limit of {} bytes",
                                        offset + len, options_.max_image_size));
  std::shared_lock io(img.io_mu);
  const uint64_t live_gen = img.LiveGen();
  // Per thread, reused: the 4 KiB write path allocates nothing.
  thread_local std::vector<uint64_t*> marked;  // dirty-set entries this chunk overwrote
  thread_local std::vector<uint64_t> retired;  // piece log units this chunk's blocks left
  uint64_t done = 0;
  while (done < len) {
    const uint64_t pos = offset + done;
    const uint64_t first_block = pos / block_size_;
    const uint64_t end = std::min(offset + len, (first_block + kMaxChunkBlocks) * block_size_);
    const uint64_t last_block = (end - 1) / block_size_;
    // Lock the stripes of this chunk's blocks in ascending stripe order
    // (consecutive blocks have distinct stripes: kMaxChunkBlocks <= kStripes).
    static_assert(kMaxChunkBlocks <= ImageState::kStripes);
    std::array<size_t, kMaxChunkBlocks> stripes;
    size_t nstripes = 0;
    for (uint64_t b = first_block; b <= last_block; ++b) stripes[nstripes++] = b % ImageState::kStripes;
    std::sort(stripes.begin(), stripes.begin() + nstripes);
    std::array<std::unique_lock<std::mutex>, kMaxChunkBlocks> locks;
    for (size_t i = 0; i < nstripes; ++i) locks[i] = std::unique_lock(img.stripes[stripes[i]]);

    marked.clear();
    retired.clear();
    uint64_t p = pos;
    Status st;
    while (p < end && st.ok()) {
      uint64_t block = p / block_size_;
      uint32_t in = static_cast<uint32_t>(p % block_size_);
      uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(block_size_ - in, end - p));
      const char* src = zeros ? ZeroBlock(block_size_) : data + (p - offset);
      st = WriteBlock(img, live_gen, block, in, src, n, &marked, &retired);
      p += n;
    }
    if (!marked.empty() || !retired.empty()) {
      // The writes of this chunk are complete: the next sync that starts
      // after this point makes them (and the records that no longer name
      // the retired units) durable.
      std::lock_guard l(img.dirty_mu);
      uint64_t seq = ++write_seq_;
      // (A failed write's entries stay in progress: listed until a reopen.)
      if (st.ok())
        for (uint64_t* stamp : marked) *stamp = seq;
      for (uint64_t u : retired) img.retired_units.emplace_back(seq, u);
    }
    SNAPDISK_RETURN_IF_ERROR(st);
    done = end - offset;
  }
  img.change_seq.fetch_add(1);
  const uint64_t pending = img.pending_records.load();
  if (pending >= kMaxPendingRecords) {
    SNAPDISK_RETURN_IF_ERROR(FlushPending(img));
  } else if (pending >= kFlushSoonRecords) {
    QueueFlush(img);
  }
  if (!zeros && offset + len > img.size.load()) {
    std::lock_guard l(meta_mu_);
    auto it = nodes_.find(img.id);
    if (it != nodes_.end() && offset + len > it->second.size) {
      NodeRecord grown = it->second;
      grown.size = offset + len;
      grown.mtime = grown.ctime = NowTimestamp();
      rocksdb::WriteBatch b;
      PutNode(&b, grown);
      // The size changes only once it is in the index: a failed write
      // leaves the image as it was.
      SNAPDISK_RETURN_IF_ERROR(Commit(&b, false, "grow image"));
      it->second = grown;
      img.size = offset + len;
    }
  }
  return Status::OK();
}

void StoreImpl::QueueFlush(ImageState& img) {
  // Every write past the threshold asks: a plain load first, so that they
  // do not all take the flag's cache line exclusively.
  if (img.flush_queued.load(std::memory_order_relaxed) || img.flush_queued.exchange(true)) return;
  {
    std::lock_guard l(flusher_mu_);
    flusher_queue_.push_back(img.id);
  }
  flusher_cv_.notify_one();
}

Status StoreImpl::SealLiveCache(ImageState& img, uint64_t gen, std::shared_ptr<const ImageState::SealedBatch>* out) {
  out->reset();
  // First the seal log, so that a kill -9 cannot lose what the snapshot
  // shows: the pending entries, and those a flush under way has taken.
  // There is no wait for that flush (it can take a millisecond): its taken
  // entries move with the rest and count as moved (pending_entries); its
  // commit then finds them gone and leaves them to the sealed batch, which
  // indexes them again, with their newest value, after it (flush_mu).
  std::vector<std::pair<uint64_t, std::string>> logged;
  for (size_t s = 0; s < ImageState::kStripes; ++s) {
    std::lock_guard l(img.stripes[s]);
    const ImageState::LiveCache& cache = img.live_cache[s];
    if (cache.gen != gen) continue;  // nothing cached for this generation
    for (const auto* list : {&cache.pending_blocks, &cache.inflight_blocks})
      for (uint64_t block : *list)
        if (auto it = cache.records.find(block); it != cache.records.end() && it->second.pending != 0)
          logged.emplace_back(block, it->second.rec.Encode());
  }
  if (logged.empty()) return Status::OK();  // all indexed already: the index alone is the truth
  auto batch = std::make_shared<ImageState::SealedBatch>();
  batch->gen = gen;
  SNAPDISK_RETURN_IF_ERROR(seal_log_.AppendBatch(img.id, gen, logged, &batch->log_seq));
  uint64_t moved_pending = 0;
  for (size_t s = 0; s < ImageState::kStripes; ++s) {
    std::lock_guard l(img.stripes[s]);
    ImageState::LiveCache& cache = img.live_cache[s];
    if (cache.gen != gen) continue;
    moved_pending += cache.pending_entries;
    batch->records[s] = std::move(cache.records);
    cache.records.clear();
    cache.complete = false;
    cache.pending_blocks.clear();
    cache.inflight_blocks.clear();
    cache.pending_entries = 0;
  }
  img.pending_records.fetch_sub(moved_pending);
  img.AddSealed(batch);
  *out = std::move(batch);
  return Status::OK();
}

void StoreImpl::UnsealLiveCache(ImageState& img, const std::shared_ptr<const ImageState::SealedBatch>& batch) {
  if (!batch) return;
  std::lock_guard flush(img.flush_mu);
  const ImageState::SealedList sealed = img.Sealed();
  if (std::find(sealed.begin(), sealed.end(), batch) == sealed.end()) return;  // indexed meanwhile
  uint64_t restored = 0;
  for (size_t s = 0; s < ImageState::kStripes; ++s) {
    std::lock_guard l(img.stripes[s]);
    ImageState::LiveCache& cache = img.live_cache[s];
    cache.gen = batch->gen;
    cache.complete = false;  // whatever was evicted before the seal is in the index only
    cache.records = batch->records[s];  // a copy: readers may still hold the batch
    cache.pending_blocks.clear();
    for (const auto& [block, entry] : cache.records)
      if (entry.pending != 0) cache.pending_blocks.push_back(block);
    cache.pending_entries = cache.pending_blocks.size();
    restored += cache.pending_entries;
  }
  img.pending_records.fetch_add(restored);
  img.RemoveSealed({batch});
  // The live image may change these records again: the logged copy must
  // never be replayed over newer ones.
  if (Status s = seal_log_.MarkDone(batch->log_seq); !s.ok()) {
    failed_sync_ = true;  // refuse writes rather than risk it
  }
}

Status StoreImpl::FlushPending(ImageState& img, FlushBy by) {
  const bool yield = by == FlushBy::kFlusher;
  std::lock_guard flush(img.flush_mu);
  if (!img.HasUnindexed()) return Status::OK();
  SNAPDISK_RETURN_IF_ERROR(IndexHealthy());
  // Sealed batches first (older generations). Their entries stay readable
  // from the batch until the index has them; then the batch is dropped.
  if (const ImageState::SealedList sealed = img.Sealed(); !sealed.empty()) {
    std::vector<IndexPut> puts;
    for (const auto& sb : sealed)
      for (const auto& map : sb->records)
        for (const auto& [block, entry] : map)
          if (entry.pending != 0) puts.push_back({block, sb->gen, entry.rec.Encode()});
    SNAPDISK_RETURN_IF_ERROR(WriteInKeyOrder(img.id, &puts, index_.versions, yield, [&](rocksdb::WriteBatch* b) {
      return Commit(b, false, "write block index");
    }));
    // Indexed (the index's log survives kill -9 as the seal log does): the
    // logged copies are done with. A batch whose marker failed stays sealed
    // and is indexed and marked again next time.
    for (const auto& sb : sealed) SNAPDISK_RETURN_IF_ERROR(seal_log_.MarkDone(sb->log_seq));
    img.RemoveSealed(sealed);
  }
  if (img.pending_records.load() == 0) return Status::OK();
  struct Taken {
    size_t stripe;
    uint64_t gen, block, ticket;
  };
  bool maps_changed = false;
  std::vector<Taken> taken;
  std::vector<IndexPut> puts;
  taken.reserve(img.pending_records.load());
  puts.reserve(img.pending_records.load());
  for (size_t s = 0; s < ImageState::kStripes; ++s) {
    std::lock_guard l(img.stripes[s]);
    ImageState::LiveCache& cache = img.live_cache[s];
    for (uint64_t block : cache.pending_blocks) {
      const ImageState::CachedRecord& entry = cache.records.at(block);
      taken.push_back({s, cache.gen, block, entry.pending});
      puts.push_back({block, cache.gen, entry.rec.Encode()});
      maps_changed |= entry.maps_changed;
    }
    // Taken out of the list while the commit runs; what stays pending
    // (a failed commit, or written again meanwhile) is put back below.
    cache.inflight_blocks = std::move(cache.pending_blocks);
    cache.pending_blocks.clear();
  }
  if (taken.empty()) return Status::OK();
  Status st = WriteInKeyOrder(img.id, &puts, index_.versions, yield, [&](rocksdb::WriteBatch* b) {
    return WriteIndex(b, false, "write block index");
  });
  // Counted before flush_mu is released: a sync's own FlushPending waits
  // for this one, then sees the count (SyncImages).
  if (maps_changed) index_changes_.fetch_add(1);
  // `taken` is in stripe order: one lock per stripe for its entries, which
  // also clears the stripe's in-flight list (fewer lock round trips that a
  // snapshot sealing the caches would wait behind).
  for (size_t i = 0; i < taken.size();) {
    const size_t stripe = taken[i].stripe;
    std::lock_guard l(img.stripes[stripe]);
    ImageState::LiveCache& cache = img.live_cache[stripe];
    for (; i < taken.size() && taken[i].stripe == stripe; ++i) {
      const Taken& t = taken[i];
      if (cache.gen != t.gen) continue;  // the generation ended meanwhile: a sealed batch has it
      auto it = cache.records.find(t.block);
      if (it == cache.records.end() || it->second.pending == 0) continue;
      if (st.ok() && it->second.pending == t.ticket) {
        it->second.pending = 0;
        it->second.indexed = true;
        it->second.maps_changed = false;
        --cache.pending_entries;
        img.pending_records.fetch_sub(1);
      } else {
        cache.pending_blocks.push_back(t.block);  // still newer than the index
      }
    }
    cache.inflight_blocks.clear();
  }
  return st;
}

void StoreImpl::QueueLogGrowth() {
  // Called by every append until the growth is done: a plain load first.
  if (grow_log_.load(std::memory_order_relaxed) || grow_log_.exchange(true)) return;
  { std::lock_guard l(flusher_mu_); }  // the flusher is before its check or waiting: no lost wakeup
  flusher_cv_.notify_one();
}

void StoreImpl::FlusherThread() {
  std::unique_lock l(flusher_mu_);
  while (!flusher_stop_) {
    if (grow_log_.exchange(false)) {
      l.unlock();
      // A failure is left to the append that then has to grow the log
      // itself, which reports it.
      (void)dirty_log_.GrowAhead();
      l.lock();
      continue;
    }
    if (flusher_queue_.empty()) {
      // Idle: every few seconds, hand all pending records to the index
      // (like a kernel's periodic writeback; it does not sync).
      if (flusher_cv_.wait_for(l, std::chrono::seconds(5)) == std::cv_status::timeout) {
        l.unlock();
        (void)FlushAllPending(FlushBy::kFlusher);
        l.lock();
      }
      continue;
    }
    NodeId id = flusher_queue_.front();
    flusher_queue_.pop_front();
    l.unlock();
    std::shared_ptr<ImageState> st;
    {
      std::lock_guard m(meta_mu_);
      st = StateLocked(id);
    }
    if (st) {
      st->flush_queued = false;
      (void)FlushPending(*st, FlushBy::kFlusher);  // a failure leaves them pending; fsync reports it
    }
    l.lock();
  }
}

Status StoreImpl::FlushAllPending(FlushBy by) {
  std::vector<std::shared_ptr<ImageState>> states;
  {
    std::lock_guard l(meta_mu_);
    for (const auto& [id, st] : states_)
      if (st->HasUnindexed()) states.push_back(st);
  }
  for (auto& st : states) SNAPDISK_RETURN_IF_ERROR(FlushPending(*st, by));
  return Status::OK();
}

Status StoreImpl::SyncImage(ImageState& img) { return SyncImages({&img}, /*checkpoint=*/false); }

Status StoreImpl::SyncImages(const std::vector<ImageState*>& images, bool checkpoint) {
  SNAPDISK_RETURN_IF_ERROR(Writable());
  const uint64_t seq = write_seq_.load();
  SNAPDISK_RETURN_IF_ERROR(IndexHealthy());
  // The common fsync of a disk image: every write since the last checkpoint
  // overwrote pieces of versions the index already maps, durably. Then the
  // index's unsynced records only carry new checksums, and the dirty log,
  // which lists those versions, can stand in for them: after a power loss
  // RecoverDirty recomputes their checksums from the synced bytes. So the
  // data file's fdatasync, after the log's pages were written back, is the
  // one device flush (the index log's own sync cost one more round trip to
  // the device). The records still reach the index (FlushPending, and the
  // flusher) but are made durable, and the log's entries released, by the
  // next checkpoint: any sync that finds other index changes, SyncAll, or
  // one that finds the log longer than kMaxListedForFastSync (a bound on
  // the work of the next open's recovery and on memory).
  constexpr size_t kMaxListedForFastSync = 16384;
  const bool may_skip_index = !checkpoint && dirty_log_.Listed() <= kMaxListedForFastSync;
  if (may_skip_index) dirty_log_.StartWriteback();
  // Data first, then the index: a synced record never names unsynced data.
  // The data's pages start on their way to the device while the pending
  // records go into the index log (written, not synced), and the data is
  // durable, or written back, before the log is synced. Records of this
  // sync name data written before they were pending, so it is in that
  // writeback. When the data only needed writing back (pure overwrites),
  // the index log's sync below is what flushes the device cache for both.
  data_.StartWriteback();
  log_.StartWriteback();
  for (ImageState* img : images) SNAPDISK_RETURN_IF_ERROR(FlushPending(*img));
  // Read after the flushes: what they (or a flush they waited for) wrote is
  // counted, and before the log sync below: what it counts, that sync covers.
  const uint64_t changes = index_changes_.load();
  if (may_skip_index && changes == index_changes_synced_.load()) {
    Status st = dirty_log_.MakeDurable(dirty_log_flush_shared_);
    // The piece log's overwrites only need writing back: the block file's
    // fdatasync flushes the device cache for both (same file system).
    bool log_flushed = true;
    if (st.ok()) st = log_.SyncBeforeIndex(&log_flushed);
    if (st.ok()) st = data_.Sync();
    if (!st.ok()) failed_sync_ = true;  // as below: what it covered may be gone
    return st;
  }
  bool data_flushed = true, log_flushed = true;
  Status st = data_.SyncBeforeIndex(&data_flushed);
  if (st.ok()) st = log_.SyncBeforeIndex(&log_flushed);
  if (!st.ok()) {
    // A failed fdatasync may have dropped dirty pages: nothing written since
    // the last good sync can be trusted to be on disk. Refuse further writes.
    failed_sync_ = true;
    return st;
  }
  if (!data_flushed || !log_flushed) {
    // RocksDB skips the log's fdatasync when nothing was appended since the
    // last one, and then no flush would reach the device: append something.
    rocksdb::WriteBatch mark;
    mark.Put(index_.meta, rocksdb::Slice(keys::kSyncMarkKey.data(), keys::kSyncMarkKey.size()), std::to_string(seq));
    // Not counted in index_changes_: the sync just below covers it.
    SNAPDISK_RETURN_IF_ERROR(WriteIndex(&mark, false, "mark index sync"));
  }
  st = NoteIndexResult(index_.db->SyncWAL(), "sync index log");
  if (!st.ok()) {
    // As for the data: what the log held may not be on disk, and a later
    // sync cannot tell. Refuse further writes until the store is reopened.
    failed_sync_ = true;
    return st;
  }
  for (uint64_t synced = index_changes_synced_.load();
       synced < changes && !index_changes_synced_.compare_exchange_weak(synced, changes);) {
  }
  // In-place writes that completed before this sync are now durable with
  // their checksums: drop them from the dirty log.
  for (ImageState* img : images) {
    std::vector<keys::VersionKeyBytes> done;
    std::lock_guard l(img->dirty_mu);
    // Entries stamped after `seq` (or still in progress) stay for a later sync.
    std::erase_if(img->dirty_keys, [&](const ImageState::DirtyKey& k) {
      ImageState::DirtyShard& shard = img->DirtyFor(k.block);
      auto it = shard.find(k);
      if (it->second > seq) return false;
      done.push_back(keys::VersionBytes(img->id, k.block, k.gen));
      shard.erase(it);
      return true;
    });
    // Under dirty_mu: a writer re-dirtying one of these keys must find it
    // released, so that it logs it again.
    if (!done.empty()) dirty_log_.Release(done);
  }
  FreeRetiredUnits(images, seq);
  return Status::OK();
}

void StoreImpl::FreeRetiredUnits(const std::vector<ImageState*>& images, uint64_t seq) {
  std::vector<uint64_t> freed;
  for (ImageState* img : images) {
    std::lock_guard l(img->dirty_mu);
    std::erase_if(img->retired_units, [&](const std::pair<uint64_t, uint64_t>& r) {
      if (r.first > seq) return false;
      freed.push_back(r.second);
      return true;
    });
  }
  log_.Free(&freed, [] {});
}

uint64_t StoreImpl::NextBlockWithVersion(NodeId image, uint64_t from, uint64_t end, uint64_t min_gen,
                                         uint64_t max_gen) {
  rocksdb::ReadOptions ro;
  ro.total_order_seek = true;
  std::unique_ptr<rocksdb::Iterator> it(index_.db->NewIterator(ro, index_.versions));
  // Newest first within a block: seeking to (block, ~max_gen) lands on the
  // newest version <= max_gen; if it is older than min_gen, no version of
  // this block is in the window, so jump to the next block.
  uint64_t block = from;
  while (block < end) {
    it->Seek(keys::Version(image, block, max_gen));
    if (!it->Valid()) break;
    keys::VersionKey vk;
    if (!keys::ParseVersion(it->key().ToStringView(), &vk) || vk.image != image || vk.block >= end) break;
    if (vk.block == block && vk.generation >= min_gen) return block;
    block = vk.block == block ? block + 1 : vk.block;
  }
  return end;
}

Status StoreImpl::SeekRange(ImageState& img, uint64_t gen, uint64_t size, uint64_t offset,
                            SeekWhence whence, uint64_t* result) {
  // The scan reads the index. A snapshot that ends `gen` while it runs may
  // seal records of `gen` away from the index: then scan again (the flush
  // at its start indexes them, and `gen`, no longer live, is sealed once).
  const bool was_live = img.View()->live_gen == gen;
  Status s = SeekRangeOnce(img, gen, size, offset, whence, result);
  if (was_live && img.View()->live_gen != gen) s = SeekRangeOnce(img, gen, size, offset, whence, result);
  return s;
}

Status StoreImpl::SeekRangeOnce(ImageState& img, uint64_t gen, uint64_t size, uint64_t offset,
                                SeekWhence whence, uint64_t* result) {
  if (offset >= size) return Status::OutOfRange("seek offset is at or past the end of the image");
  SNAPDISK_RETURN_IF_ERROR(FlushPending(img));  // the live generation is read from the index
  const uint64_t nblocks = (size + block_size_ - 1) / block_size_;
  uint64_t block = offset / block_size_;
  while (block < nblocks) {
    if (whence == SeekWhence::kData) {
      // Skip ahead to the next block any level of the image's chain has a version of.
      uint64_t next = nblocks;
      ForEachChainLevel(img, gen, nblocks, [&](NodeId id, uint64_t min_gen, uint64_t max_gen, uint64_t limit) {
        next = std::min(next, NextBlockWithVersion(id, block, std::min(next, limit), min_gen, max_gen));
      });
      if (next >= nblocks) return Status::OutOfRange("no data past the offset");
      block = std::max(block, next);
    }
    uint64_t stored = 0;
    SNAPDISK_RETURN_IF_ERROR(ReadBlock(img, gen, block, MaskRange(0, pieces_ - 1), nullptr, &stored));
    uint32_t from = block == offset / block_size_ ? static_cast<uint32_t>((offset % block_size_) / kSubBlockSize) : 0;
    for (uint32_t p = from; p < pieces_; ++p) {
      bool has = stored >> p & 1;
      if ((whence == SeekWhence::kData) == has) {
        uint64_t at = std::max(offset, block * block_size_ + uint64_t{p} * kSubBlockSize);
        if (at >= size) break;
        *result = at;
        return Status::OK();
      }
    }
    ++block;
  }
  if (whence == SeekWhence::kHole) {
    *result = size;
    return Status::OK();
  }
  return Status::OutOfRange("no data past the offset");
}

}  // namespace snapdisk::engine
