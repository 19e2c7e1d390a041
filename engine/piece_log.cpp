// The piece log (see piece_log.h).
#include "piece_log.h"

#include <array>
#include <bit>

#include "checksum.h"
#include "piece_mask.h"

namespace snapdisk::engine {

Status PieceLog::Open(const std::string& path, uint32_t read_poll_us) {
  // No write-behind: every write here is one piece, and the pieces of a
  // snapshot's later writes are read back soon as often as not.
  return file_.Open(path, kSubBlockSize, read_poll_us, 0);
}

template <typename Fn>
Status PieceLog::ForEachUnitRun(const VersionRecord& rec, uint64_t mask, uint32_t first, uint32_t last,
                                Fn&& fn) {
  return ForEachRun(mask, first, last, [&](uint32_t p, uint32_t q) -> Status {
    for (uint32_t a = p; a <= q;) {
      uint32_t b = a;
      while (b < q && rec.unit(b + 1) == rec.unit(b) + 1) ++b;
      SNAPDISK_RETURN_IF_ERROR(fn(a, b));
      a = b + 1;
    }
    return Status::OK();
  });
}

Status PieceLog::Write(VersionRecord& rec, uint32_t first, uint32_t last, uint64_t nonzero, const char* pieces) {
  // Units for the pieces that have none, in piece order: a write of several
  // new pieces gets consecutive units (one pwrite) when the log has them.
  std::array<uint32_t, 64> given;
  size_t ngiven = 0;
  for (uint32_t p = first; p <= last; ++p) {
    if (!(nonzero >> p & 1) || rec.has_unit(p)) continue;
    rec.AddUnit(p, units_.Allocate());
    given[ngiven++] = p;
  }
  struct MarkAfter {  // as DataFile::Write: a sync that starts later sees it
    std::atomic<bool>& w;
    ~MarkAfter() { w = true; }
  } mark{written_};
  Status s = ForEachUnitRun(rec, nonzero, first, last, [&](uint32_t a, uint32_t b) -> Status {
    // A unit whose piece holds no data is a hole (new, or punched).
    const bool fills_hole = (MaskRange(a, b) & ~rec.data) != 0;
    SNAPDISK_RETURN_IF_ERROR(file_.Write(rec.unit(a), 0, pieces + size_t{a - first} * kSubBlockSize,
                                         (b - a + 1) * kSubBlockSize, fills_hole));
    for (uint32_t r = a; r <= b; ++r) rec.crc[r] = PieceChecksum(pieces + size_t{r - first} * kSubBlockSize);
    return Status::OK();
  });
  if (!s.ok()) {
    for (size_t i = 0; i < ngiven; ++i) {
      units_.Free(rec.unit(given[i]));
      rec.RemoveUnit(given[i]);
    }
    return s;
  }
  const uint64_t punched = MaskRange(first, last) & ~nonzero & rec.data;
  return ForEachUnitRun(rec, punched, first, last, [&](uint32_t a, uint32_t b) -> Status {
    SNAPDISK_RETURN_IF_ERROR(file_.Punch(rec.unit(a), 0, (b - a + 1) * kSubBlockSize));
    for (uint32_t z = a; z <= b; ++z) rec.crc[z] = 0;
    return Status::OK();
  });
}

Status PieceLog::Read(const VersionRecord& rec, uint64_t mask, char* buf, bool random_access) const {
  if (mask == 0) return Status::OK();
  const auto last = static_cast<uint32_t>(63 - std::countl_zero(mask));
  return ForEachUnitRun(rec, mask, 0, last, [&](uint32_t a, uint32_t b) {
    return file_.Read(rec.unit(a), 0, (b - a + 1) * kSubBlockSize, buf + size_t{a} * kSubBlockSize, random_access);
  });
}

void PieceLog::Prefetch(const VersionRecord& rec, uint64_t mask) const {
  if (mask == 0) return;
  const auto last = static_cast<uint32_t>(63 - std::countl_zero(mask));
  (void)ForEachUnitRun(rec, mask, 0, last, [&](uint32_t a, uint32_t b) {
    file_.Prefetch(rec.unit(a), 0, (b - a + 1) * kSubBlockSize);
    return Status::OK();
  });
}

void PieceLog::MarkUsed(const VersionRecord& rec) {
  for (uint64_t u : rec.units) units_.MarkUsed(u);
}

Status PieceLog::SyncBeforeIndex(bool* flushed) {
  *flushed = true;
  if (!written_.exchange(false)) return Status::OK();
  Status s = file_.SyncBeforeIndex(flushed);
  if (!s.ok()) written_ = true;
  return s;
}

Status PieceLog::Sync() {
  if (!written_.exchange(false)) return Status::OK();
  Status s = file_.Sync();
  if (!s.ok()) written_ = true;
  return s;
}

}  // namespace snapdisk::engine
