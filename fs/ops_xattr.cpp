// Extended attributes. Live images and directories store user.* in the
// engine; user.snapdisk.* is reserved:
//   on images, read-only: user.snapdisk.used (bytes the live image stores),
//     .unique (bytes only it holds), .snapshots (count), .origin (clones only:
//     "IMAGE" or "IMAGE@SNAPSHOT")
//   on images, write-only action: user.snapdisk.rollback = SNAPSHOT (or
//     "force:SNAPSHOT") rolls the live image back (Store::Rollback).
// Mirror directories under .snapshots: the write-only action
// user.snapdisk.snapshot takes a group snapshot (group_snapshot.h).
// Snapshot directories: see xattr_snapshot.cpp. The rest of .snapshots has
// no attributes and is read-only.
#include <sys/xattr.h>

#include <string>
#include <vector>

#include "fs/group_snapshot.h"
#include "fs/inode.h"
#include "fs/op_util.h"
#include "fs/ops.h"
#include "fs/urgent_scope.h"
#include "fs/xattr.h"

namespace snapdisk::fs {
namespace {

constexpr std::string_view kRollback = "user.snapdisk.rollback";
constexpr std::string_view kForcePrefix = "force:";

bool IsImage(SnapFs& fs, NodeId node) {
  NodeAttr attr;
  return fs.store()->GetAttr(node, &attr).ok() && attr.kind == NodeKind::kImage;
}

Status LiveImageFact(SnapFs& fs, NodeId image, std::string_view fact, std::string* value) {
  if (fact == "used" || fact == "unique") {
    SpaceUsage usage;
    SNAPDISK_RETURN_IF_ERROR(fs.store()->GetSpaceUsage(image, kLive, &usage));
    *value = std::to_string(fact == "used" ? usage.referenced : usage.unique);
    return Status::OK();
  }
  if (fact == "snapshots") {
    std::vector<SnapshotInfo> snapshots;
    SNAPDISK_RETURN_IF_ERROR(fs.store()->ListSnapshots(image, &snapshots));
    size_t visible = 0;
    for (const SnapshotInfo& s : snapshots) visible += s.hidden ? 0 : 1;
    *value = std::to_string(visible);
    return Status::OK();
  }
  if (fact == "origin") {
    CloneOrigin origin;
    SNAPDISK_RETURN_IF_ERROR(fs.store()->GetCloneOrigin(image, &origin));
    if (!origin.is_clone) return Status::NoData("not a clone");
    *value = origin.image_name;
    if (!origin.snapshot_name.empty()) *value += "@" + origin.snapshot_name;
    return Status::OK();
  }
  return Status::NoData("no such fact");
}

Status DoGetxattr(SnapFs& fs, fuse_ino_t ino, std::string_view name, std::string* value) {
  switch (TypeOf(ino)) {
    case InodeType::kLive:
      if (HasPrefix(name, kReservedPrefix)) {
        if (!IsImage(fs, IdOf(ino))) return Status::NoData("directories have no snapdisk facts");
        return LiveImageFact(fs, IdOf(ino), name.substr(kReservedPrefix.size()), value);
      }
      return fs.store()->GetXattr(IdOf(ino), name, value);
    case InodeType::kSnapDir:
    case InodeType::kFrozen:
      return SnapGetXattr(fs, ino, name, value);
    default:
      return Status::NoData("no attributes here");
  }
}

Status DoListxattr(SnapFs& fs, fuse_ino_t ino, std::string* packed) {
  std::vector<std::string> names;
  switch (TypeOf(ino)) {
    case InodeType::kLive: {
      SNAPDISK_RETURN_IF_ERROR(fs.store()->ListXattr(IdOf(ino), &names));
      if (IsImage(fs, IdOf(ino))) {
        for (const char* fact : {"used", "unique", "snapshots"}) {
          names.push_back(std::string(kReservedPrefix) + fact);
        }
        CloneOrigin origin;
        if (fs.store()->GetCloneOrigin(IdOf(ino), &origin).ok() && origin.is_clone) {
          names.push_back(std::string(kReservedPrefix) + "origin");
        }
      }
      break;
    }
    case InodeType::kSnapDir:
    case InodeType::kFrozen:
      SNAPDISK_RETURN_IF_ERROR(SnapListXattr(fs, ino, &names));
      break;
    default:
      break;
  }
  packed->clear();
  for (const std::string& name : names) {
    packed->append(name);
    packed->push_back('\0');
  }
  return Status::OK();
}

// What a setxattr changed behind the kernel's caches, to invalidate after
// the reply.
struct StaleCaches {
  bool image_data = false;            // the image's data (a rollback)
  std::vector<uint64_t> folders;      // snapshot folders whose entry `name` changed
  std::string snapshot_name;
};

Status DoSetxattr(SnapFs& fs, fuse_ino_t ino, std::string_view name, std::string_view value,
                  int flags, StaleCaches* stale) {
  if (TypeOf(ino) == InodeType::kSnapDir) {
    if (!HasPrefix(name, kUserPrefix)) return Status::NotSupported("only user.* attributes");
    return SnapSetXattr(fs, ino, name, value, flags);
  }
  if (TypeOf(ino) == InodeType::kMirror) {
    SNAPDISK_RETURN_IF_ERROR(MirrorSetXattr(fs, ino, name, value, &stale->folders));
    stale->snapshot_name = std::string(value.substr(0, value.find('\n')));
    return Status::OK();
  }
  if (TypeOf(ino) != InodeType::kLive) return ReadOnlyTree("setxattr");
  if (!HasPrefix(name, kUserPrefix)) return Status::NotSupported("only user.* attributes");
  if (name == kRollback && IsImage(fs, IdOf(ino))) {
    const bool force = HasPrefix(value, kForcePrefix);
    if (force) value.remove_prefix(kForcePrefix.size());
    SNAPDISK_RETURN_IF_ERROR(fs.store()->Rollback(IdOf(ino), value, force));
    Log(LogLevel::kInfo, "image '{}' rolled back to snapshot '{}'{}", fs.store()->PathOf(IdOf(ino)),
        value, force ? " (forced)" : "");
    stale->image_data = true;
    return Status::OK();
  }
  if (HasPrefix(name, kReservedPrefix)) {
    return Status::Permission(std::string(name) + " is reserved and read-only");
  }
  return fs.store()->SetXattr(IdOf(ino), name, value, (flags & XATTR_CREATE) != 0,
                              (flags & XATTR_REPLACE) != 0);
}

Status DoRemovexattr(SnapFs& fs, fuse_ino_t ino, std::string_view name) {
  if (TypeOf(ino) == InodeType::kSnapDir) {
    if (!HasPrefix(name, kUserPrefix)) return Status::NotSupported("only user.* attributes");
    return SnapRemoveXattr(fs, ino, name);
  }
  if (TypeOf(ino) != InodeType::kLive) return ReadOnlyTree("removexattr");
  if (!HasPrefix(name, kUserPrefix)) return Status::NotSupported("only user.* attributes");
  if (HasPrefix(name, kReservedPrefix)) {
    return Status::Permission(std::string(name) + " is reserved and cannot be removed");
  }
  return fs.store()->RemoveXattr(IdOf(ino), name);
}

// The size-probe protocol of getxattr/listxattr.
void ReplyXattrValue(fuse_req_t req, size_t size, const std::string& value) {
  if (size == 0) {
    fuse_reply_xattr(req, value.size());
  } else if (size < value.size()) {
    fuse_reply_err(req, ERANGE);
  } else {
    fuse_reply_buf(req, value.data(), value.size());
  }
}

}  // namespace

void OpGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  // Only user.* exists (as setxattr says with ENOTSUP). Answering the same
  // here, not ENODATA, lets `ls -l` (coreutils) remember that this mount has
  // no SELinux labels or POSIX ACLs after the first entry instead of asking
  // three times per entry: 30,000 round trips for a folder of 10,000
  // snapshots. Quietly: ls and cp probe these names all the time.
  if (!HasPrefix(NameOf(name), kUserPrefix)) {
    fuse_reply_err(req, ENOTSUP);
    return;
  }
  std::string value;
  int err = RunOp(
      "getxattr", ino, NameOf(name),
      [&] { return DoGetxattr(FsOf(req), ino, NameOf(name), &value); }, ENODATA);
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  ReplyXattrValue(req, size, value);
}

void OpListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  std::string packed;
  int err = RunOp("listxattr", ino, "", [&] { return DoListxattr(FsOf(req), ino, &packed); });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  ReplyXattrValue(req, size, packed);
}

void OpSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) {
  // A group snapshot: writers of its images wait until it is taken and replied.
  UrgentScope urgent(TypeOf(ino) == InodeType::kMirror);
  SnapFs& fs = FsOf(req);
  StaleCaches stale;
  int err = RunOp("setxattr", ino, NameOf(name), [&] {
    return DoSetxattr(fs, ino, NameOf(name), std::string_view(value, size), flags, &stale);
  });
  // Names in snapshot folders: before the reply, so that the new snapshot is
  // what everyone sees once setxattr has returned. The folders are not the
  // inode this setxattr holds (a mirror), so this cannot deadlock. ENOENT:
  // the kernel does not have the folder cached; nothing to drop.
  if (err == 0 && fs.session() != nullptr) {
    for (uint64_t folder : stale.folders) {
      fuse_lowlevel_notify_inval_entry(fs.session(), folder, stale.snapshot_name.c_str(),
                                       stale.snapshot_name.size());
    }
  }
  fuse_reply_err(req, err);
  // The image's data after the reply, never before: the kernel holds that
  // inode while it waits for this request.
  if (err == 0 && stale.image_data && fs.session() != nullptr) {
    fuse_lowlevel_notify_inval_inode(fs.session(), ino, 0, 0);
  }
}

void OpRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  fuse_reply_err(req, RunOp("removexattr", ino, NameOf(name),
                            [&] { return DoRemovexattr(FsOf(req), ino, NameOf(name)); }));
}

}  // namespace snapdisk::fs
