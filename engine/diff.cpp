// Store::Diff: which 4 KiB ranges changed between two views of an image.
#include <algorithm>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "keys.h"
#include "store_impl.h"

namespace snapdisk::engine {

namespace {

void AddRange(std::vector<Store::Extent>* out, uint64_t off, uint64_t len) {
  if (len == 0) return;
  if (!out->empty() && out->back().offset + out->back().length == off) {
    out->back().length += len;
    return;
  }
  out->push_back({off, len});
}

}  // namespace

Status StoreImpl::Diff(NodeId image, SnapshotId from, SnapshotId to, std::vector<Extent>* extents) {
  // The scans read the index. A snapshot taken while they run ends the live
  // generation and may seal records of it away from the index; then the
  // answer is computed again for the newer live view (a few tries).
  Status s;
  for (int attempt = 0; attempt < 4; ++attempt) {
    std::shared_ptr<ImageState> st;
    uint64_t to_gen = 0;
    s = DiffOnce(image, from, to, extents, &st, &to_gen);
    if (!s.ok() || to != kLive || st->View()->live_gen == to_gen) return s;
  }
  return s;
}

Status StoreImpl::DiffOnce(NodeId image, SnapshotId from, SnapshotId to, std::vector<Extent>* extents,
                           std::shared_ptr<ImageState>* st_out, uint64_t* to_gen_out) {
  extents->clear();
  std::shared_ptr<ImageState>& st = *st_out;
  uint64_t& to_gen = *to_gen_out;
  uint64_t from_gen = 0, from_size = 0, to_size = 0;
  std::vector<Epoch> epochs;
  {
    std::lock_guard l(meta_mu_);
    NodeRecord* rec = nullptr;
    SNAPDISK_RETURN_IF_ERROR(ImageLocked(image, &rec));
    st = StateLocked(image);
    epochs = rec->epochs;
    auto view_of = [&](SnapshotId id, uint64_t* gen, uint64_t* size) -> Status {
      if (id == kLive) {
        *gen = rec->live_gen;
        *size = rec->size;
        return Status::OK();
      }
      auto it = snapshots_.find(id);
      if (it == snapshots_.end() || it->second.image != image)
        return Status::NotFound(fmt::format("no snapshot {} of image '{}'", id, PathOfLocked(image)));
      *gen = it->second.generation;
      *size = it->second.size;
      return Status::OK();
    };
    SNAPDISK_RETURN_IF_ERROR(view_of(to, &to_gen, &to_size));
    if (from != kLive) SNAPDISK_RETURN_IF_ERROR(view_of(from, &from_gen, &from_size));
  }
  SNAPDISK_RETURN_IF_ERROR(FlushPending(*st));  // the live generation is read from the index
  if (from != kLive && from_gen > to_gen)
    return Status::InvalidArgument("the 'from' snapshot is newer than the 'to' view");

  if (from == kLive) {
    // Everything the view holds data for.
    uint64_t pos = 0;
    while (pos < to_size) {
      uint64_t data = 0, hole = 0;
      Status s = SeekRange(*st, to_gen, to_size, pos, SeekWhence::kData, &data);
      if (s.Is(Status::Code::kOutOfRange)) break;
      SNAPDISK_RETURN_IF_ERROR(s);
      s = SeekRange(*st, to_gen, to_size, data, SeekWhence::kHole, &hole);
      if (s.Is(Status::Code::kOutOfRange)) hole = to_size;
      else SNAPDISK_RETURN_IF_ERROR(s);
      AddRange(extents, data, hole - data);
      pos = hole;
    }
    return Status::OK();
  }

  const uint64_t common = std::min(from_size, to_size);
  bool same_epoch = true;
  for (const Epoch& e : epochs) same_epoch &= !(e.start_gen > from_gen && e.start_gen <= to_gen);

  if (same_epoch) {
    // Pieces defined by versions written after `from` and visible at `to`.
    rocksdb::ReadOptions ro;
    ro.total_order_seek = true;
    std::unique_ptr<rocksdb::Iterator> it(index_.db->NewIterator(ro, index_.versions));
    const std::string prefix = keys::ImagePrefix(image);
    uint64_t block = std::numeric_limits<uint64_t>::max(), mask = 0;
    auto emit = [&]() {
      for (uint32_t p = 0; p < pieces_; ++p) {
        if (!(mask >> p & 1)) continue;
        uint64_t off = block * block_size_ + uint64_t{p} * kSubBlockSize;
        if (off >= common) break;
        AddRange(extents, off, std::min<uint64_t>(kSubBlockSize, common - off));
      }
    };
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      keys::VersionKey vk;
      if (!keys::ParseVersion(it->key().ToStringView(), &vk)) return Status::Corruption("damaged version key");
      if (vk.block != block) {
        emit();
        block = vk.block;
        mask = 0;
      }
      if (vk.generation <= from_gen || vk.generation > to_gen) continue;
      VersionRecord rec;
      SNAPDISK_RETURN_IF_ERROR(VersionRecord::Decode(it->value().ToStringView(), pieces_, &rec));
      mask |= rec.present;
    }
    SNAPDISK_RETURN_IF_ERROR(FromRocks(it->status(), "scan block versions"));
    emit();
  } else {
    // A rollback or shrink lies between: compare the two views' bytes.
    std::vector<char> a(block_size_), b(block_size_);
    const uint64_t full = (pieces_ == 64) ? ~uint64_t{0} : ((uint64_t{1} << pieces_) - 1);
    for (uint64_t blk = 0; blk * block_size_ < common; ++blk) {
      uint64_t sa = 0, sb = 0;
      SNAPDISK_RETURN_IF_ERROR(ReadBlock(*st, from_gen, blk, full, a.data(), &sa));
      SNAPDISK_RETURN_IF_ERROR(ReadBlock(*st, to_gen, blk, full, b.data(), &sb));
      if (!sa && !sb) continue;
      for (uint32_t p = 0; p < pieces_; ++p) {
        uint64_t off = blk * block_size_ + uint64_t{p} * kSubBlockSize;
        if (off >= common) break;
        if (std::memcmp(a.data() + size_t{p} * kSubBlockSize, b.data() + size_t{p} * kSubBlockSize, kSubBlockSize))
          AddRange(extents, off, std::min<uint64_t>(kSubBlockSize, common - off));
      }
    }
  }
  // A size change is a change of everything between the two sizes.
  if (to_size != from_size) AddRange(extents, common, std::max(from_size, to_size) - common);
  return Status::OK();
}

}  // namespace snapdisk::engine
