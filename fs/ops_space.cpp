// fallocate, lseek (SEEK_DATA/SEEK_HOLE) and copy_file_range: the space and
// sharing operations.
#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <algorithm>

#include "fs/attr.h"
#include "fs/inode.h"
#include "fs/op_util.h"
#include "fs/ops.h"

namespace snapdisk::fs {
namespace {

// The reply to copy_file_range is 32 bits wide (libfuse 3.14).
constexpr uint64_t kMaxCopyChunk = 0xFFFFF000;

Status GrowTo(SnapFs& fs, NodeId node, uint64_t end) {
  NodeAttr attr;
  SNAPDISK_RETURN_IF_ERROR(fs.store()->GetAttr(node, &attr));
  if (attr.size >= end) return Status::OK();
  AttrChange change;
  change.set_size = true;
  change.size = end;
  return fs.store()->SetAttr(node, change, &attr);
}

Status DoFallocate(SnapFs& fs, fuse_ino_t ino, int mode, off_t offset, off_t length,
                   ImageHandle* handle) {
  if (TypeOf(ino) != InodeType::kLive) return Status::ReadOnly("a frozen view cannot be changed");
  if (offset < 0 || length <= 0) return Status::InvalidArgument("bad fallocate range");
  const uint64_t off = static_cast<uint64_t>(offset);
  const uint64_t len = static_cast<uint64_t>(length);
  const NodeId node = IdOf(ino);
  const bool keep_size = (mode & FALLOC_FL_KEEP_SIZE) != 0;
  const int op = mode & ~FALLOC_FL_KEEP_SIZE;
  if (handle == nullptr) return Status::InvalidArgument("fallocate without an open file");
  switch (op) {
    case 0:
      // Thin images allocate nothing ahead of time: just the size.
      return keep_size ? Status::OK() : GrowTo(fs, node, off + len);
    case FALLOC_FL_PUNCH_HOLE:
      if (!keep_size) return Status::NotSupported("punch-hole requires FALLOC_FL_KEEP_SIZE");
      return handle->Discard(off, len);
    case FALLOC_FL_ZERO_RANGE:
      SNAPDISK_RETURN_IF_ERROR(handle->Discard(off, len));
      return keep_size ? Status::OK() : GrowTo(fs, node, off + len);
    default:
      return Status::NotSupported("fallocate mode " + std::to_string(mode) + " is not supported");
  }
}

Status DoLseek(fuse_ino_t ino, off_t off, int whence, ImageHandle* handle, off_t* result) {
  if (whence == SEEK_SET) {
    *result = off;
    return Status::OK();
  }
  if (whence != SEEK_DATA && whence != SEEK_HOLE) {
    return Status::InvalidArgument("lseek: only SEEK_DATA and SEEK_HOLE reach the daemon");
  }
  if (off < 0) return Status::OutOfRange("negative offset");
  if (handle == nullptr) return Status::InvalidArgument("lseek without an open file");
  uint64_t found = 0;
  SNAPDISK_RETURN_IF_ERROR(handle->Seek(static_cast<uint64_t>(off),
                                        whence == SEEK_DATA ? SeekWhence::kData : SeekWhence::kHole,
                                        &found));
  *result = static_cast<off_t>(found);
  return Status::OK();
}

Status DoCopyFileRange(SnapFs& fs, fuse_ino_t ino_in, off_t off_in, fuse_ino_t ino_out,
                       off_t off_out, size_t len, int flags, uint64_t* copied) {
  if (flags != 0) return Status::InvalidArgument("copy_file_range flags must be 0");
  if (TypeOf(ino_out) != InodeType::kLive)
    return Status::ReadOnly("cannot copy into a frozen view");
  if (off_in < 0 || off_out < 0) return Status::InvalidArgument("negative offset");
  NodeId src = 0;
  SnapshotId snapshot = kLive;
  switch (TypeOf(ino_in)) {
    case InodeType::kLive:
      src = IdOf(ino_in);
      break;
    case InodeType::kFrozen: {
      SnapshotInfo info;
      SNAPDISK_RETURN_IF_ERROR(ResolveSnapshot(fs, IdOf(ino_in), &info));
      src = info.image;
      snapshot = info.id;
      break;
    }
    default:
      return Status::IsDirectory("copy source is not a file");
  }
  // The kernel clamps a copy_file_range to kMaxCopyChunk bytes. A clamped
  // request from offset 0 is cp asking for the whole file: ask the engine for
  // everything, so it can clone, and report what fits in the reply.
  uint64_t ask = std::min<uint64_t>(len, kMaxCopyChunk);
  if (len >= kMaxCopyChunk && off_in == 0 && off_out == 0) ask = UINT64_MAX;
  SNAPDISK_RETURN_IF_ERROR(fs.store()->CopyRange(src, snapshot, static_cast<uint64_t>(off_in),
                                                 IdOf(ino_out), static_cast<uint64_t>(off_out), ask,
                                                 copied));
  *copied = std::min<uint64_t>({*copied, len, kMaxCopyChunk});
  return Status::OK();
}

}  // namespace

void OpFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                 fuse_file_info* fi) {
  int err = RunOp("fallocate", ino, "",
                  [&] { return DoFallocate(FsOf(req), ino, mode, offset, length, HandleOf(fi)); });
  fuse_reply_err(req, err);
}

void OpLseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
  off_t result = 0;
  // ENXIO is lseek's normal "no more data/holes" answer: not worth a log line.
  int err = RunOp(
      "lseek", ino, "", [&] { return DoLseek(ino, off, whence, HandleOf(fi), &result); }, ENXIO);
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_lseek(req, result);
}

void OpCopyFileRange(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info*,
                     fuse_ino_t ino_out, off_t off_out, fuse_file_info*, size_t len, int flags) {
  uint64_t copied = 0;
  int err = RunOp("copy_file_range", ino_out, "", [&] {
    return DoCopyFileRange(FsOf(req), ino_in, off_in, ino_out, off_out, len, flags, &copied);
  });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_write(req, static_cast<size_t>(copied));
}

}  // namespace snapdisk::fs
