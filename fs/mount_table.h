// fs/mount_table.h — the snapdisk mounts this process can see
// (/proc/self/mountinfo): which store a mountpoint serves, where a store is
// mounted, and what to tell someone whose store is held by another process.
#pragma once

#include <string>
#include <vector>

namespace snapdisk::fs {

struct SnapdiskMount {
  std::string mountpoint;  // as the kernel shows it (absolute, no escapes)
  std::string store;       // the mount's source without its "snapdisk:" prefix
};

// How a mount names its store (the source "snapdisk:PATH", and its logs):
// absolute, normalized, without a trailing '/'. `store` may be relative.
std::string StoreSourcePath(const std::string& store);

// Every fuse.snapdisk mount in this mount namespace, in mount order (a later
// mount on the same mountpoint hides an earlier one).
std::vector<SnapdiskMount> SnapdiskMounts();

// Advice for a store that could not be opened because another process holds
// its LOCK (Status::Busy): "it is mounted at M: unmount it first (...)", or,
// when no mount serves it, that a daemon writes its data out after an
// unmount before it exits. `store` may be relative (StoreSourcePath).
std::string StoreInUseHint(const std::string& store);

}  // namespace snapdisk::fs
