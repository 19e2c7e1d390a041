// fs/attr.h — what each kind of inode looks like to stat(2).
//
// Live images report st_blocks = ceil(size/512) whatever they really store
// ("thick" report): GNU cp 9.1 then copies them with copy_file_range over the
// whole file instead of a SEEK_DATA read/write loop, and copy_file_range is
// what the engine turns into a thin clone (DESIGN.md §4). True space use is in
// the user.snapdisk.used / .unique xattrs. Frozen views report the same way.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>

#include "fs/fuse.h"
#include "fs/snapfs.h"
#include "snapdisk/image.h"
#include "snapdisk/snapshot.h"
#include "snapdisk/status.h"

namespace snapdisk::fs {

// What a snapshot directory (inode type 3) stands for: a snapshot the engine
// has, or a tombstone left by unlinking its frozen view (see snapfs.h).
struct SnapDir {
  SnapshotInfo info;  // for tombstones: id, image, name, created_ns only
  bool tombstone = false;
};

void StatLive(const SnapFs& fs, const NodeAttr& attr, struct stat* st);
Status StatInode(SnapFs& fs, uint64_t ino, struct stat* st);
// A snapshot directory (type 3) of `image` created at `created_ns`, without
// asking the engine (for listings that already hold both).
void StatSnapDirOf(const SnapFs& fs, const NodeAttr& image, uint64_t ino, int64_t created_ns,
                   struct stat* st);
// How long the kernel may cache the name of `ino` (see FsConfig).
double EntryTimeout(const SnapFs& fs, uint64_t ino);
// Fills a lookup reply for `ino` (stat plus cache timeouts).
Status MakeEntry(SnapFs& fs, uint64_t ino, fuse_entry_param* entry);
// The same from a stat already taken.
void MakeEntryFrom(const SnapFs& fs, const struct stat& st, fuse_entry_param* entry);

Status ResolveSnapDir(SnapFs& fs, SnapshotId id, SnapDir* dir);
// A live (not deleted, not hidden) snapshot.
Status ResolveSnapshot(SnapFs& fs, SnapshotId id, SnapshotInfo* info);
// The image's current name (last component of its path).
Status ImageName(SnapFs& fs, NodeId image, std::string* name);

}  // namespace snapdisk::fs
