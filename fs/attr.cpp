#include "fs/attr.h"

#include <string_view>

#include "fs/inode.h"

namespace snapdisk::fs {
namespace {

// Permission bits of the synthetic inodes. Owners come from the mirrored
// directory or the image.
// 0755: with default_permissions, setxattr user.snapdisk.snapshot (a group
// snapshot) needs write permission; everything else in them is EROFS.
constexpr uint32_t kMirrorPerm = 0755;      // .snapshots and its directories
constexpr uint32_t kSnapFolderPerm = 0755;  // mkdir/rmdir/mv in it manage snapshots
// 0755 rather than 0555: with default_permissions the kernel demands write
// permission on a snapshot directory for `rm -r` (unlink of the frozen view)
// and for setfattr user.description; everything else in it is EROFS anyway.
constexpr uint32_t kSnapDirPerm = 0755;

timespec ToTimespec(const Timestamp& t) {
  timespec ts{};
  ts.tv_sec = t.sec;
  ts.tv_nsec = t.nsec;
  return ts;
}

timespec NsToTimespec(int64_t ns) {
  timespec ts{};
  ts.tv_sec = ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  if (ts.tv_nsec < 0) {
    ts.tv_nsec += 1000000000;
    ts.tv_sec -= 1;
  }
  return ts;
}

blkcnt_t ThickBlocks(uint64_t size) { return static_cast<blkcnt_t>((size + 511) / 512); }

void StatDirLike(const NodeAttr& owner, uint64_t ino, uint32_t perm, struct stat* st) {
  *st = {};
  st->st_ino = ino;
  st->st_mode = S_IFDIR | perm;
  st->st_nlink = 2;
  st->st_uid = owner.uid;
  st->st_gid = owner.gid;
  st->st_atim = ToTimespec(owner.atime);
  st->st_mtim = ToTimespec(owner.mtime);
  st->st_ctim = ToTimespec(owner.ctime);
}

Status StatMirror(SnapFs& fs, uint64_t ino, struct stat* st) {
  NodeAttr dir;
  SNAPDISK_RETURN_IF_ERROR(fs.store()->GetAttr(IdOf(ino), &dir));
  if (dir.kind != NodeKind::kDirectory) return Status::NotFound("mirror of a non-directory");
  StatDirLike(dir, ino, kMirrorPerm, st);
  st->st_blksize = fs.block_size();
  return Status::OK();
}

Status StatSnapFolder(SnapFs& fs, uint64_t ino, struct stat* st) {
  NodeAttr image;
  SNAPDISK_RETURN_IF_ERROR(fs.store()->GetAttr(IdOf(ino), &image));
  if (image.kind != NodeKind::kImage) return Status::NotFound("snapshot folder of a non-image");
  StatDirLike(image, ino, kSnapFolderPerm, st);
  st->st_blksize = fs.block_size();
  return Status::OK();
}

Status StatSnapDir(SnapFs& fs, uint64_t ino, struct stat* st) {
  SnapDir dir;
  SNAPDISK_RETURN_IF_ERROR(ResolveSnapDir(fs, IdOf(ino), &dir));
  NodeAttr image;
  if (!fs.store()->GetAttr(dir.info.image, &image).ok()) image = NodeAttr{};
  StatSnapDirOf(fs, image, ino, dir.info.created_ns, st);
  return Status::OK();
}

Status StatFrozen(SnapFs& fs, uint64_t ino, struct stat* st) {
  SnapshotInfo info;
  SNAPDISK_RETURN_IF_ERROR(ResolveSnapshot(fs, IdOf(ino), &info));
  NodeAttr image;
  if (!fs.store()->GetAttr(info.image, &image).ok()) image = NodeAttr{};
  *st = {};
  st->st_ino = ino;
  // The image's own permission bits, as files in ZFS's .zfs/snapshot keep
  // theirs: `cp FROZEN new.img` copies the source's mode, and a clone must
  // come out writable. The view itself is never writable, whatever the bits
  // say: open for writing, truncate and chmod answer EROFS, for root too.
  // They are the image's bits when the snapshot was taken: a later chmod or
  // chown of the live image must not open up old data.
  const uint32_t mode = info.has_owner ? info.mode : image.mode;
  st->st_mode = S_IFREG | (mode & 07777);
  st->st_nlink = 1;
  st->st_uid = info.has_owner ? info.uid : image.uid;
  st->st_gid = info.has_owner ? info.gid : image.gid;
  st->st_size = static_cast<off_t>(info.size);
  st->st_blocks = ThickBlocks(info.size);
  st->st_blksize = fs.block_size();
  st->st_atim = st->st_mtim = st->st_ctim = NsToTimespec(info.created_ns);
  return Status::OK();
}

}  // namespace

void StatLive(const SnapFs& fs, const NodeAttr& attr, struct stat* st) {
  *st = {};
  st->st_ino = attr.id;
  const bool dir = attr.kind == NodeKind::kDirectory;
  st->st_mode = (dir ? S_IFDIR : S_IFREG) | (attr.mode & 07777);
  st->st_nlink = dir ? 2 : (attr.linked ? 1 : 0);
  st->st_uid = attr.uid;
  st->st_gid = attr.gid;
  st->st_size = dir ? 0 : static_cast<off_t>(attr.size);
  st->st_blocks = dir ? 0 : ThickBlocks(attr.size);
  st->st_blksize = fs.block_size();
  st->st_atim = ToTimespec(attr.atime);
  st->st_mtim = ToTimespec(attr.mtime);
  st->st_ctim = ToTimespec(attr.ctime);
}

Status StatInode(SnapFs& fs, uint64_t ino, struct stat* st) {
  switch (TypeOf(ino)) {
    case InodeType::kLive: {
      NodeAttr attr;
      SNAPDISK_RETURN_IF_ERROR(fs.store()->GetAttr(IdOf(ino), &attr));
      StatLive(fs, attr, st);
      return Status::OK();
    }
    case InodeType::kMirror:
      return StatMirror(fs, ino, st);
    case InodeType::kSnapFolder:
      return StatSnapFolder(fs, ino, st);
    case InodeType::kSnapDir:
      return StatSnapDir(fs, ino, st);
    case InodeType::kFrozen:
      return StatFrozen(fs, ino, st);
  }
  return Status::NotFound("unknown inode type");
}

void StatSnapDirOf(const SnapFs& fs, const NodeAttr& image, uint64_t ino, int64_t created_ns,
                   struct stat* st) {
  StatDirLike(image, ino, kSnapDirPerm, st);
  st->st_atim = st->st_mtim = st->st_ctim = NsToTimespec(created_ns);
  st->st_blksize = fs.block_size();
}

double EntryTimeout(const SnapFs& fs, uint64_t ino) {
  switch (TypeOf(ino)) {
    case InodeType::kLive:
      return fs.config().entry_timeout;
    case InodeType::kMirror:
      // ROOT/.snapshots: a reserved name that always means the same inode.
      return ino == kSnapshotsRootIno ? fs.config().entry_timeout
                                      : fs.config().tree_entry_timeout;
    case InodeType::kSnapFolder:
    case InodeType::kSnapDir:
      return fs.config().snapshot_entry_timeout;
    default:
      return fs.config().tree_entry_timeout;
  }
}

void MakeEntryFrom(const SnapFs& fs, const struct stat& st, fuse_entry_param* entry) {
  *entry = {};
  entry->attr = st;
  entry->ino = st.st_ino;
  entry->generation = 1;
  entry->entry_timeout = EntryTimeout(fs, st.st_ino);
  entry->attr_timeout = fs.config().attr_timeout;
}

Status MakeEntry(SnapFs& fs, uint64_t ino, fuse_entry_param* entry) {
  struct stat st {};
  SNAPDISK_RETURN_IF_ERROR(StatInode(fs, ino, &st));
  MakeEntryFrom(fs, st, entry);
  return Status::OK();
}

Status ResolveSnapshot(SnapFs& fs, SnapshotId id, SnapshotInfo* info) {
  SNAPDISK_RETURN_IF_ERROR(fs.store()->GetSnapshotById(id, info));
  if (info->hidden) return Status::NotFound("internal snapshot");
  return Status::OK();
}

Status ResolveSnapDir(SnapFs& fs, SnapshotId id, SnapDir* dir) {
  Status st = ResolveSnapshot(fs, id, &dir->info);
  if (st.ok()) {
    dir->tombstone = false;
    return st;
  }
  if (!st.Is(Status::Code::kNotFound)) return st;
  std::optional<Tombstone> t = fs.FindTombstone(id);
  if (!t) return st;
  dir->info = SnapshotInfo{};
  dir->info.id = id;
  dir->info.image = t->image;
  dir->info.name = t->name;
  dir->info.created_ns = t->created_ns;
  dir->tombstone = true;
  return Status::OK();
}

Status ImageName(SnapFs& fs, NodeId image, std::string* name) {
  std::string path = fs.store()->PathOf(image);
  if (path.empty()) return Status::NotFound("image has no path (deleted?)");
  std::string_view view(path);
  size_t slash = view.rfind('/');
  if (slash != std::string_view::npos) view.remove_prefix(slash + 1);
  if (view.empty()) return Status::NotFound("image has no name");
  *name = std::string(view);
  return Status::OK();
}

}  // namespace snapdisk::fs
