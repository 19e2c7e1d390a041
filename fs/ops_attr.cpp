// lookup, forget, getattr, setattr, statfs.
#include <sys/statvfs.h>
#include <time.h>

#include "fs/attr.h"
#include "fs/inode.h"
#include "fs/op_util.h"
#include "fs/ops.h"
#include "fs/snapshot_tree.h"

namespace snapdisk::fs {
namespace {

Status DoLookup(SnapFs& fs, fuse_ino_t parent, std::string_view name, fuse_entry_param* e) {
  uint64_t ino = 0;
  if (TypeOf(parent) == InodeType::kLive) {
    if (parent == kRootNode && name == kSnapshotsDirName) {
      ino = kSnapshotsRootIno;
    } else {
      NodeAttr attr;
      SNAPDISK_RETURN_IF_ERROR(fs.store()->Lookup(IdOf(parent), name, &attr));
      *e = {};
      StatLive(fs, attr, &e->attr);
      e->ino = attr.id;
      e->generation = 1;
      e->entry_timeout = fs.config().entry_timeout;
      e->attr_timeout = fs.config().attr_timeout;
      return Status::OK();
    }
  } else {
    SNAPDISK_RETURN_IF_ERROR(TreeLookup(fs, parent, name, &ino));
  }
  return MakeEntry(fs, ino, e);
}

// fstat (and the kernel's size checks on read) of an open frozen view whose
// snapshot was deleted while it was open: answer from what open saw, with no
// links, as for an unlinked file. The open handle still reads the snapshot.
// The kernel sends fstat's getattr without the file handle, so look among
// the open files.
Status DoGetattr(SnapFs& fs, fuse_ino_t ino, struct stat* st) {
  Status status = StatInode(fs, ino, st);
  if (status.Is(Status::Code::kNotFound) && TypeOf(ino) == InodeType::kFrozen) {
    if (std::optional<struct stat> opened = fs.OpenFrozenAttr(ino)) {
      *st = *opened;
      st->st_nlink = 0;
      return Status::OK();
    }
  }
  return status;
}

Timestamp Now() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return Timestamp{ts.tv_sec, static_cast<uint32_t>(ts.tv_nsec)};
}

Timestamp FromTimespec(const timespec& ts) {
  return Timestamp{ts.tv_sec, static_cast<uint32_t>(ts.tv_nsec)};
}

Status DoSetattr(SnapFs& fs, fuse_ino_t ino, const struct stat& in, int to_set, struct stat* out) {
  if (TypeOf(ino) != InodeType::kLive) return ReadOnlyTree("setattr");
  AttrChange change;
  if (to_set & FUSE_SET_ATTR_MODE) {
    change.set_mode = true;
    change.mode = in.st_mode & 07777;
  }
  if (to_set & FUSE_SET_ATTR_UID) {
    change.set_uid = true;
    change.uid = in.st_uid;
  }
  if (to_set & FUSE_SET_ATTR_GID) {
    change.set_gid = true;
    change.gid = in.st_gid;
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (in.st_size < 0) return Status::InvalidArgument("negative size");
    change.set_size = true;
    change.size = static_cast<uint64_t>(in.st_size);
  }
  if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
    change.set_atime = true;
    change.atime = Now();
  } else if (to_set & FUSE_SET_ATTR_ATIME) {
    change.set_atime = true;
    change.atime = FromTimespec(in.st_atim);
  }
  if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
    change.set_mtime = true;
    change.mtime = Now();
  } else if (to_set & FUSE_SET_ATTR_MTIME) {
    change.set_mtime = true;
    change.mtime = FromTimespec(in.st_mtim);
  }
  NodeAttr attr;
  SNAPDISK_RETURN_IF_ERROR(fs.store()->SetAttr(IdOf(ino), change, &attr));
  StatLive(fs, attr, out);
  return Status::OK();
}

Status DoStatfs(SnapFs& fs, struct statvfs* out) {
  StoreStats stats;
  SNAPDISK_RETURN_IF_ERROR(fs.store()->GetStats(&stats));
  constexpr uint64_t kUnit = 4096;
  *out = {};
  out->f_bsize = kUnit;
  out->f_frsize = kUnit;
  out->f_blocks = stats.capacity_bytes / kUnit;
  out->f_bfree = stats.available_bytes / kUnit;
  out->f_bavail = stats.available_bytes / kUnit;
  // Nodes cost only index entries: report plenty, minus what exists.
  constexpr uint64_t kFiles = uint64_t{1} << 32;
  const uint64_t used = stats.images + stats.directories + stats.snapshots;
  out->f_files = kFiles;
  out->f_ffree = used < kFiles ? kFiles - used : 0;
  out->f_favail = out->f_ffree;
  out->f_namemax = 255;
  return Status::OK();
}

}  // namespace

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_entry_param e{};
  int err = RunOp(
      "lookup", parent, NameOf(name), [&] { return DoLookup(FsOf(req), parent, NameOf(name), &e); },
      ENOENT);
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_entry(req, &e);
}

// Inode numbers are computed, not tabled (inode.h): nothing to forget.
void OpForget(fuse_req_t req, fuse_ino_t, uint64_t) { fuse_reply_none(req); }
void OpForgetMulti(fuse_req_t req, size_t, fuse_forget_data*) { fuse_reply_none(req); }

void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  struct stat st {};
  int err = RunOp("getattr", ino, "", [&] { return DoGetattr(FsOf(req), ino, &st); });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_attr(req, &st, FsOf(req).config().attr_timeout);
}

void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  struct stat st {};
  int err =
      RunOp("setattr", ino, "", [&] { return DoSetattr(FsOf(req), ino, *attr, to_set, &st); });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_attr(req, &st, FsOf(req).config().attr_timeout);
}

void OpStatfs(fuse_req_t req, fuse_ino_t ino) {
  struct statvfs sv {};
  int err = RunOp("statfs", ino, "", [&] { return DoStatfs(FsOf(req), &sv); });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_statfs(req, &sv);
}

}  // namespace snapdisk::fs
