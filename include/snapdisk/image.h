// snapdisk/image.h — nodes of the store's namespace and access to image data.
//
// The store holds a small tree: directories (projects) and images (virtual
// disks). Both are "nodes" with a stable NodeId and POSIX-like attributes.
// Image data is reached through an ImageHandle, opened either on the live
// image (read-write) or on one of its snapshots (read-only).
//
// Thread-safety: an ImageHandle may be used from many threads at once;
// writes to different blocks run in parallel, writes to the same block are
// ordered. A handle keeps what it reads alive: a snapshot deleted while a
// handle is open on it stays readable through that handle until it closes.
// Lifetime: every handle must be destroyed before the Store that opened it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "snapdisk/status.h"

namespace snapdisk {

using NodeId = uint64_t;
constexpr NodeId kRootNode = 1;

enum class NodeKind : uint8_t { kDirectory = 1, kImage = 2 };

struct Timestamp {
  int64_t sec = 0;
  uint32_t nsec = 0;
};

struct NodeAttr {
  NodeId id = 0;
  NodeKind kind = NodeKind::kImage;
  uint32_t mode = 0;  // permission bits only (07777); the type is `kind`
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;  // images: the disk size in bytes; directories: 0
  Timestamp atime, mtime, ctime;
  // False for an image removed while still open: it lives on, nameless,
  // until its last handle closes (POSIX unlink; stat reports no links).
  bool linked = true;
};

// Which attributes SetAttr changes; fields without their flag are ignored.
struct AttrChange {
  bool set_mode = false, set_uid = false, set_gid = false, set_size = false;
  bool set_atime = false, set_mtime = false;
  uint32_t mode = 0, uid = 0, gid = 0;
  uint64_t size = 0;
  Timestamp atime, mtime;
};

struct DirEntry {
  std::string name;
  NodeId id = 0;
  NodeKind kind = NodeKind::kImage;
};

// What lseek(SEEK_DATA / SEEK_HOLE) asks.
enum class SeekWhence { kData, kHole };

// Space use of one image (or one snapshot), in bytes.
struct SpaceUsage {
  uint64_t referenced = 0;  // data this view can read that is stored (not holes/zeros)
  uint64_t unique = 0;      // data only this view references: what deleting it frees
};

class ImageHandle {
 public:
  virtual ~ImageHandle() = default;
  ImageHandle(const ImageHandle&) = delete;
  ImageHandle& operator=(const ImageHandle&) = delete;

  // Reads up to `len` bytes at `offset` into `buf`; stops at the end of the
  // image and sets *bytes_read. Unwritten ranges read as zeros. A checksum
  // mismatch returns Corruption and never wrong bytes.
  virtual Status Read(uint64_t offset, size_t len, char* buf, size_t* bytes_read) = 0;

  // Starts reading into the page cache what a sequential stream of Reads
  // on this handle will ask for next (the last Read decided the range), so
  // that the disk works while the caller is busy with what it got. Call it
  // after handing the last Read's bytes on (after the FUSE reply); a hint:
  // it never fails and may do nothing.
  virtual void ReadAhead() {}

  // Writes `len` bytes at `offset`, growing the image if the write ends past
  // its size. All-zero 4 KiB pieces store no data. ReadOnly on a snapshot.
  virtual Status Write(uint64_t offset, const char* data, size_t len) = 0;

  // Makes [offset, offset+len) read as zeros and frees its space unless a
  // snapshot or clone still holds it. Does not change the size.
  virtual Status Discard(uint64_t offset, uint64_t len) = 0;

  // Makes everything written through any handle of this image durable: it
  // survives a crash of the process or the machine once this returns OK.
  // After a failed sync the store refuses further writes (ReadOnly).
  virtual Status Sync() = 0;

  // lseek SEEK_DATA/SEEK_HOLE from `offset`; OutOfRange at or past the end.
  virtual Status Seek(uint64_t offset, SeekWhence whence, uint64_t* result) = 0;

  virtual uint64_t Size() const = 0;
  virtual NodeId node() const = 0;
  virtual uint64_t snapshot() const = 0;  // kLive (0) or the SnapshotId
  virtual bool read_only() const = 0;

 protected:
  ImageHandle() = default;
};

// How many reads the calling thread has made that polled the disk
// (Options::read_poll_us) since it started. Compare it around a Read to learn
// whether that read polled: the FUSE transport keeps a thread on its CPU
// while its reads poll, and lets it move while they are served from the page
// cache. Thread-safe (a per-thread count).
uint64_t PolledReadsOnThisThread();

}  // namespace snapdisk
