// snapdisk/store.h — a store of disk images with snapshots and thin clones.
//
// A Store is a directory holding a RocksDB index (all metadata) and block
// data files (see docs/format.md). Open it with Store::Open; destroying the
// Store flushes and closes it. Only one process may open a store at a time:
// a second Open fails with Busy, naming the holder's lock file.
//
// Thread-safety: every method may be called from many threads at once. The
// namespace and snapshot metadata are guarded by one metadata mutex (cheap,
// short critical sections); image data paths use per-image locks striped by
// block, so I/O on different blocks does not serialize. Snapshot creation
// briefly waits for in-flight writes to that image and then proceeds in
// constant time.
//
// Errors come back as Status; nothing throws across this boundary.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "snapdisk/image.h"
#include "snapdisk/options.h"
#include "snapdisk/snapshot.h"
#include "snapdisk/status.h"

namespace snapdisk {

struct StoreStats {
  uint32_t block_size = 0;
  uint64_t capacity_bytes = 0;   // of the file system holding the store
  uint64_t available_bytes = 0;  // free space left there for the store
  uint64_t stored_bytes = 0;     // data bytes the store holds (after sharing)
  uint64_t images = 0;
  uint64_t snapshots = 0;
  uint64_t directories = 0;
};

// A report from Store::Check (the offline fsck and the online scrub).
struct CheckReport {
  uint64_t versions_checked = 0;
  uint64_t bytes_verified = 0;
  uint64_t checksum_errors = 0;
  uint64_t index_errors = 0;
  std::vector<std::string> problems;  // one line each: what, where
  bool clean() const { return checksum_errors == 0 && index_errors == 0; }
};

// How a clone came to be, for `user.snapdisk.origin`.
struct CloneOrigin {
  bool is_clone = false;
  NodeId image = 0;          // source image (may since be deleted)
  std::string image_name;    // its name when cloned
  std::string snapshot_name; // empty when cloned from the live image
};

class Store {
 public:
  // Opens (or, with options.create_if_missing, creates) the store at `path`.
  // Fails with Busy if another process has it open, Corruption if the
  // directory holds a damaged or foreign store, IOError otherwise.
  static Status Open(const Options& options, const std::string& path,
                     std::unique_ptr<Store>* store);

  virtual ~Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // ---- namespace: directories (projects) and images -----------------------
  virtual Status Lookup(NodeId parent, std::string_view name, NodeAttr* attr) = 0;
  virtual Status GetAttr(NodeId node, NodeAttr* attr) = 0;
  // Changes attributes. set_size on an image resizes it: growing reads zeros,
  // shrinking drops live data past the end (never snapshot data).
  virtual Status SetAttr(NodeId node, const AttrChange& change, NodeAttr* attr) = 0;
  virtual Status CreateImage(NodeId parent, std::string_view name, uint32_t mode,
                             uint32_t uid, uint32_t gid, NodeAttr* attr) = 0;
  virtual Status MakeDirectory(NodeId parent, std::string_view name, uint32_t mode,
                               uint32_t uid, uint32_t gid, NodeAttr* attr) = 0;
  // Removes an image. Busy while it has snapshots unless `cascade`, which
  // deletes them too (protected ones still refuse). An image that is open or
  // is the base of a clone disappears from the namespace at once; its space
  // is reclaimed when nothing uses it any more.
  virtual Status RemoveImage(NodeId parent, std::string_view name, bool cascade) = 0;
  virtual Status RemoveDirectory(NodeId parent, std::string_view name) = 0;
  // Moves a node. An existing target image is replaced (Busy if it has
  // snapshots); `no_replace` makes an existing target AlreadyExists.
  virtual Status Rename(NodeId parent, std::string_view name, NodeId new_parent,
                        std::string_view new_name, bool no_replace) = 0;
  virtual Status ReadDirectory(NodeId dir, std::vector<DirEntry>* entries) = 0;
  virtual Status Parent(NodeId node, NodeId* parent) = 0;
  // Path of a node from the root, for logs and the CLI ("team-a/db.img").
  virtual std::string PathOf(NodeId node) = 0;

  // Extended attributes of images and directories (the fs layer allows only
  // the user. namespace and reserves user.snapdisk.).
  virtual Status GetXattr(NodeId node, std::string_view name, std::string* value) = 0;
  virtual Status SetXattr(NodeId node, std::string_view name, std::string_view value,
                          bool create_only, bool replace_only) = 0;
  virtual Status ListXattr(NodeId node, std::vector<std::string>* names) = 0;
  virtual Status RemoveXattr(NodeId node, std::string_view name) = 0;

  // ---- image data ---------------------------------------------------------
  // Opens the live image (snapshot == kLive) or a frozen snapshot view.
  // `writable` on a snapshot is ReadOnly.
  virtual Status OpenImage(NodeId image, SnapshotId snapshot, bool writable,
                           std::unique_ptr<ImageHandle>* handle) = 0;

  // Makes `dst` (an existing, empty image without snapshots) a thin clone of
  // `src` at `snapshot` (kLive: the live image as of now). Constant time: no
  // data is copied or scanned; later writes to either side are independent.
  virtual Status CloneImage(NodeId src, SnapshotId snapshot, NodeId dst) = 0;

  // copy_file_range: copies `len` bytes from src (live or snapshot) at
  // src_offset to the live image dst at dst_offset, stopping at the end of
  // the source; sets *copied. A copy of the whole source (both offsets 0,
  // len >= its size) into an empty image without snapshots is a constant-
  // time clone (CloneImage); later calls that continue such a copy at equal
  // offsets return at once, as the bytes are already there. Other ranges
  // are copied byte for byte.
  virtual Status CopyRange(NodeId src, SnapshotId snapshot, uint64_t src_offset,
                           NodeId dst, uint64_t dst_offset, uint64_t len,
                           uint64_t* copied) = 0;

  virtual Status GetCloneOrigin(NodeId image, CloneOrigin* origin) = 0;

  // Space referenced by / unique to the live image or one snapshot (a scan
  // of the image's index: proportional to its written blocks).
  virtual Status GetSpaceUsage(NodeId image, SnapshotId snapshot, SpaceUsage* usage) = 0;

  // ---- snapshots ----------------------------------------------------------
  // Takes a snapshot of the live image. Constant time in the image's size
  // and in its number of snapshots. When it returns the snapshot survives a
  // crash of the process (kill -9); like mkdir on a disk file system, it
  // survives a crash of the machine after the next sync of the image or of
  // the store (fsync of the image or of a directory of the mount).
  virtual Status CreateSnapshot(NodeId image, std::string_view name, SnapshotInfo* info) = 0;
  // Snapshots several images at one instant (a consistency group): all or none.
  virtual Status CreateGroupSnapshot(const std::vector<NodeId>& images, std::string_view name,
                                     std::vector<SnapshotInfo>* infos) = 0;
  // Visible snapshots of an image, oldest first.
  virtual Status ListSnapshots(NodeId image, std::vector<SnapshotInfo>* snapshots) = 0;
  virtual Status GetSnapshot(NodeId image, std::string_view name, SnapshotInfo* info) = 0;
  virtual Status GetSnapshotById(SnapshotId id, SnapshotInfo* info) = 0;
  // Deletes a snapshot (Busy if protected). Its space is reclaimed in the
  // background; clones made from it and open handles on it keep working.
  virtual Status DeleteSnapshot(NodeId image, std::string_view name) = 0;
  virtual Status RenameSnapshot(NodeId image, std::string_view name,
                                std::string_view new_name) = 0;
  virtual Status SetSnapshotDescription(NodeId image, std::string_view name,
                                        std::string_view description) = 0;
  // value == nullptr removes the key (NoData if absent).
  virtual Status SetSnapshotProperty(NodeId image, std::string_view name, std::string_view key,
                                     const std::string* value) = 0;
  virtual Status ClearSnapshotProperties(NodeId image, std::string_view name) = 0;
  virtual Status SetSnapshotProtected(NodeId image, std::string_view name, bool is_protected) = 0;
  // Byte ranges where the image at `to` (a snapshot, or kLive) may differ
  // from the image at `from` (an older snapshot; kLive means "from nothing":
  // every range with data). Ranges are 4 KiB-granular, sorted and merged,
  // like `rbd diff`. Cost: a scan of the versions written between the two
  // (no data is read) when no rollback or shrink lies between them;
  // otherwise a comparison of the two views' data.
  struct Extent {
    uint64_t offset = 0, length = 0;
  };
  virtual Status Diff(NodeId image, SnapshotId from, SnapshotId to, std::vector<Extent>* extents) = 0;

  // Makes the live image read exactly as the snapshot, atomically and in
  // constant time; newer snapshots are kept. Busy while the image is open
  // for writing unless `force`.
  virtual Status Rollback(NodeId image, std::string_view name, bool force) = 0;

  // ---- whole store ---------------------------------------------------------
  virtual Status GetStats(StoreStats* stats) = 0;
  // Makes everything written so far durable.
  virtual Status SyncAll() = 0;
  // Reclaims unreferenced blocks now (the background collector does this
  // after deletions); returns when done.
  virtual Status CollectGarbage() = 0;
  // Verifies every stored checksum and the index's internal consistency.
  // `progress` (may be empty) is called with (done, total) block versions.
  virtual Status Check(CheckReport* report,
                       const std::function<void(uint64_t, uint64_t)>& progress) = 0;

 protected:
  Store() = default;
};

}  // namespace snapdisk
