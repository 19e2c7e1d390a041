// The piece log: where block versions that were first written by less than
// a whole block keep their pieces, one 4 KiB unit of `data/pieces.dat` per
// piece, handed out lowest-free-first.
//
// Why not the version's own slot of the block file: after a snapshot, 4 KiB
// random writes each land in a new version, and in a slot the piece sits
// between holes. ext4 then allocates every such piece on its own (a delayed
// extent that cannot merge with its neighbours, searched for on every later
// write): 4 KiB writes after a snapshot took 13.5-15 µs against 9.5-10 µs
// before it, 0.69-0.77 of the rate (bench/README.md). Units handed out in
// ascending order make those pieces adjacent in the file, where ext4 merges
// them: with the log the rate after was 0.95-1.01 of the rate before.
// A whole-block write still gets a slot, so data written in bulk lies in
// block order and streams back; one into a piece log version moves that
// version to a slot (StoreImpl::WriteBlock).
//
// Units, like slots, are not persisted: at open every unit a version record
// names is in use (MarkUsed), the others are free, so a crash never leaks
// or double-allocates one. A version keeps a unit until the version itself
// is reclaimed (Free), even if its piece is punched (written with zeros),
// or until a sync after it moved to a slot (ImageState::retired_units): a
// unit is never reused while any record, synced or not, may name it.
//
// Thread-safety: as DataFile and SlotAllocator. Calls on one VersionRecord
// must not overlap (the caller holds the block's stripe).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "data_file.h"
#include "records.h"
#include "snapdisk/status.h"

namespace snapdisk::engine {

class PieceLog {
 public:
  // Replaces the I/O under the file (tests); call before Open.
  void UseIo(DataFileIo* io) { file_.UseIo(io); }
  Status Open(const std::string& path, uint32_t read_poll_us);

  // Writes the nonzero pieces first..last of `rec` (a kLogSlot version;
  // `pieces` points at piece `first`, the others follow), giving a unit to
  // each piece that has none, and punches the other touched pieces that
  // held data; updates rec.crc and rec.units (not rec.data). On failure the
  // units given by this call are taken back.
  Status Write(VersionRecord& rec, uint32_t first, uint32_t last, uint64_t nonzero, const char* pieces);
  // Reads the pieces of `mask` into buf (piece p at buf + p * 4 KiB).
  // `random_access`: see DataFile::Read.
  Status Read(const VersionRecord& rec, uint64_t mask, char* buf, bool random_access) const;
  void Prefetch(const VersionRecord& rec, uint64_t mask) const;
  // Data piece `piece` of `rec` into buf (4 KiB).
  Status ReadPiece(const VersionRecord& rec, uint32_t piece, char* buf) const {
    return file_.Read(rec.unit(piece), 0, kSubBlockSize, buf);
  }

  // Load phase at open: every unit of every record, then Finish().
  void MarkUsed(const VersionRecord& rec);
  void Finish() { units_.Finish(); }
  // Reclaims units whose records are gone from the index for good (synced):
  // punches them out and makes them free. `pause` runs after each punch (GC
  // paces itself against writers with it).
  template <typename Pause>
  void Free(std::vector<uint64_t>* units, Pause&& pause);

  // Durability, as DataFile's; a log nothing was written to since its last
  // sync needs nothing and reports *flushed = true.
  Status SyncBeforeIndex(bool* flushed);
  Status Sync();
  void StartWriteback() { file_.StartWriteback(); }
  uint64_t AllocatedBytes() const { return file_.AllocatedBytes(); }
  uint64_t used() const { return units_.used(); }

 private:
  // Calls fn(p, q) for each run p..q of pieces of `mask` whose units are
  // consecutive too: one system call each.
  template <typename Fn>
  static Status ForEachUnitRun(const VersionRecord& rec, uint64_t mask, uint32_t first, uint32_t last, Fn&& fn);

  static constexpr size_t kMaxPunchUnits = 65536;  // 256 MiB per punch: fits DataFile::Punch's length
  DataFile file_;  // block size = one piece: unit u is [u * 4 KiB, (u+1) * 4 KiB)
  SlotAllocator units_;
  // Something was written or punched since the last sync (which clears it
  // before it starts): a log that only served reads needs no sync. True at
  // first: a process killed before its sync leaves its writes in the page
  // cache, and the crash repair at open (RecoverDirty) records checksums of
  // those bytes, so its Sync must make them durable.
  std::atomic<bool> written_{true};
};

template <typename Pause>
void PieceLog::Free(std::vector<uint64_t>* units, Pause&& pause) {
  std::sort(units->begin(), units->end());
  for (size_t i = 0; i < units->size();) {
    size_t j = i + 1;
    while (j < units->size() && j - i < kMaxPunchUnits && (*units)[j] == (*units)[j - 1] + 1) ++j;
    (void)file_.Punch((*units)[i], 0, static_cast<uint32_t>((j - i) * kSubBlockSize));
    for (size_t k = i; k < j; ++k) units_.Free((*units)[k]);
    pause();
    i = j;
  }
  units->clear();
}

}  // namespace snapdisk::engine
