// fs/snapfs.h — the state of one mount, reached through fuse_req_userdata().
//
// SnapFs holds no inode table (inode numbers are computed, see inode.h). It
// owns two small pieces of state the engine does not keep:
//
//  * Tombstones. `rm -r .snapshots/IMG/SNAP` first unlinks the frozen view
//    SNAP/IMG and then rmdirs SNAP. Unlinking the frozen view deletes the
//    snapshot in the engine (the view is the snapshot's only content, so an
//    unlink that left it in place would make rm -r fail). The now-empty
//    snapshot directory must still exist for the following rmdir, so it is
//    kept here as a tombstone: lookup and readdir of the image's folder show
//    it, its own readdir is empty, getattr works. rmdir of it drops the
//    tombstone and succeeds; unmount forgets all tombstones. Tombstones are
//    never persisted.
//
//  * Open image handles, so that handles the kernel never released (a lazy
//    unmount) are closed before the Store they point into is destroyed.
//
// Thread-safety: all methods may be called from any FUSE worker thread.
// Lock order: SnapFs::mu_ is a leaf lock; no engine call is made while it is
// held.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "snapdisk/image.h"
#include "snapdisk/snapshot.h"
#include "snapdisk/store.h"

struct fuse_session;

namespace snapdisk::fs {

struct Tombstone {
  NodeId image = 0;
  std::string name;
  int64_t created_ns = 0;
};

// Tunables of the adapter; defaults suit a single-host mount.
struct FsConfig {
  double entry_timeout = 1.0;  // seconds the kernel may cache names of live nodes
  double attr_timeout = 1.0;   // seconds the kernel may cache attributes
  // Names of mirror directories and frozen views under .snapshots are
  // revalidated on every path walk: they follow renames in the live tree
  // (a frozen view is named after its image) that the kernel does not see
  // as renames there.
  double tree_entry_timeout = 0.0;
  // Live images are opened with direct I/O (mount option cache=direct, the
  // default) or through the page cache (cache=page; allows shared mmap).
  bool live_direct_io = true;
  // Names of snapshot folders (.snapshots/.../IMG) and snapshot directories
  // (.../IMG/SNAP) may be cached. A snapshot's name changes only by rmdir,
  // rm -r or rename of it on this mount, which the kernel sees (the CLI uses
  // those too); a folder's name changes when its image is renamed or deleted,
  // and those ops invalidate it (ops_dir.cpp). The one change made behind the
  // kernel's back, a group snapshot (setxattr) replacing a tombstone of the
  // same name, invalidates that name itself (ops_xattr.cpp). Without this,
  // `ls -l` of a folder of 10,000 snapshots made four LOOKUP round trips per
  // entry.
  double snapshot_entry_timeout = 60.0;
};

// fi->fh of an open image file.
struct OpenFile {
  explicit OpenFile(std::unique_ptr<ImageHandle> handle) : image(std::move(handle)) {}
  // Shared: a read holds it past its reply (ImageHandle::ReadAhead), when
  // the kernel may already have sent RELEASE for the file.
  std::shared_ptr<ImageHandle> image;
  // The second (CLOCK_REALTIME) in which writes through this handle last
  // stamped the image's mtime. The engine updates mtime only when a write
  // grows the image, so the adapter stamps it, at most once a second per
  // handle, to keep a metadata commit off every write.
  std::atomic<int64_t> mtime_stamped_sec{0};
  // Frozen views only: the attributes seen at open. The snapshot (and even
  // its image) may be deleted while the view stays open; fstat on the open
  // file must keep working, as POSIX has it for an unlinked file. Set before
  // the file is adopted, never changed after.
  std::optional<struct stat> frozen_attr;
};

class SnapFs {
 public:
  SnapFs(Store* store, FsConfig config);
  ~SnapFs();  // closes handles the kernel never released
  SnapFs(const SnapFs&) = delete;
  SnapFs& operator=(const SnapFs&) = delete;

  Store* store() const { return store_; }
  const FsConfig& config() const { return config_; }
  uint32_t block_size() const { return block_size_; }

  // Set by RunMount once the session exists; used for cache invalidation.
  void set_session(fuse_session* se) { session_ = se; }
  fuse_session* session() const { return session_; }

  // ---- tombstones of snapshots deleted by unlinking their frozen view ----
  void AddTombstone(SnapshotId id, Tombstone tombstone);
  std::optional<Tombstone> FindTombstone(SnapshotId id) const;
  // The tombstone named `name` in image's folder, if any.
  std::optional<SnapshotId> FindTombstoneByName(NodeId image, std::string_view name) const;
  std::vector<std::pair<SnapshotId, Tombstone>> TombstonesOf(NodeId image) const;
  void DropTombstone(SnapshotId id);
  // Returns whether a tombstone was dropped (the kernel may cache its name).
  bool DropTombstonesNamed(NodeId image, std::string_view name);

  // ---- open image files (fi->fh of files) ----
  // `frozen_attr`: a frozen view's attributes at open (see OpenFile).
  OpenFile* AdoptHandle(std::unique_ptr<ImageHandle> handle,
                        std::optional<struct stat> frozen_attr = std::nullopt);
  // The attributes of frozen view `ino` as opened, if it is open now. Only
  // for the rare miss (its snapshot deleted while open): scans open files.
  std::optional<struct stat> OpenFrozenAttr(uint64_t ino) const;
  void ReleaseHandle(OpenFile* file);

 private:
  Store* const store_;
  const FsConfig config_;
  uint32_t block_size_ = 65536;
  fuse_session* session_ = nullptr;

  mutable std::mutex mu_;
  std::map<SnapshotId, Tombstone> tombstones_;  // guarded by mu_
  std::set<OpenFile*> open_files_;  // guarded by mu_; owned
};

}  // namespace snapdisk::fs
