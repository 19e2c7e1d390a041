// fs/group_snapshot.h — consistency-group snapshots through the filesystem.
//
//   setfattr -n user.snapdisk.snapshot -v NAME MNT/.snapshots/PROJECT
//
// on a mirror directory (inode type 1, including MNT/.snapshots itself)
// snapshots every image in the mirrored directory's subtree at one instant
// (Store::CreateGroupSnapshot: all or none; EEXIST if any image already has
// a snapshot NAME, ENOENT if the subtree holds no image). On MNT/.snapshots
// the value may also be "NAME\npath1\npath2...": exactly those images (or
// the images under those directories), paths relative to the mount root.
// The attribute is write-only: getfattr reports ENODATA.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "fs/snapfs.h"
#include "snapdisk/status.h"

namespace snapdisk::fs {

constexpr std::string_view kGroupSnapshotXattr = "user.snapdisk.snapshot";

// setxattr on a mirror inode; only kGroupSnapshotXattr is accepted. A new
// snapshot that replaces a tombstone of the same name (snapfs.h) changes what
// that name means behind the kernel's back: *stale_folders gets the snapshot
// folders (type-2 inodes) whose entry for the snapshot's name the caller must
// invalidate before it replies.
Status MirrorSetXattr(SnapFs& fs, uint64_t mirror_ino, std::string_view name,
                      std::string_view value, std::vector<uint64_t>* stale_folders);

}  // namespace snapdisk::fs
