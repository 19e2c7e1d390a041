// Directory operations: listing (readdir, readdirplus) and the namespace (mkdir, rmdir, unlink,
// rename). Live directories go to the engine; the .snapshots tree goes to
// snapshot_tree.cpp.
#include <sys/stat.h>

#include <cstdio>
#include <memory>
#include <vector>

#include "fs/attr.h"
#include "fs/inode.h"
#include "fs/op_util.h"
#include "fs/ops.h"
#include "fs/snapshot_tree.h"
#include "fs/urgent_scope.h"

namespace snapdisk::fs {
namespace {

// fi->fh of an open directory: the listing taken at opendir, so that readdir
// offsets (indexes into it) stay stable while the directory changes.
struct DirHandle {
  std::vector<DirListEntry> entries;
};

bool IsReservedRootName(fuse_ino_t parent, std::string_view name) {
  return parent == kRootNode && name == kSnapshotsDirName;
}

Status ListLive(SnapFs& fs, NodeId dir, std::vector<DirListEntry>* entries) {
  std::vector<DirEntry> children;
  SNAPDISK_RETURN_IF_ERROR(fs.store()->ReadDirectory(dir, &children));
  NodeId parent = kRootNode;
  if (dir != kRootNode && !fs.store()->Parent(dir, &parent).ok()) parent = kRootNode;
  entries->clear();
  entries->reserve(children.size() + 3);
  entries->push_back({".", dir, S_IFDIR});
  entries->push_back({"..", parent, S_IFDIR});
  if (dir == kRootNode) entries->push_back({kSnapshotsDirName, kSnapshotsRootIno, S_IFDIR});
  for (const DirEntry& child : children) {
    entries->push_back(
        {child.name, child.id,
         static_cast<uint32_t>(child.kind == NodeKind::kDirectory ? S_IFDIR : S_IFREG)});
  }
  return Status::OK();
}

Status DoOpendir(SnapFs& fs, fuse_ino_t ino, std::unique_ptr<DirHandle>* out) {
  auto handle = std::make_unique<DirHandle>();
  if (TypeOf(ino) == InodeType::kLive) {
    NodeAttr attr;
    SNAPDISK_RETURN_IF_ERROR(fs.store()->GetAttr(IdOf(ino), &attr));
    if (attr.kind != NodeKind::kDirectory) return Status::NotDirectory("not a directory");
    SNAPDISK_RETURN_IF_ERROR(ListLive(fs, IdOf(ino), &handle->entries));
  } else {
    SNAPDISK_RETURN_IF_ERROR(TreeList(fs, ino, &handle->entries));
  }
  *out = std::move(handle);
  return Status::OK();
}

Status DoReaddir(fuse_req_t req, const DirHandle& dir, size_t size, off_t off,
                 std::vector<char>* buf) {
  buf->resize(size);
  size_t used = 0;
  for (size_t i = off < 0 ? 0 : static_cast<size_t>(off); i < dir.entries.size(); ++i) {
    const DirListEntry& entry = dir.entries[i];
    struct stat st {};
    st.st_ino = entry.ino;
    st.st_mode = entry.type;
    size_t need = fuse_add_direntry(req, buf->data() + used, size - used, entry.name.c_str(), &st,
                                    static_cast<off_t>(i + 1));
    if (need > size - used) break;
    used += need;
  }
  buf->resize(used);
  return Status::OK();
}

// readdirplus: each entry with its attributes, so that `ls -l` of a folder
// of thousands of snapshots needs no LOOKUP or GETATTR per entry. The kernel
// takes a lookup reference for each entry with a nonzero ino; forget is a
// no-op here (inode.h), so nothing is counted. "." and ".." go without one.
Status DoReaddirplus(fuse_req_t req, SnapFs& fs, const DirHandle& dir, size_t size, off_t off,
                     std::vector<char>* buf) {
  buf->resize(size);
  size_t used = 0;
  for (size_t i = off < 0 ? 0 : static_cast<size_t>(off); i < dir.entries.size(); ++i) {
    const DirListEntry& entry = dir.entries[i];
    fuse_entry_param e{};
    if (entry.name == "." || entry.name == "..") {
      e.attr.st_ino = entry.ino;
      e.attr.st_mode = entry.type;
    } else if (entry.attr) {
      MakeEntryFrom(fs, *entry.attr, &e);
    } else if (!MakeEntry(fs, entry.ino, &e).ok()) {
      // Gone since opendir: list the name, let a later lookup decide.
      e = {};
      e.attr.st_ino = entry.ino;
      e.attr.st_mode = entry.type;
    }
    size_t need = fuse_add_direntry_plus(req, buf->data() + used, size - used, entry.name.c_str(),
                                         &e, static_cast<off_t>(i + 1));
    if (need > size - used) break;
    used += need;
  }
  buf->resize(used);
  return Status::OK();
}

// The caller's identity, for new nodes.
const fuse_ctx* Caller(fuse_req_t req) { return fuse_req_ctx(req); }

Status DoMkdir(fuse_req_t req, fuse_ino_t parent, std::string_view name, mode_t mode,
               fuse_entry_param* e) {
  SnapFs& fs = FsOf(req);
  switch (TypeOf(parent)) {
    case InodeType::kLive: {
      if (IsReservedRootName(parent, name)) return Status::AlreadyExists("reserved name");
      NodeAttr attr;
      const fuse_ctx* ctx = Caller(req);
      SNAPDISK_RETURN_IF_ERROR(
          fs.store()->MakeDirectory(IdOf(parent), name, mode & 07777, ctx->uid, ctx->gid, &attr));
      return MakeEntry(fs, attr.id, e);
    }
    case InodeType::kSnapFolder: {
      uint64_t ino = 0;
      SNAPDISK_RETURN_IF_ERROR(SnapMkdir(fs, parent, name, &ino));
      return MakeEntry(fs, ino, e);
    }
    default:
      return ReadOnlyTree("mkdir");
  }
}

Status DoRmdir(SnapFs& fs, fuse_ino_t parent, std::string_view name) {
  switch (TypeOf(parent)) {
    case InodeType::kLive:
      if (IsReservedRootName(parent, name)) return Status::Busy(".snapshots cannot be removed");
      return fs.store()->RemoveDirectory(IdOf(parent), name);
    case InodeType::kSnapFolder:
      return SnapRmdir(fs, parent, name);
    default:
      return ReadOnlyTree("rmdir");
  }
}

Status DoUnlink(SnapFs& fs, fuse_ino_t parent, std::string_view name) {
  switch (TypeOf(parent)) {
    case InodeType::kLive:
      if (IsReservedRootName(parent, name)) return Status::IsDirectory(".snapshots is a directory");
      return fs.store()->RemoveImage(IdOf(parent), name, /*cascade=*/false);
    case InodeType::kSnapDir:
      return SnapUnlink(fs, parent, name);
    default:
      return ReadOnlyTree("unlink");
  }
}

Status DoRename(SnapFs& fs, fuse_ino_t parent, std::string_view name, fuse_ino_t newparent,
                std::string_view newname, unsigned int flags) {
  if (TypeOf(parent) == InodeType::kSnapFolder) {
    return SnapRename(fs, parent, name, newparent, newname, flags);
  }
  if (TypeOf(parent) != InodeType::kLive || TypeOf(newparent) != InodeType::kLive) {
    return ReadOnlyTree("rename");
  }
  if (flags & RENAME_EXCHANGE) return Status::InvalidArgument("RENAME_EXCHANGE is not supported");
  if (flags & ~static_cast<unsigned int>(RENAME_NOREPLACE)) {
    return Status::InvalidArgument("unsupported rename flags");
  }
  if (IsReservedRootName(parent, name)) return Status::Busy(".snapshots cannot be renamed");
  if (IsReservedRootName(newparent, newname)) return Status::AlreadyExists("reserved name");
  return fs.store()->Rename(IdOf(parent), name, IdOf(newparent), newname,
                            (flags & RENAME_NOREPLACE) != 0);
}

}  // namespace

void OpOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  std::unique_ptr<DirHandle> handle;
  int err = RunOp("opendir", ino, "", [&] { return DoOpendir(FsOf(req), ino, &handle); });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fi->fh = reinterpret_cast<uint64_t>(handle.get());
  if (fuse_reply_open(req, fi) == 0) handle.release();  // else the kernel never saw it
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  const auto* dir = reinterpret_cast<const DirHandle*>(fi->fh);
  std::vector<char> buf;
  int err = RunOp("readdir", ino, "", [&] { return DoReaddir(req, *dir, size, off, &buf); });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_buf(req, buf.data(), buf.size());
}

void OpReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  const auto* dir = reinterpret_cast<const DirHandle*>(fi->fh);
  std::vector<char> buf;
  int err = RunOp("readdirplus", ino, "",
                  [&] { return DoReaddirplus(req, FsOf(req), *dir, size, off, &buf); });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_buf(req, buf.data(), buf.size());
}

void OpReleasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  delete reinterpret_cast<DirHandle*>(fi->fh);
  fuse_reply_err(req, 0);
}

void OpFsyncdir(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  fuse_reply_err(req, RunOp("fsyncdir", ino, "", [&] { return FsOf(req).store()->SyncAll(); }));
}

void OpMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  // A snapshot: writers of the image wait until it is taken and replied.
  UrgentScope urgent(TypeOf(parent) == InodeType::kSnapFolder);
  fuse_entry_param e{};
  int err = RunOp("mkdir", parent, NameOf(name),
                  [&] { return DoMkdir(req, parent, NameOf(name), mode, &e); });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_entry(req, &e);
}

void OpRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, RunOp("rmdir", parent, NameOf(name),
                            [&] { return DoRmdir(FsOf(req), parent, NameOf(name)); }));
}

// The kernel may cache the name of an image's snapshot folder
// (.snapshots/.../IMG, FsConfig::snapshot_entry_timeout). Deleting or
// renaming the image in the live tree changes that name behind its back:
// drop it before replying, so that no one sees the old name once unlink or
// rename has returned. No deadlock: the kernel locks the mirror directory
// for this, and an unlink or rename in the live tree holds only live
// directories (libfuse's rule: no invalidation of an inode from an operation
// related to it). ENOENT (nothing cached) is the common answer and fine.
void ForgetFolderName(SnapFs& fs, fuse_ino_t live_parent, std::string_view name) {
  if (fs.session() == nullptr || TypeOf(live_parent) != InodeType::kLive) return;
  fuse_lowlevel_notify_inval_entry(fs.session(), MakeIno(InodeType::kMirror, IdOf(live_parent)),
                                   name.data(), name.size());
}

void OpUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  SnapFs& fs = FsOf(req);
  int err = RunOp("unlink", parent, NameOf(name), [&] { return DoUnlink(fs, parent, NameOf(name)); });
  if (err == 0) ForgetFolderName(fs, parent, NameOf(name));
  fuse_reply_err(req, err);
}

void OpRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned int flags) {
  SnapFs& fs = FsOf(req);
  int err = RunOp("rename", parent, NameOf(name), [&] {
    return DoRename(fs, parent, NameOf(name), newparent, NameOf(newname), flags);
  });
  if (err == 0) {
    ForgetFolderName(fs, parent, NameOf(name));
    ForgetFolderName(fs, newparent, NameOf(newname));  // an image it replaced
  }
  fuse_reply_err(req, err);
}

void OpSymlink(fuse_req_t req, const char*, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, RunOp("symlink", parent, NameOf(name), [&] {
                   if (TypeOf(parent) != InodeType::kLive) return ReadOnlyTree("symlink");
                   return Status::Permission("snapdisk holds only images and directories");
                 }));
}

void OpLink(fuse_req_t req, fuse_ino_t, fuse_ino_t newparent, const char* newname) {
  fuse_reply_err(req, RunOp("link", newparent, NameOf(newname), [&] {
                   if (TypeOf(newparent) != InodeType::kLive) return ReadOnlyTree("link");
                   return Status::Permission("hard links are not supported");
                 }));
}

}  // namespace snapdisk::fs
