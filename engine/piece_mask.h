// Bit masks over a block's 4 KiB pieces (bit p = piece p) and iteration over
// their runs: the data path issues one system call per run of pieces.
#pragma once

#include <cstdint>

#include "snapdisk/status.h"

namespace snapdisk::engine {

inline uint64_t MaskRange(uint32_t first, uint32_t last) {  // bits first..last inclusive
  uint64_t hi = last >= 63 ? ~uint64_t{0} : ((uint64_t{1} << (last + 1)) - 1);
  return hi & ~((uint64_t{1} << first) - 1);
}

// Calls fn(p, q) -> Status for each maximal run p..q of set bits of `mask`
// within first..last, in ascending order; stops at the first failure.
template <typename Fn>
Status ForEachRun(uint64_t mask, uint32_t first, uint32_t last, Fn&& fn) {
  for (uint32_t p = first; p <= last;) {
    if (!(mask >> p & 1)) {
      ++p;
      continue;
    }
    uint32_t q = p;
    while (q + 1 <= last && (mask >> (q + 1) & 1)) ++q;
    SNAPDISK_RETURN_IF_ERROR(fn(p, q));
    p = q + 1;
  }
  return Status::OK();
}

}  // namespace snapdisk::engine
