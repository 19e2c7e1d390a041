// RocksDB key schema (docs/format.md has the full description).
//
// Column family "versions": image(8) | block(8) | ~generation(8), all big-
// endian. The generation is stored inverted so that a forward Seek to
// (image, block, ~G) lands on the newest version with generation <= G, and
// iterating forward walks to older versions of the same block. The 16-byte
// (image, block) prefix drives the prefix bloom filter.
// Column family "dirty" uses the same key for "this version's data may have
// been overwritten in place since its checksums were last made durable".
// Column families "nodes" and "snapshots" are keyed by their 8-byte id.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "coding.h"

namespace snapdisk::keys {

constexpr size_t kVersionKeySize = 24;
constexpr size_t kVersionPrefixSize = 16;

inline std::string Id(uint64_t id) {
  std::string k;
  coding::PutBE64(&k, id);
  return k;
}

// A version key as a fixed-size value: built and hashed without allocating
// (the dirty log's set, on the 4 KiB write path).
using VersionKeyBytes = std::array<char, kVersionKeySize>;

inline VersionKeyBytes VersionBytes(uint64_t image, uint64_t block, uint64_t generation) {
  VersionKeyBytes k;
  coding::EncodeBE64(k.data(), image);
  coding::EncodeBE64(k.data() + 8, block);
  coding::EncodeBE64(k.data() + 16, ~generation);
  return k;
}

inline std::string Version(uint64_t image, uint64_t block, uint64_t generation) {
  const VersionKeyBytes k = VersionBytes(image, block, generation);
  return std::string(k.data(), k.size());
}

inline std::string BlockPrefix(uint64_t image, uint64_t block) {
  std::string k;
  coding::PutBE64(&k, image);
  coding::PutBE64(&k, block);
  return k;
}

inline std::string ImagePrefix(uint64_t image) { return Id(image); }

struct VersionKey {
  uint64_t image = 0, block = 0, generation = 0;
};

inline bool ParseVersion(std::string_view k, VersionKey* out) {
  if (k.size() != kVersionKeySize) return false;
  out->image = coding::GetBE64(k.data());
  out->block = coding::GetBE64(k.data() + 8);
  out->generation = ~coding::GetBE64(k.data() + 16);
  return true;
}

// Keys in the default column family.
inline constexpr std::string_view kFormatKey = "format";      // FormatRecord
inline constexpr std::string_view kCountersKey = "counters";  // next ids
// Rewritten by a sync whose data needed no fdatasync (the value is a
// sequence number nobody reads): it gives the index log something to sync,
// and so a device cache flush (StoreImpl::SyncImages).
inline constexpr std::string_view kSyncMarkKey = "sync-mark";

}  // namespace snapdisk::keys
