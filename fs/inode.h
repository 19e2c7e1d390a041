// fs/inode.h — how snapdisk names the kernel's inodes.
//
// Every FUSE inode number is computed from engine ids, so the adapter keeps no
// inode table: lookup counts need no bookkeeping and forget is a no-op. The top
// four bits of the 64-bit number say what kind of object it is, the low 60 bits
// hold an engine id (engine NodeIds and SnapshotIds stay below 2^60):
//
//   type 0  live node          ino = NodeId (the root, NodeId 1, is FUSE_ROOT_ID)
//   type 1  .snapshots mirror  ino = 1<<60 | NodeId of the live directory it mirrors
//   type 2  snapshot folder    ino = 2<<60 | NodeId of the image
//   type 3  snapshot directory ino = 3<<60 | SnapshotId
//   type 4  frozen view file   ino = 4<<60 | SnapshotId
//
// ROOT/.snapshots is the mirror of the root directory.
#pragma once

#include <cstdint>

#include "snapdisk/image.h"

namespace snapdisk::fs {

enum class InodeType : uint8_t {
  kLive = 0,
  kMirror = 1,
  kSnapFolder = 2,
  kSnapDir = 3,
  kFrozen = 4,
};

constexpr int kInodeTypeShift = 60;
constexpr uint64_t kInodeIdMask = (uint64_t{1} << kInodeTypeShift) - 1;
// The reserved name of the snapshot namespace at the root of a mount.
constexpr const char* kSnapshotsDirName = ".snapshots";

constexpr uint64_t MakeIno(InodeType type, uint64_t id) {
  return (static_cast<uint64_t>(type) << kInodeTypeShift) | (id & kInodeIdMask);
}
constexpr InodeType TypeOf(uint64_t ino) { return static_cast<InodeType>(ino >> kInodeTypeShift); }
constexpr uint64_t IdOf(uint64_t ino) { return ino & kInodeIdMask; }

constexpr uint64_t kSnapshotsRootIno = MakeIno(InodeType::kMirror, kRootNode);

static_assert(MakeIno(InodeType::kLive, kRootNode) == 1, "root must be FUSE_ROOT_ID");
static_assert(TypeOf(MakeIno(InodeType::kFrozen, 7)) == InodeType::kFrozen);
static_assert(IdOf(MakeIno(InodeType::kFrozen, 7)) == 7);

}  // namespace snapdisk::fs
