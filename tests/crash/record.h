// tests/crash/record.h — the self-verifying 4 KiB record the crash workload
// writes, and the journal it keeps on the host.
//
// Record: every 4 KiB slot of an image is either all zeros (never written) or
// one record naming its image, slot and sequence number, with a payload
// derived from those and a checksum over everything. A torn, misplaced or
// stale record is detectable from the bytes alone.
//
// Sequence numbers: (cycle << 40) | per-thread counter. Each slot is written
// only by the thread that owns it in that cycle and cycles only grow, so the
// sequence numbers a slot sees only increase.
//
// Journal (a text file on the host, outside the mount, appended and
// fdatasync'ed by the workload; one fact per line, a torn last line ignored):
//   image NAME ID SIZE        the image exists (created, sized, fsynced)
//   ack ID SLOT SEQ           a write of record SEQ to SLOT was acknowledged by fsync
//   snapmade ID NAME          mkdir of snapshot NAME returned (journaled at once)
//   snap ID NAME SHA256       ...and its frozen view, hashed right after, hashes so
//   snapdel ID NAME           about to rmdir snapshot NAME (it may survive a crash)
//   clone NAME SHA256         `cp` made clone NAME, fsynced; it is never written again
//   clonedel NAME             about to unlink clone NAME
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace snapdisk::crash {

constexpr uint64_t kRecordSize = 4096;
constexpr uint64_t kRecordMagic = 0x534e41504352534bULL;  // "SNAPCRSK"

struct RecordHeader {
  uint64_t magic;
  uint32_t image_id;
  uint32_t thread;
  uint64_t slot;
  uint64_t seq;
};

inline uint64_t Mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// FNV-1a over bytes, then mixed.
inline uint64_t Checksum(const uint8_t* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return Mix(h);
}

// Fills out[kRecordSize] with the record for (image, slot, seq).
inline void MakeRecord(uint32_t image_id, uint32_t thread, uint64_t slot, uint64_t seq,
                       uint8_t* out) {
  RecordHeader h{kRecordMagic, image_id, thread, slot, seq};
  std::memcpy(out, &h, sizeof h);
  uint64_t state = Mix(seq ^ Mix(slot ^ (uint64_t{image_id} << 56)));
  for (size_t i = sizeof h; i + 8 <= kRecordSize - 8; i += 8) {
    state = Mix(state);
    std::memcpy(out + i, &state, 8);
  }
  uint64_t sum = Checksum(out, kRecordSize - 8);
  std::memcpy(out + kRecordSize - 8, &sum, 8);
}

enum class SlotState { kZero, kValid, kGarbage };

// Classifies the 4 KiB at `p`, read from slot `slot` of image `image_id`.
// For kValid sets *seq; for kGarbage sets *why.
inline SlotState Classify(const uint8_t* p, uint32_t image_id, uint64_t slot, uint64_t* seq,
                          std::string* why) {
  bool zero = true;
  for (size_t i = 0; i < kRecordSize && zero; ++i) zero = p[i] == 0;
  if (zero) return SlotState::kZero;
  RecordHeader h;
  std::memcpy(&h, p, sizeof h);
  uint64_t sum;
  std::memcpy(&sum, p + kRecordSize - 8, 8);
  if (h.magic != kRecordMagic) {
    *why = "no record magic";
  } else if (sum != Checksum(p, kRecordSize - 8)) {
    *why = "bad record checksum (torn or corrupted)";
  } else if (h.image_id != image_id || h.slot != slot) {
    *why = "record of image " + std::to_string(h.image_id) + " slot " + std::to_string(h.slot) +
           " (misplaced)";
  } else {
    uint8_t want[kRecordSize];
    MakeRecord(h.image_id, h.thread, h.slot, h.seq, want);
    if (std::memcmp(want, p, kRecordSize) != 0) {
      *why = "record payload does not match its header";
    } else {
      *seq = h.seq;
      return SlotState::kValid;
    }
  }
  return SlotState::kGarbage;
}

}  // namespace snapdisk::crash
