// The namespace: directories (projects) and images, their attributes and
// extended attributes. All of it lives in memory (loaded at open) and is
// written through to the "nodes" column family in one batch per change.
#include <fmt/format.h>

#include "keys.h"
#include "store_impl.h"

namespace snapdisk::engine {

Status StoreImpl::NodeLocked(NodeId id, NodeRecord** rec) {
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return Status::NotFound(fmt::format("no node {}", id));
  *rec = &it->second;
  return Status::OK();
}

Status StoreImpl::ImageLocked(NodeId id, NodeRecord** rec) {
  SNAPDISK_RETURN_IF_ERROR(NodeLocked(id, rec));
  if ((*rec)->kind != NodeKind::kImage) return Status::IsDirectory(PathOfLocked(id) + " is a directory, not an image");
  return Status::OK();
}

Status StoreImpl::ChildLocked(NodeId parent, std::string_view name, NodeRecord** rec) {
  NodeRecord* dir = nullptr;
  SNAPDISK_RETURN_IF_ERROR(NodeLocked(parent, &dir));
  if (dir->kind != NodeKind::kDirectory) return Status::NotDirectory(PathOfLocked(parent) + " is not a directory");
  auto& kids = children_[parent];
  auto it = kids.find(name);
  if (it == kids.end())
    return Status::NotFound(fmt::format("no image or directory '{}' in '{}'", name, PathOfLocked(parent)));
  return NodeLocked(it->second, rec);
}

void StoreImpl::FillAttr(const NodeRecord& r, NodeAttr* a) const {
  a->id = r.id;
  a->kind = r.kind;
  a->mode = r.mode;
  a->uid = r.uid;
  a->gid = r.gid;
  a->size = r.kind == NodeKind::kImage ? r.size : 0;
  a->atime = r.atime;
  a->mtime = r.mtime;
  a->ctime = r.ctime;
  a->linked = r.linked;
}

std::string StoreImpl::PathOf(NodeId node) {
  // nodes_ is guarded by meta_mu_: an unlocked walk raced every rename,
  // snapshot and create (an insert may rehash the map under the reader).
  std::lock_guard l(meta_mu_);
  return PathOfLocked(node);
}

std::string StoreImpl::PathOfLocked(NodeId node) const {
  // A bounded walk: a damaged parent chain cannot loop forever.
  std::string path;
  NodeId cur = node;
  for (int depth = 0; depth < 64 && cur != kRootNode; ++depth) {
    auto it = nodes_.find(cur);
    if (it == nodes_.end()) return path.empty() ? fmt::format("#{}", node) : path;
    path = path.empty() ? it->second.name : it->second.name + "/" + path;
    cur = it->second.parent;
  }
  return path.empty() ? "/" : path;
}

Status StoreImpl::Lookup(NodeId parent, std::string_view name, NodeAttr* attr) {
  std::lock_guard l(meta_mu_);
  NodeRecord* rec = nullptr;
  SNAPDISK_RETURN_IF_ERROR(ChildLocked(parent, name, &rec));
  FillAttr(*rec, attr);
  return Status::OK();
}

Status StoreImpl::GetAttr(NodeId node, NodeAttr* attr) {
  std::lock_guard l(meta_mu_);
  NodeRecord* rec = nullptr;
  SNAPDISK_RETURN_IF_ERROR(NodeLocked(node, &rec));
  FillAttr(*rec, attr);
  return Status::OK();
}

Status StoreImpl::SetAttr(NodeId node, const AttrChange& c, NodeAttr* attr) {
  std::shared_ptr<ImageState> st;
  std::unique_lock<WriterPreferringMutex> io;
  if (c.set_size) {
    SNAPDISK_RETURN_IF_ERROR(Writable());
    if (c.size > options_.max_image_size)
      return Status::TooLarge(fmt::format("size {} is past the image size limit of {} bytes", c.size,
                                          options_.max_image_size));
    {
      std::lock_guard l(meta_mu_);
      NodeRecord* rec = nullptr;
      SNAPDISK_RETURN_IF_ERROR(ImageLocked(node, &rec));
      st = StateLocked(node);
    }
    io = std::unique_lock(st->io_mu);  // a resize orders itself against in-flight writes
    SNAPDISK_RETURN_IF_ERROR(FlushPending(*st));  // a shrink starts a new generation
  }
  bool shrunk = false;
  {
    std::lock_guard l(meta_mu_);
    NodeRecord* rec = nullptr;
    SNAPDISK_RETURN_IF_ERROR(NodeLocked(node, &rec));
    NodeRecord r = *rec;
    Timestamp now = NowTimestamp();
    if (c.set_mode) r.mode = c.mode & 07777;
    if (c.set_uid) r.uid = c.uid;
    if (c.set_gid) r.gid = c.gid;
    if (c.set_atime) r.atime = c.atime;
    if (c.set_mtime) r.mtime = c.mtime;
    if (c.set_size && c.size != r.size) {
      if (c.size < r.size) {
        // Shrink in constant time: a new epoch whose base is the image as it
        // was, seen only below the new size. Snapshots are untouched.
        Epoch e;
        e.start_gen = r.live_gen + 1;
        if (c.size > 0) {
          e.base_image = r.id;
          e.base_gen = r.live_gen;
          e.base_limit = c.size;
        }
        r.epochs.push_back(e);
        r.live_gen += 1;
        shrunk = true;
      }
      r.size = c.size;
      if (!c.set_mtime) r.mtime = now;
      st->change_seq.fetch_add(1);
    }
    r.ctime = now;
    rocksdb::WriteBatch b;
    PutNode(&b, r);
    SNAPDISK_RETURN_IF_ERROR(Commit(&b, false, "set attributes"));
    *rec = r;
    if (st) {
      st->size = r.size;
      PublishLocked(r);
    }
    FillAttr(r, attr);
  }
  if (shrunk) ScheduleGc(node);
  return Status::OK();
}

namespace {
Status CheckNewChild(const std::unordered_map<NodeId, std::map<std::string, NodeId, std::less<>>>& children,
                     NodeId parent, std::string_view name, const std::string& parent_path) {
  SNAPDISK_RETURN_IF_ERROR(ValidateName(name));
  auto it = children.find(parent);
  if (it != children.end() && it->second.count(name))
    return Status::AlreadyExists(fmt::format("'{}' already exists in '{}'", name, parent_path));
  return Status::OK();
}
}  // namespace

Status StoreImpl::CreateImage(NodeId parent, std::string_view name, uint32_t mode, uint32_t uid,
                              uint32_t gid, NodeAttr* attr) {
  return CreateNode(parent, name, NodeKind::kImage, mode, uid, gid, attr);
}

Status StoreImpl::MakeDirectory(NodeId parent, std::string_view name, uint32_t mode, uint32_t uid,
                                uint32_t gid, NodeAttr* attr) {
  return CreateNode(parent, name, NodeKind::kDirectory, mode, uid, gid, attr);
}

Status StoreImpl::CreateNode(NodeId parent, std::string_view name, NodeKind kind, uint32_t mode,
                             uint32_t uid, uint32_t gid, NodeAttr* attr) {
  std::lock_guard l(meta_mu_);
  NodeRecord* dir = nullptr;
  SNAPDISK_RETURN_IF_ERROR(NodeLocked(parent, &dir));
  if (dir->kind != NodeKind::kDirectory) return Status::NotDirectory(PathOfLocked(parent) + " is not a directory");
  SNAPDISK_RETURN_IF_ERROR(CheckNewChild(children_, parent, name, PathOfLocked(parent)));
  NodeRecord r;
  r.id = counters_.next_node++;
  r.parent = parent;
  r.name = std::string(name);
  r.kind = kind;
  r.mode = mode & 07777;
  r.uid = uid;
  r.gid = gid;
  r.atime = r.mtime = r.ctime = NowTimestamp();
  if (kind == NodeKind::kImage) r.epochs.push_back(Epoch{});
  NodeRecord parent_rec = *dir;
  parent_rec.mtime = parent_rec.ctime = r.ctime;
  rocksdb::WriteBatch b;
  PutNode(&b, r);
  PutCounters(&b);
  PutNode(&b, parent_rec);
  SNAPDISK_RETURN_IF_ERROR(Commit(&b, false, kind == NodeKind::kImage ? "create image" : "create directory"));
  *dir = std::move(parent_rec);
  children_[parent][r.name] = r.id;
  FillAttr(r, attr);
  const NodeId id = r.id;
  nodes_[id] = std::move(r);
  if (kind == NodeKind::kImage) {
    states_[id] = std::make_shared<ImageState>(id);
    PublishLocked(nodes_[id]);
  }
  return Status::OK();
}

size_t StoreImpl::SnapshotCountLocked(NodeId image) const {
  auto it = by_name_.find(image);
  return it == by_name_.end() ? 0 : it->second.size();
}

bool StoreImpl::HasDependentsLocked(NodeId image) const {
  for (const auto& [id, r] : nodes_) {
    if (id == image || r.kind != NodeKind::kImage) continue;
    for (const Epoch& e : r.epochs)
      if (e.base_image == image) return true;
  }
  return false;
}

// Unlinks an image from the namespace; its data goes when nothing needs it
// (the collector drops the node once it has no snapshots, clones or handles).
Status StoreImpl::DropImageLocked(NodeRecord* rec, rocksdb::WriteBatch* b) {
  children_[rec->parent].erase(rec->name);
  rec->linked = false;
  PutNode(b, *rec);
  return Status::OK();
}

Status StoreImpl::RemoveImage(NodeId parent, std::string_view name, bool cascade) {
  NodeId id = 0;
  {
    std::lock_guard l(meta_mu_);
    NodeRecord* rec = nullptr;
    SNAPDISK_RETURN_IF_ERROR(ChildLocked(parent, name, &rec));
    if (rec->kind != NodeKind::kImage)
      return Status::IsDirectory(fmt::format("'{}' is a directory", PathOfLocked(rec->id)));
    id = rec->id;
    rocksdb::WriteBatch b;
    size_t n = SnapshotCountLocked(id);
    std::vector<SnapshotId> doomed;
    if (n > 0) {
      if (!cascade)
        return Status::Busy(fmt::format("image '{}' has {} snapshot(s); delete them first "
                                        "(or use 'snapdisk delete --cascade')", PathOfLocked(id), n));
      for (const auto& [sname, sid] : by_name_[id]) {
        if (snapshots_[sid].is_protected)
          return Status::Busy(fmt::format("snapshot '{}' of '{}' is protected; unprotect it first", sname, PathOfLocked(id)));
        doomed.push_back(sid);
      }
    }
    for (SnapshotId sid : doomed) b.Delete(index_.snapshots, keys::Id(sid));
    NodeRecord* dir = nullptr;
    if (NodeLocked(parent, &dir).ok()) {
      dir->mtime = dir->ctime = NowTimestamp();
      PutNode(&b, *dir);
    }
    SNAPDISK_RETURN_IF_ERROR(DropImageLocked(rec, &b));
    Status st = Commit(&b, false, "remove image");
    if (!st.ok()) {
      rec->linked = true;
      children_[parent][rec->name] = id;
      return st;
    }
    for (SnapshotId sid : doomed) snapshots_.erase(sid);
    by_name_.erase(id);
  }
  ScheduleGc(id);
  return Status::OK();
}

Status StoreImpl::RemoveDirectory(NodeId parent, std::string_view name) {
  std::lock_guard l(meta_mu_);
  NodeRecord* rec = nullptr;
  SNAPDISK_RETURN_IF_ERROR(ChildLocked(parent, name, &rec));
  if (rec->kind != NodeKind::kDirectory) return Status::NotDirectory(fmt::format("'{}' is not a directory", name));
  auto kids = children_.find(rec->id);
  if (kids != children_.end() && !kids->second.empty())
    return Status::NotEmpty(fmt::format("directory '{}' is not empty", PathOfLocked(rec->id)));
  rocksdb::WriteBatch b;
  b.Delete(index_.nodes, keys::Id(rec->id));
  NodeRecord* dir = nullptr;
  if (NodeLocked(parent, &dir).ok()) {
    dir->mtime = dir->ctime = NowTimestamp();
    PutNode(&b, *dir);
  }
  SNAPDISK_RETURN_IF_ERROR(Commit(&b, false, "remove directory"));
  NodeId id = rec->id;
  children_[parent].erase(std::string(name));
  children_.erase(id);
  nodes_.erase(id);
  return Status::OK();
}

Status StoreImpl::Rename(NodeId parent, std::string_view name, NodeId new_parent,
                         std::string_view new_name, bool no_replace) {
  NodeId replaced = 0;
  {
    std::lock_guard l(meta_mu_);
    NodeRecord* rec = nullptr;
    SNAPDISK_RETURN_IF_ERROR(ChildLocked(parent, name, &rec));
    SNAPDISK_RETURN_IF_ERROR(ValidateName(new_name));
    NodeRecord* ndir = nullptr;
    SNAPDISK_RETURN_IF_ERROR(NodeLocked(new_parent, &ndir));
    if (ndir->kind != NodeKind::kDirectory) return Status::NotDirectory(PathOfLocked(new_parent) + " is not a directory");
    if (parent == new_parent && name == new_name) return Status::OK();
    if (rec->kind == NodeKind::kDirectory) {
      for (NodeId cur = new_parent; cur != kRootNode; cur = nodes_[cur].parent)
        if (cur == rec->id) return Status::InvalidArgument("cannot move a directory into itself");
    }
    rocksdb::WriteBatch b;
    auto& nkids = children_[new_parent];
    auto existing = nkids.find(new_name);
    NodeRecord* target = nullptr;
    if (existing != nkids.end()) {
      if (no_replace) return Status::AlreadyExists(fmt::format("'{}' already exists", new_name));
      SNAPDISK_RETURN_IF_ERROR(NodeLocked(existing->second, &target));
      if (target->kind != rec->kind)
        return rec->kind == NodeKind::kDirectory ? Status::NotDirectory("target is an image")
                                                 : Status::IsDirectory("target is a directory");
      if (target->kind == NodeKind::kDirectory) {
        auto tk = children_.find(target->id);
        if (tk != children_.end() && !tk->second.empty()) return Status::NotEmpty("target directory is not empty");
        b.Delete(index_.nodes, keys::Id(target->id));
      } else {
        if (SnapshotCountLocked(target->id) > 0)
          return Status::Busy(fmt::format("cannot replace image '{}': it has snapshots", PathOfLocked(target->id)));
        target->linked = false;
        PutNode(&b, *target);
        replaced = target->id;
      }
    }
    Timestamp now = NowTimestamp();
    NodeRecord moved = *rec;
    moved.parent = new_parent;
    moved.name = std::string(new_name);
    moved.ctime = now;
    PutNode(&b, moved);
    for (NodeId d : {parent, new_parent}) {
      nodes_[d].mtime = nodes_[d].ctime = now;
      PutNode(&b, nodes_[d]);
    }
    SNAPDISK_RETURN_IF_ERROR(Commit(&b, false, "rename"));
    if (target && target->kind == NodeKind::kDirectory) {
      children_.erase(target->id);
      nodes_.erase(target->id);
    }
    children_[parent].erase(std::string(name));
    children_[new_parent][moved.name] = moved.id;
    *rec = std::move(moved);
  }
  if (replaced) ScheduleGc(replaced);
  return Status::OK();
}

Status StoreImpl::ReadDirectory(NodeId dir, std::vector<DirEntry>* entries) {
  std::lock_guard l(meta_mu_);
  NodeRecord* rec = nullptr;
  SNAPDISK_RETURN_IF_ERROR(NodeLocked(dir, &rec));
  if (rec->kind != NodeKind::kDirectory) return Status::NotDirectory(PathOfLocked(dir) + " is not a directory");
  entries->clear();
  for (const auto& [name, id] : children_[dir]) entries->push_back({name, id, nodes_[id].kind});
  return Status::OK();
}

Status StoreImpl::Parent(NodeId node, NodeId* parent) {
  std::lock_guard l(meta_mu_);
  NodeRecord* rec = nullptr;
  SNAPDISK_RETURN_IF_ERROR(NodeLocked(node, &rec));
  *parent = rec->parent;
  return Status::OK();
}

Status StoreImpl::GetXattr(NodeId node, std::string_view name, std::string* value) {
  std::lock_guard l(meta_mu_);
  NodeRecord* rec = nullptr;
  SNAPDISK_RETURN_IF_ERROR(NodeLocked(node, &rec));
  auto it = rec->xattrs.find(std::string(name));
  if (it == rec->xattrs.end()) return Status::NoData(fmt::format("no attribute '{}'", name));
  *value = it->second;
  return Status::OK();
}

Status StoreImpl::SetXattr(NodeId node, std::string_view name, std::string_view value,
                           bool create_only, bool replace_only) {
  if (name.empty() || name.size() > 255) return Status::InvalidArgument("bad attribute name");
  if (value.size() > 65536) return Status::InvalidArgument("attribute value over 64 KiB");
  std::lock_guard l(meta_mu_);
  NodeRecord* rec = nullptr;
  SNAPDISK_RETURN_IF_ERROR(NodeLocked(node, &rec));
  std::string key(name);
  bool has = rec->xattrs.count(key) > 0;
  if (create_only && has) return Status::AlreadyExists(fmt::format("attribute '{}' exists", name));
  if (replace_only && !has) return Status::NoData(fmt::format("no attribute '{}'", name));
  NodeRecord r = *rec;
  r.xattrs[key] = std::string(value);
  r.ctime = NowTimestamp();
  rocksdb::WriteBatch b;
  PutNode(&b, r);
  SNAPDISK_RETURN_IF_ERROR(Commit(&b, false, "set attribute"));
  *rec = std::move(r);
  return Status::OK();
}

Status StoreImpl::ListXattr(NodeId node, std::vector<std::string>* names) {
  std::lock_guard l(meta_mu_);
  NodeRecord* rec = nullptr;
  SNAPDISK_RETURN_IF_ERROR(NodeLocked(node, &rec));
  names->clear();
  for (const auto& [k, v] : rec->xattrs) names->push_back(k);
  return Status::OK();
}

Status StoreImpl::RemoveXattr(NodeId node, std::string_view name) {
  std::lock_guard l(meta_mu_);
  NodeRecord* rec = nullptr;
  SNAPDISK_RETURN_IF_ERROR(NodeLocked(node, &rec));
  NodeRecord r = *rec;
  if (r.xattrs.erase(std::string(name)) == 0) return Status::NoData(fmt::format("no attribute '{}'", name));
  r.ctime = NowTimestamp();
  rocksdb::WriteBatch b;
  PutNode(&b, r);
  SNAPDISK_RETURN_IF_ERROR(Commit(&b, false, "remove attribute"));
  *rec = std::move(r);
  return Status::OK();
}

}  // namespace snapdisk::engine
