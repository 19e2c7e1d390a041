// In-memory forms of the index's records and their value encodings.
// The byte layouts are documented in docs/format.md; every Decode rejects a
// value it cannot fully parse (Corruption), so a damaged index is refused
// instead of being half-read.
#pragma once

#include <bit>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <absl/container/inlined_vector.h>

#include "snapdisk/image.h"
#include "snapdisk/snapshot.h"
#include "snapdisk/status.h"

namespace snapdisk::engine {

// 2: block versions may keep their pieces in the piece log (kLogSlot).
// A version-1 store is upgraded when it is opened (it has no such records).
constexpr uint32_t kFormatVersion = 2;
constexpr uint32_t kSubBlockSize = 4096;  // validity / checksum granularity
constexpr uint64_t kNoSlot = ~uint64_t{0};
// The `slot` of a version whose pieces live in the piece log (piece_log.h).
constexpr uint64_t kLogSlot = ~uint64_t{0} - 1;

struct FormatRecord {
  uint32_t version = kFormatVersion;
  uint32_t block_size = 0;
  std::string Encode() const;
  static Status Decode(std::string_view v, FormatRecord* out);
};

struct Counters {
  uint64_t next_node = 2;  // 1 is the root directory
  uint64_t next_snapshot = 1;
  std::string Encode() const;
  static Status Decode(std::string_view v, Counters* out);
};

// A range of an image's generations that shares one fallback. Reading the
// image at generation G uses the last epoch with start_gen <= G: versions of
// this image with generation in [start_gen, G], then (where none covers a
// piece) the image `base_image` read at `base_gen`, but only below
// `base_limit` bytes. A fresh image has one epoch {1, 0, 0, 0}; a clone's
// first epoch points at its source; rollback and shrink append an epoch whose
// base is the image itself at an older generation. This is what makes clone,
// rollback and shrink constant-time.
struct Epoch {
  uint64_t start_gen = 1;
  uint64_t base_image = 0;  // 0: no fallback (zeros)
  uint64_t base_gen = 0;
  uint64_t base_limit = 0;  // bytes of the base that show through
};

struct NodeRecord {
  NodeId id = 0;
  NodeId parent = 0;
  std::string name;
  NodeKind kind = NodeKind::kImage;
  uint32_t mode = 0, uid = 0, gid = 0;
  Timestamp atime, mtime, ctime;
  bool linked = true;  // false: removed from the namespace, kept for clones/handles
  std::map<std::string, std::string> xattrs;
  // Images only:
  uint64_t size = 0;
  uint64_t live_gen = 1;
  std::vector<Epoch> epochs;
  bool is_clone = false;
  NodeId origin_image = 0;
  std::string origin_image_name, origin_snapshot_name;

  std::string Encode() const;
  static Status Decode(std::string_view v, NodeRecord* out);
};

std::string EncodeSnapshot(const SnapshotInfo& s);
Status DecodeSnapshot(std::string_view v, SnapshotInfo* out);

// One stored version of one block. `present` has a bit per 4 KiB piece that
// this version defines; `data` the subset whose bytes are stored (the rest
// of `present` reads as zeros and stores nothing). crc[i] is the checksum of
// piece i when data bit i is set.
//
// The stored bytes live either in one slot of the block file (`slot`), or,
// when slot is kLogSlot, piece by piece in units of the piece log: piece p
// has a unit iff bit p of unit_mask is set (every data piece has one), and
// `units` lists them in piece order. Compact on purpose: most such versions
// hold one or two pieces, and a full live cache holds 131,072 records per
// image (a unit per piece slot made the daemon's peak RSS 282 MiB in the
// bench, against a bar of 256).
struct VersionRecord {
  uint64_t slot = kNoSlot;
  uint64_t present = 0;
  uint64_t data = 0;
  // One per piece of the block. Inline for the default 16 pieces: the 4 KiB
  // write path updates a cached record's checksum, and a separate heap
  // array was one more cache miss per write.
  absl::InlinedVector<uint32_t, 16> crc;
  uint64_t unit_mask = 0;
  absl::InlinedVector<uint64_t, 2> units;

  bool logged() const { return slot == kLogSlot; }
  bool in_block_file() const { return slot != kNoSlot && slot != kLogSlot; }
  bool has_unit(uint32_t piece) const { return unit_mask >> piece & 1; }
  // Piece `piece`'s unit; has_unit(piece) must hold.
  uint64_t unit(uint32_t piece) const { return units[UnitIndex(piece)]; }
  void AddUnit(uint32_t piece, uint64_t u) {
    units.insert(units.begin() + UnitIndex(piece), u);
    unit_mask |= uint64_t{1} << piece;
  }
  void RemoveUnit(uint32_t piece) {
    units.erase(units.begin() + UnitIndex(piece));
    unit_mask &= ~(uint64_t{1} << piece);
  }
  void ClearUnits() {
    units.clear();
    unit_mask = 0;
  }

 private:
  size_t UnitIndex(uint32_t piece) const {
    return static_cast<size_t>(std::popcount(unit_mask & ((uint64_t{1} << piece) - 1)));
  }

 public:

  std::string Encode() const;
  static Status Decode(std::string_view v, uint32_t pieces, VersionRecord* out);
};

}  // namespace snapdisk::engine
