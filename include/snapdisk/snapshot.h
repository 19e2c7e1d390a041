// snapdisk/snapshot.h — what the engine knows about a snapshot.
//
// A snapshot is a named, immutable point in an image's history: it records
// the image's generation number at the instant it was taken, so taking one
// copies no data (see docs/format.md). SnapshotInfo is a plain value copied
// out of the store; changing it changes nothing in the store.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "snapdisk/status.h"

namespace snapdisk {

using SnapshotId = uint64_t;  // unique in a store, never reused; 0 means "live"
constexpr SnapshotId kLive = 0;

struct SnapshotInfo {
  SnapshotId id = 0;
  uint64_t image = 0;          // NodeId of the image it belongs to
  std::string name;            // unique among the image's snapshots
  uint64_t generation = 0;     // the image generation it freezes
  int64_t created_ns = 0;      // creation time, ns since the epoch (UTC)
  uint64_t size = 0;           // image size at the snapshot, in bytes
  std::string description;     // free text (OpenStack --description)
  std::map<std::string, std::string> properties;  // key=value (--property)
  bool is_protected = false;   // protected snapshots refuse deletion (Busy)
  bool hidden = false;         // internal: holds the base of a clone of a live image
  // The image's permission bits and owner when the snapshot was taken: its
  // frozen view keeps them, so a later chmod or chown of the live image
  // cannot open up old data. (false: a snapshot from a build that did not
  // record them; its view follows the live image.)
  bool has_owner = false;
  uint32_t mode = 0, uid = 0, gid = 0;
};

// Checks a snapshot, image or directory name: 1..255 bytes, no '/', no NUL,
// not "." or "..", not starting with the reserved prefix ".snapdisk".
// Returns InvalidArgument or NameTooLong with a message naming the problem.
Status ValidateName(std::string_view name);

}  // namespace snapdisk
