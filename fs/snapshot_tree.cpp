#include "fs/snapshot_tree.h"

#include <sys/stat.h>

#include <cstdio>

#include "fs/attr.h"
#include "fs/inode.h"
#include "fs/log.h"

namespace snapdisk::fs {
namespace {

uint64_t TreeInoOf(const DirEntry& child) {
  return child.kind == NodeKind::kDirectory ? MakeIno(InodeType::kMirror, child.id)
                                            : MakeIno(InodeType::kSnapFolder, child.id);
}

// ".." of a mirror or folder: the mirror of the live parent, or the root
// itself for ROOT/.snapshots.
uint64_t TreeParentIno(SnapFs& fs, NodeId node) {
  if (node == kRootNode) return kRootNode;
  NodeId parent = kRootNode;
  if (!fs.store()->Parent(node, &parent).ok()) parent = kRootNode;
  return MakeIno(InodeType::kMirror, parent);
}

Status FolderImage(SnapFs& fs, uint64_t folder, NodeAttr* image) {
  if (TypeOf(folder) != InodeType::kSnapFolder)
    return Status::InvalidArgument("not a snapshot folder");
  SNAPDISK_RETURN_IF_ERROR(fs.store()->GetAttr(IdOf(folder), image));
  if (image->kind != NodeKind::kImage) return Status::NotFound("snapshot folder of a non-image");
  return Status::OK();
}

}  // namespace

Status TreeLookup(SnapFs& fs, uint64_t parent, std::string_view name, uint64_t* ino) {
  switch (TypeOf(parent)) {
    case InodeType::kMirror: {
      NodeAttr child;
      SNAPDISK_RETURN_IF_ERROR(fs.store()->Lookup(IdOf(parent), name, &child));
      *ino = TreeInoOf(DirEntry{std::string(name), child.id, child.kind});
      return Status::OK();
    }
    case InodeType::kSnapFolder: {
      const NodeId image = IdOf(parent);
      SnapshotInfo info;
      Status st = fs.store()->GetSnapshot(image, name, &info);
      if (st.ok() && !info.hidden) {
        *ino = MakeIno(InodeType::kSnapDir, info.id);
        return Status::OK();
      }
      if (!st.ok() && !st.Is(Status::Code::kNotFound)) return st;
      if (auto id = fs.FindTombstoneByName(image, name)) {
        *ino = MakeIno(InodeType::kSnapDir, *id);
        return Status::OK();
      }
      return Status::NotFound("no snapshot '" + std::string(name) + "' of image '" +
                              fs.store()->PathOf(image) + "'");
    }
    case InodeType::kSnapDir: {
      SnapDir dir;
      SNAPDISK_RETURN_IF_ERROR(ResolveSnapDir(fs, IdOf(parent), &dir));
      if (dir.tombstone) return Status::NotFound("snapshot was deleted");
      std::string image_name;
      SNAPDISK_RETURN_IF_ERROR(ImageName(fs, dir.info.image, &image_name));
      if (name != image_name) {
        return Status::NotFound("a snapshot directory holds only '" + image_name + "'");
      }
      *ino = MakeIno(InodeType::kFrozen, dir.info.id);
      return Status::OK();
    }
    case InodeType::kFrozen:
      return Status::NotDirectory("frozen view is a file");
    case InodeType::kLive:
      break;
  }
  return Status::InvalidArgument("not a snapshot-tree directory");
}

Status TreeList(SnapFs& fs, uint64_t dir, std::vector<DirListEntry>* entries) {
  entries->clear();
  switch (TypeOf(dir)) {
    case InodeType::kMirror: {
      const NodeId node = IdOf(dir);
      std::vector<DirEntry> children;
      SNAPDISK_RETURN_IF_ERROR(fs.store()->ReadDirectory(node, &children));
      entries->push_back({".", dir, S_IFDIR});
      entries->push_back({"..", TreeParentIno(fs, node), S_IFDIR});
      for (const DirEntry& child : children) {
        entries->push_back({child.name, TreeInoOf(child), S_IFDIR});
      }
      return Status::OK();
    }
    case InodeType::kSnapFolder: {
      NodeAttr image;
      SNAPDISK_RETURN_IF_ERROR(FolderImage(fs, dir, &image));
      std::vector<SnapshotInfo> snapshots;
      SNAPDISK_RETURN_IF_ERROR(fs.store()->ListSnapshots(image.id, &snapshots));
      entries->reserve(snapshots.size() + 2);
      entries->push_back({".", dir, S_IFDIR});
      entries->push_back({"..", TreeParentIno(fs, image.id), S_IFDIR});
      // Each entry carries its stat, so readdirplus answers `ls -l` of
      // thousands of snapshots without an engine call per entry.
      auto add = [&](const std::string& name, SnapshotId id, int64_t created_ns) {
        DirListEntry& e = entries->emplace_back();
        e.name = name;
        e.ino = MakeIno(InodeType::kSnapDir, id);
        e.type = S_IFDIR;
        StatSnapDirOf(fs, image, e.ino, created_ns, &e.attr.emplace());
      };
      for (const SnapshotInfo& info : snapshots) {
        if (!info.hidden) add(info.name, info.id, info.created_ns);
      }
      for (auto& [id, tombstone] : fs.TombstonesOf(image.id)) {
        add(tombstone.name, id, tombstone.created_ns);
      }
      return Status::OK();
    }
    case InodeType::kSnapDir: {
      SnapDir snap;
      SNAPDISK_RETURN_IF_ERROR(ResolveSnapDir(fs, IdOf(dir), &snap));
      entries->push_back({".", dir, S_IFDIR});
      entries->push_back({"..", MakeIno(InodeType::kSnapFolder, snap.info.image), S_IFDIR});
      if (snap.tombstone) return Status::OK();
      std::string image_name;
      SNAPDISK_RETURN_IF_ERROR(ImageName(fs, snap.info.image, &image_name));
      entries->push_back({image_name, MakeIno(InodeType::kFrozen, snap.info.id), S_IFREG});
      return Status::OK();
    }
    case InodeType::kFrozen:
      return Status::NotDirectory("frozen view is a file");
    case InodeType::kLive:
      break;
  }
  return Status::InvalidArgument("not a snapshot-tree directory");
}

Status SnapMkdir(SnapFs& fs, uint64_t folder, std::string_view name, uint64_t* ino) {
  NodeAttr image;
  SNAPDISK_RETURN_IF_ERROR(FolderImage(fs, folder, &image));
  SnapshotInfo info;
  SNAPDISK_RETURN_IF_ERROR(fs.store()->CreateSnapshot(image.id, name, &info));
  fs.DropTombstonesNamed(image.id, name);  // a new snapshot reuses the name
  *ino = MakeIno(InodeType::kSnapDir, info.id);
  Log(LogLevel::kInfo, "snapshot '{}' of '{}' created (id {})", info.name,
      fs.store()->PathOf(image.id), info.id);
  return Status::OK();
}

Status SnapRmdir(SnapFs& fs, uint64_t folder, std::string_view name) {
  NodeAttr image;
  SNAPDISK_RETURN_IF_ERROR(FolderImage(fs, folder, &image));
  SnapshotInfo info;
  Status st = fs.store()->GetSnapshot(image.id, name, &info);
  if (st.ok() && !info.hidden) {
    // rmdir succeeds although the directory "contains" the frozen view: the
    // view is the snapshot itself, not a separate entry.
    SNAPDISK_RETURN_IF_ERROR(fs.store()->DeleteSnapshot(image.id, name));
    fs.DropTombstonesNamed(image.id, name);
    Log(LogLevel::kInfo, "snapshot '{}' of '{}' deleted", name, fs.store()->PathOf(image.id));
    return Status::OK();
  }
  if (!st.ok() && !st.Is(Status::Code::kNotFound)) return st;
  if (auto id = fs.FindTombstoneByName(image.id, name)) {
    fs.DropTombstone(*id);  // second half of rm -r: the snapshot is already gone
    return Status::OK();
  }
  return Status::NotFound("no snapshot '" + std::string(name) + "' of image '" +
                          fs.store()->PathOf(image.id) + "'");
}

Status SnapRename(SnapFs& fs, uint64_t folder, std::string_view name, uint64_t new_parent,
                  std::string_view new_name, unsigned int flags) {
  if (flags & RENAME_EXCHANGE) return Status::InvalidArgument("snapshots cannot be exchanged");
  if (new_parent != folder) {
    // Not EXDEV: mv would then fall back to copying the frozen view.
    return Status::InvalidArgument("snapshots can only be renamed within their image's folder");
  }
  NodeAttr image;
  SNAPDISK_RETURN_IF_ERROR(FolderImage(fs, folder, &image));
  if (name == new_name) return Status::OK();
  // Replacing a snapshot by renaming another onto it would silently delete
  // one: refuse whether or not RENAME_NOREPLACE was given.
  SnapshotInfo existing;
  if (fs.store()->GetSnapshot(image.id, new_name, &existing).ok() && !existing.hidden) {
    return Status::AlreadyExists("snapshot '" + std::string(new_name) + "' already exists");
  }
  SNAPDISK_RETURN_IF_ERROR(fs.store()->RenameSnapshot(image.id, name, new_name));
  fs.DropTombstonesNamed(image.id, new_name);
  return Status::OK();
}

Status SnapUnlink(SnapFs& fs, uint64_t snapdir, std::string_view name) {
  SnapDir dir;
  SNAPDISK_RETURN_IF_ERROR(ResolveSnapDir(fs, IdOf(snapdir), &dir));
  if (dir.tombstone) return Status::NotFound("snapshot was already deleted");
  std::string image_name;
  SNAPDISK_RETURN_IF_ERROR(ImageName(fs, dir.info.image, &image_name));
  if (name != image_name) return Status::NotFound("no such file in a snapshot directory");
  // Unlinking the frozen view deletes the snapshot; its directory stays as a
  // tombstone until rmdir (rm -r) or unmount. See snapfs.h.
  SNAPDISK_RETURN_IF_ERROR(fs.store()->DeleteSnapshot(dir.info.image, dir.info.name));
  fs.AddTombstone(dir.info.id, Tombstone{dir.info.image, dir.info.name, dir.info.created_ns});
  Log(LogLevel::kInfo, "snapshot '{}' of '{}' deleted by unlinking its frozen view", dir.info.name,
      fs.store()->PathOf(dir.info.image));
  return Status::OK();
}

}  // namespace snapdisk::fs
