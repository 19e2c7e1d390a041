// Store::Check: verifies every stored piece's checksum and the index's own
// consistency (each slot named once, versions belong to known images).
#include <unordered_set>

#include <fmt/format.h>

#include "checksum.h"
#include "keys.h"
#include "store_impl.h"

namespace snapdisk::engine {

bool StoreImpl::StillDamaged(NodeId image, uint64_t gen, uint64_t block, uint32_t piece) {
  std::shared_ptr<ImageState> st;
  {
    std::lock_guard l(meta_mu_);
    st = StateLocked(image);
  }
  if (!st) return true;
  // Read the piece as a reader of `gen` would, with the record that is
  // current now: under the write path's locks if `gen` is still live.
  std::vector<char> buf(block_size_);
  uint64_t stored = 0;
  std::shared_lock io(st->io_mu);
  Status s;
  if (st->View()->live_gen == gen) {
    std::lock_guard stripe(st->StripeFor(block));
    s = ReadBlock(*st, gen, block, uint64_t{1} << piece, buf.data(), &stored, true);
  } else {
    s = ReadBlock(*st, gen, block, uint64_t{1} << piece, buf.data(), &stored);
  }
  return !s.ok();
}

Status StoreImpl::Check(CheckReport* report, const std::function<void(uint64_t, uint64_t)>& progress) {
  *report = CheckReport();
  SNAPDISK_RETURN_IF_ERROR(FlushAllPending());  // check what the index will hold
  std::unordered_set<NodeId> images;
  {
    std::lock_guard l(meta_mu_);
    for (const auto& [id, r] : nodes_)
      if (r.kind == NodeKind::kImage) images.insert(id);
  }
  // For progress only: an upper bound on the versions with data (a piece
  // log version may name several units).
  const uint64_t total = slots_.used() + log_.used();
  rocksdb::ReadOptions ro;
  ro.total_order_seek = true;
  std::unique_ptr<rocksdb::Iterator> it(index_.db->NewIterator(ro, index_.versions));
  std::unordered_set<uint64_t> seen_slots, seen_units;
  std::vector<char> piece(kSubBlockSize);
  auto problem = [&](std::string line) {
    if (report->problems.size() < 1000) report->problems.push_back(std::move(line));
  };
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    keys::VersionKey vk;
    if (!keys::ParseVersion(it->key().ToStringView(), &vk)) {
      ++report->index_errors;
      problem("a block version key has a bad length");
      continue;
    }
    VersionRecord rec;
    if (!VersionRecord::Decode(it->value().ToStringView(), pieces_, &rec).ok()) {
      ++report->index_errors;
      problem(fmt::format("image {} block {} generation {}: damaged version record", vk.image, vk.block, vk.generation));
      continue;
    }
    ++report->versions_checked;
    if (!images.count(vk.image)) {
      ++report->index_errors;
      problem(fmt::format("block {} generation {} belongs to unknown image {}", vk.block, vk.generation, vk.image));
    }
    if (rec.slot == kNoSlot) continue;
    if (rec.in_block_file() && !seen_slots.insert(rec.slot).second) {
      ++report->index_errors;
      problem(fmt::format("data slot {} is named by more than one block version", rec.slot));
    }
    for (uint64_t u : rec.units) {
      if (!seen_units.insert(u).second) {
        ++report->index_errors;
        problem(fmt::format("piece log unit {} is named twice", u));
      }
    }
    for (uint32_t p = 0; p < pieces_; ++p) {
      if (!(rec.data >> p & 1)) continue;
      Status s = ReadStoredPiece(rec, p, piece.data());
      const bool mismatch = !s.ok() || PieceChecksum(piece.data()) != rec.crc[p];
      if (mismatch && !StillDamaged(vk.image, vk.generation, vk.block, p)) {
        continue;  // overwritten in place since the scan read its record: not damage
      }
      if (mismatch) {
        ++report->checksum_errors;
        problem(fmt::format("{} block {} piece {} (generation {}, {}): {}", PathOf(vk.image), vk.block, p,
                            vk.generation, StoredAt(rec, p), s.ok() ? "checksum mismatch" : s.ToString()));
      }
      report->bytes_verified += kSubBlockSize;
    }
    if (progress && report->versions_checked % 1024 == 0) progress(report->versions_checked, total);
  }
  SNAPDISK_RETURN_IF_ERROR(FromRocks(it->status(), "scan block versions"));
  if (progress) progress(report->versions_checked, report->versions_checked);  // the true total, now known
  return Status::OK();
}

}  // namespace snapdisk::engine
