// fs/xattr.h — extended attributes shared by ops_xattr.cpp (live nodes) and
// xattr_snapshot.cpp (snapshot directories).
//
// Only the user. namespace is stored. user.snapdisk.* is reserved for facts
// computed on the fly (read-only) and a few actions (write-only or
// read-write), listed where they are implemented.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "fs/snapfs.h"
#include "snapdisk/snapshot.h"
#include "snapdisk/status.h"

namespace snapdisk::fs {

constexpr std::string_view kUserPrefix = "user.";
constexpr std::string_view kReservedPrefix = "user.snapdisk.";

inline bool HasPrefix(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Snapshot directories (type 3) and, read-only, their frozen views (type 4):
//   user.description          SetSnapshotDescription (read-write)
//   user.property.KEY         SetSnapshotProperty (read-write)
//   user.snapdisk.protected   "0"/"1", read-write: SetSnapshotProtected
//   user.snapdisk.created     ISO-8601 UTC with nanoseconds
//   user.snapdisk.size / .generation / .id / .referenced / .unique
Status SnapGetXattr(SnapFs& fs, uint64_t ino, std::string_view name, std::string* value);
Status SnapListXattr(SnapFs& fs, uint64_t ino, std::vector<std::string>* names);
Status SnapSetXattr(SnapFs& fs, uint64_t ino, std::string_view name, std::string_view value,
                    int flags);
Status SnapRemoveXattr(SnapFs& fs, uint64_t ino, std::string_view name);

// "2026-11-25T08:37:39.123456789Z"
std::string FormatTimeNs(int64_t ns);

}  // namespace snapdisk::fs
