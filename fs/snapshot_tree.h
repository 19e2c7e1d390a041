// fs/snapshot_tree.h — the .snapshots namespace (DESIGN.md §1).
//
//   ROOT/.snapshots          mirror of ROOT (type 1): one entry per child of
//                            the mirrored directory; a child directory shows
//                            as its mirror, a child image as its folder
//   .../IMG/                 snapshot folder of IMG (type 2): one directory
//                            per visible snapshot; mkdir creates a snapshot,
//                            rmdir deletes one, mv renames within the folder
//   .../IMG/SNAP/            snapshot directory (type 3): holds one file
//   .../IMG/SNAP/IMG         frozen view (type 4): the image as it was;
//                            unlinking it deletes the snapshot (rm -r), see
//                            the tombstones in snapfs.h
//
// Everything else under .snapshots is read-only (EROFS).
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fs/snapfs.h"
#include "snapdisk/status.h"

namespace snapdisk::fs {

struct DirListEntry {
  DirListEntry() = default;
  DirListEntry(std::string entry_name, uint64_t entry_ino, uint32_t entry_type)
      : name(std::move(entry_name)), ino(entry_ino), type(entry_type) {}
  std::string name;
  uint64_t ino = 0;
  uint32_t type = 0;  // S_IFDIR or S_IFREG
  // Attributes taken with the listing, when that was cheaper than a stat per
  // entry later (snapshot directories); readdirplus stats the others.
  std::optional<struct stat> attr;
};

// Finds `name` in a directory of the snapshot tree (types 1-3).
Status TreeLookup(SnapFs& fs, uint64_t parent, std::string_view name, uint64_t* ino);
// Lists a directory of the snapshot tree (types 1-3), "." and ".." first.
Status TreeList(SnapFs& fs, uint64_t dir, std::vector<DirListEntry>* entries);

// Snapshot operations; `folder` is a type-2 inode, `snapdir` a type-3 one.
Status SnapMkdir(SnapFs& fs, uint64_t folder, std::string_view name, uint64_t* ino);
Status SnapRmdir(SnapFs& fs, uint64_t folder, std::string_view name);
Status SnapRename(SnapFs& fs, uint64_t folder, std::string_view name, uint64_t new_parent,
                  std::string_view new_name, unsigned int flags);
Status SnapUnlink(SnapFs& fs, uint64_t snapdir, std::string_view name);

}  // namespace snapdisk::fs
