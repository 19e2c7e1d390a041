// Checksum of one 4 KiB piece of block data: the low 32 bits of XXH3-64.
// XXH3 runs at memory speed, so verifying every piece on read is cheap.
#pragma once

#include <cstdint>
#include <cstring>

#include <xxhash.h>

#include "records.h"

namespace snapdisk::engine {

inline uint32_t PieceChecksum(const char* piece) {
  return static_cast<uint32_t>(XXH3_64bits(piece, kSubBlockSize));
}

inline bool IsZeroPiece(const char* p) {
  // The piece may sit anywhere in a caller's buffer: load words with memcpy
  // (no alignment assumed; the compiler makes plain loads of it).
  for (uint32_t i = 0; i < kSubBlockSize; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w) return false;
  }
  return true;
}

}  // namespace snapdisk::engine
