// Checksum of one 4 KiB piece of block data: the low 32 bits of XXH3-64.
// XXH3 runs at memory speed, so verifying every piece on read is cheap.
#pragma once

#include <cstdint>

#include <xxhash.h>

#include "records.h"

namespace snapdisk::engine {

inline uint32_t PieceChecksum(const char* piece) {
  return static_cast<uint32_t>(XXH3_64bits(piece, kSubBlockSize));
}

inline bool IsZeroPiece(const char* p) {
  const uint64_t* w = reinterpret_cast<const uint64_t*>(p);
  for (uint32_t i = 0; i < kSubBlockSize / 8; ++i)
    if (w[i]) return false;
  return true;
}

}  // namespace snapdisk::engine
