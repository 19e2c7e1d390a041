// Snapshots, rollback and clones. None of these copy or scan data: a
// snapshot records the live generation and starts a new one; rollback and
// clone add an epoch whose base is an older generation (records.h, Epoch).
#include <algorithm>

#include <fmt/format.h>

#include "keys.h"
#include "store_impl.h"

namespace snapdisk::engine {

Status StoreImpl::SnapshotLocked(NodeId image, std::string_view name, SnapshotInfo** info) {
  auto it = by_name_.find(image);
  if (it != by_name_.end()) {
    auto s = it->second.find(name);
    if (s != it->second.end()) {
      *info = &snapshots_[s->second];
      return Status::OK();
    }
  }
  return Status::NotFound(fmt::format("image '{}' has no snapshot '{}'", PathOfLocked(image), name));
}

// Caller holds the image's io_mu exclusively and meta_mu_.
Status StoreImpl::SnapshotLockedImpl(NodeRecord* rec, std::string_view name, int64_t now_ns,
                                     rocksdb::WriteBatch* b, SnapshotInfo* out) {
  SNAPDISK_RETURN_IF_ERROR(ValidateName(name));
  auto& names = by_name_[rec->id];
  if (names.count(name))
    return Status::AlreadyExists(fmt::format("image '{}' already has a snapshot '{}'", PathOfLocked(rec->id), name));
  SnapshotInfo s;
  s.id = counters_.next_snapshot++;
  s.image = rec->id;
  s.name = std::string(name);
  s.generation = rec->live_gen;
  s.created_ns = now_ns;
  s.size = rec->size;
  s.has_owner = true;
  s.mode = rec->mode;
  s.uid = rec->uid;
  s.gid = rec->gid;
  rec->live_gen += 1;  // later writes go to new versions: copy-on-write
  PutSnapshot(b, s);
  PutNode(b, *rec);
  *out = std::move(s);
  return Status::OK();
}

Status StoreImpl::CreateSnapshot(NodeId image, std::string_view name, SnapshotInfo* info) {
  std::vector<SnapshotInfo> infos;
  SNAPDISK_RETURN_IF_ERROR(CreateGroupSnapshot({image}, name, &infos));
  *info = infos[0];
  return Status::OK();
}

Status StoreImpl::CreateGroupSnapshot(const std::vector<NodeId>& images, std::string_view name,
                                      std::vector<SnapshotInfo>* infos) {
  SNAPDISK_RETURN_IF_ERROR(ValidateName(name));
  if (images.empty()) return Status::InvalidArgument("a group snapshot needs at least one image");
  std::vector<NodeId> order = images;
  std::sort(order.begin(), order.end());
  if (std::adjacent_find(order.begin(), order.end()) != order.end())
    return Status::InvalidArgument("an image is named twice in the group");
  std::vector<std::shared_ptr<ImageState>> states;
  {
    std::lock_guard l(meta_mu_);
    for (NodeId id : order) {
      NodeRecord* rec = nullptr;
      SNAPDISK_RETURN_IF_ERROR(ImageLocked(id, &rec));
      states.push_back(StateLocked(id));
    }
  }
  // Waiting for in-flight writes of every member (in id order, no deadlock)
  // makes the group one instant: no write lands between members.
  std::vector<std::unique_lock<WriterPreferringMutex>> io;
  for (auto& st : states) io.emplace_back(st->io_mu);
  std::vector<uint64_t> ending_gens;  // each member's live generation, which this snapshot ends
  {
    std::lock_guard l(meta_mu_);
    for (NodeId id : order) {
      NodeRecord* rec = nullptr;
      SNAPDISK_RETURN_IF_ERROR(ImageLocked(id, &rec));
      auto names = by_name_.find(id);
      if (names != by_name_.end() && names->second.count(name))
        return Status::AlreadyExists(fmt::format("image '{}' already has a snapshot '{}'", PathOfLocked(id), name));
      ending_gens.push_back(rec->live_gen);
    }
  }
  // The ending generation's cached records move to sealed batches, which
  // readers of the snapshot consult until the flusher has indexed them: no
  // index write while writes are held up (a flush here cost 0.2-1 ms under
  // a 4 KiB write load).
  std::vector<std::shared_ptr<const ImageState::SealedBatch>> batches(states.size());
  Status made_ok;
  for (size_t i = 0; i < states.size() && made_ok.ok(); ++i) made_ok = SealLiveCache(*states[i], ending_gens[i], &batches[i]);
  if (made_ok.ok()) made_ok = CommitGroupSnapshot(order, name, infos);
  if (!made_ok.ok()) {
    // The generation did not end after all: its records go back to the
    // live caches (no write ran meanwhile, io_mu is still held).
    for (size_t i = 0; i < states.size(); ++i) UnsealLiveCache(*states[i], batches[i]);
    return made_ok;
  }
  // Only now the flusher: had it started on the sealed batch at once, its
  // index write would have been ahead of this snapshot's commit.
  for (size_t i = 0; i < states.size(); ++i)
    if (batches[i]) QueueFlush(*states[i]);
  // Report in the caller's order.
  std::vector<SnapshotInfo> made = std::move(*infos);
  infos->clear();
  for (NodeId id : images)
    for (const auto& s : made)
      if (s.image == id) infos->push_back(s);
  return Status::OK();
}

Status StoreImpl::CommitGroupSnapshot(const std::vector<NodeId>& order, std::string_view name,
                                      std::vector<SnapshotInfo>* made_out) {
  std::lock_guard l(meta_mu_);
  std::vector<NodeRecord> recs;
  for (NodeId id : order) recs.push_back(nodes_[id]);
  Counters saved = counters_;
  rocksdb::WriteBatch b;
  std::vector<SnapshotInfo> made;
  int64_t now = NowNs();
  for (NodeRecord& r : recs) {
    SnapshotInfo s;
    Status st = SnapshotLockedImpl(&r, name, now, &b, &s);
    if (!st.ok()) {
      counters_ = saved;
      return st;
    }
    made.push_back(std::move(s));
  }
  PutCounters(&b);
  Status st = Commit(&b, false, "create snapshot");
  if (!st.ok()) {
    counters_ = saved;
    return st;
  }
  for (size_t i = 0; i < recs.size(); ++i) {
    nodes_[recs[i].id] = recs[i];
    PublishLocked(recs[i]);
    by_name_[made[i].image][made[i].name] = made[i].id;
    snapshots_[made[i].id] = made[i];
  }
  *made_out = std::move(made);
  return Status::OK();
}

Status StoreImpl::ListSnapshots(NodeId image, std::vector<SnapshotInfo>* out) {
  std::lock_guard l(meta_mu_);
  NodeRecord* rec = nullptr;
  SNAPDISK_RETURN_IF_ERROR(ImageLocked(image, &rec));
  out->clear();
  auto it = by_name_.find(image);
  if (it == by_name_.end()) return Status::OK();
  for (const auto& [name, id] : it->second)
    if (!snapshots_[id].hidden) out->push_back(snapshots_[id]);
  std::sort(out->begin(), out->end(), [](const SnapshotInfo& a, const SnapshotInfo& b) { return a.generation < b.generation; });
  return Status::OK();
}

Status StoreImpl::GetSnapshot(NodeId image, std::string_view name, SnapshotInfo* info) {
  std::lock_guard l(meta_mu_);
  SnapshotInfo* s = nullptr;
  SNAPDISK_RETURN_IF_ERROR(SnapshotLocked(image, name, &s));
  *info = *s;
  return Status::OK();
}

Status StoreImpl::GetSnapshotById(SnapshotId id, SnapshotInfo* info) {
  std::lock_guard l(meta_mu_);
  auto it = snapshots_.find(id);
  if (it == snapshots_.end()) return Status::NotFound(fmt::format("no snapshot with id {}", id));
  *info = it->second;
  return Status::OK();
}

Status StoreImpl::DeleteSnapshot(NodeId image, std::string_view name) {
  {
    std::lock_guard l(meta_mu_);
    SnapshotInfo* s = nullptr;
    SNAPDISK_RETURN_IF_ERROR(SnapshotLocked(image, name, &s));
    if (s->is_protected)
      return Status::Busy(fmt::format("snapshot '{}' of '{}' is protected; unprotect it first", name, PathOfLocked(image)));
    rocksdb::WriteBatch b;
    b.Delete(index_.snapshots, keys::Id(s->id));
    SNAPDISK_RETURN_IF_ERROR(Commit(&b, false, "delete snapshot"));
    SnapshotId id = s->id;
    by_name_[image].erase(std::string(name));
    if (by_name_[image].empty()) by_name_.erase(image);
    snapshots_.erase(id);
  }
  ScheduleGc(image);
  return Status::OK();
}

Status StoreImpl::RenameSnapshot(NodeId image, std::string_view name, std::string_view new_name) {
  std::lock_guard l(meta_mu_);
  SnapshotInfo* s = nullptr;
  SNAPDISK_RETURN_IF_ERROR(SnapshotLocked(image, name, &s));
  SNAPDISK_RETURN_IF_ERROR(ValidateName(new_name));
  if (name == new_name) return Status::OK();
  if (by_name_[image].count(new_name))
    return Status::AlreadyExists(fmt::format("image '{}' already has a snapshot '{}'", PathOfLocked(image), new_name));
  SnapshotInfo r = *s;
  r.name = std::string(new_name);
  rocksdb::WriteBatch b;
  PutSnapshot(&b, r);
  SNAPDISK_RETURN_IF_ERROR(Commit(&b, false, "rename snapshot"));
  by_name_[image].erase(std::string(name));
  by_name_[image][r.name] = r.id;
  *s = std::move(r);
  return Status::OK();
}

#define SNAPDISK_MODIFY_SNAPSHOT(BODY)                                        \
  std::lock_guard l(meta_mu_);                                                \
  SnapshotInfo* s = nullptr;                                                  \
  SNAPDISK_RETURN_IF_ERROR(SnapshotLocked(image, name, &s));                  \
  SnapshotInfo r = *s;                                                        \
  BODY;                                                                       \
  rocksdb::WriteBatch b;                                                      \
  PutSnapshot(&b, r);                                                         \
  SNAPDISK_RETURN_IF_ERROR(Commit(&b, false, "update snapshot"));             \
  *s = std::move(r);                                                          \
  return Status::OK();

Status StoreImpl::SetSnapshotDescription(NodeId image, std::string_view name, std::string_view description) {
  if (description.size() > 65536) return Status::InvalidArgument("description over 64 KiB");
  SNAPDISK_MODIFY_SNAPSHOT(r.description = std::string(description));
}

Status StoreImpl::SetSnapshotProperty(NodeId image, std::string_view name, std::string_view key,
                                      const std::string* value) {
  if (key.empty() || key.size() > 255) return Status::InvalidArgument("property key must be 1..255 bytes");
  if (value && value->size() > 65536) return Status::InvalidArgument("property value over 64 KiB");
  SNAPDISK_MODIFY_SNAPSHOT({
    if (value) {
      r.properties[std::string(key)] = *value;
    } else if (r.properties.erase(std::string(key)) == 0) {
      return Status::NoData(fmt::format("snapshot '{}' has no property '{}'", name, key));
    }
  });
}

Status StoreImpl::ClearSnapshotProperties(NodeId image, std::string_view name) {
  SNAPDISK_MODIFY_SNAPSHOT(r.properties.clear());
}

Status StoreImpl::SetSnapshotProtected(NodeId image, std::string_view name, bool is_protected) {
  SNAPDISK_MODIFY_SNAPSHOT(r.is_protected = is_protected);
}

#undef SNAPDISK_MODIFY_SNAPSHOT

Status StoreImpl::Rollback(NodeId image, std::string_view name, bool force) {
  SNAPDISK_RETURN_IF_ERROR(Writable());
  std::shared_ptr<ImageState> st;
  {
    std::lock_guard l(meta_mu_);
    NodeRecord* rec = nullptr;
    SNAPDISK_RETURN_IF_ERROR(ImageLocked(image, &rec));
    st = StateLocked(image);
  }
  std::unique_lock io(st->io_mu);
  SNAPDISK_RETURN_IF_ERROR(FlushPending(*st));  // the live generation ends here
  {
    std::lock_guard l(meta_mu_);
    SnapshotInfo* s = nullptr;
    SNAPDISK_RETURN_IF_ERROR(SnapshotLocked(image, name, &s));
    if (!force && st->open_writers > 0)
      return Status::Busy(fmt::format("image '{}' is open for writing ({} writer(s)); close it or force the rollback",
                                      PathOfLocked(image), st->open_writers));
    NodeRecord r = nodes_[image];
    // The live image becomes a new epoch that reads through to the snapshot.
    Epoch e;
    e.start_gen = r.live_gen + 1;
    e.base_image = image;
    e.base_gen = s->generation;
    e.base_limit = s->size;
    r.epochs.push_back(e);
    r.live_gen += 1;
    r.size = s->size;
    r.mtime = r.ctime = NowTimestamp();
    rocksdb::WriteBatch b;
    PutNode(&b, r);
    SNAPDISK_RETURN_IF_ERROR(Commit(&b, true, "roll back image"));
    nodes_[image] = r;
    st->size = r.size;
    st->change_seq.fetch_add(1);
    PublishLocked(r);
  }
  io.unlock();
  ScheduleGc(image);
  return Status::OK();
}

// An image that shows nothing and that no snapshot depends on may become a
// clone: whatever older generations it has are dead and the collector takes them.
bool StoreImpl::IsPristineLocked(const NodeRecord& r) {
  return r.size == 0 && SnapshotCountLocked(r.id) == 0;
}

Status StoreImpl::CloneImage(NodeId src, SnapshotId snapshot, NodeId dst) {
  SNAPDISK_RETURN_IF_ERROR(Writable());
  if (src == dst) return Status::InvalidArgument("cannot clone an image onto itself");
  std::shared_ptr<ImageState> src_st, dst_st;
  {
    std::lock_guard l(meta_mu_);
    NodeRecord* rec = nullptr;
    SNAPDISK_RETURN_IF_ERROR(ImageLocked(src, &rec));
    SNAPDISK_RETURN_IF_ERROR(ImageLocked(dst, &rec));
    src_st = StateLocked(src);
    dst_st = StateLocked(dst);
  }
  // Lock both images' io in id order.
  std::unique_lock<WriterPreferringMutex> a, b;
  if (src < dst) {
    a = std::unique_lock(src_st->io_mu);
    b = std::unique_lock(dst_st->io_mu);
  } else {
    b = std::unique_lock(dst_st->io_mu);
    a = std::unique_lock(src_st->io_mu);
  }
  // The clone reads the source's generation through the index.
  SNAPDISK_RETURN_IF_ERROR(FlushPending(*src_st));
  SNAPDISK_RETURN_IF_ERROR(FlushPending(*dst_st));
  std::lock_guard l(meta_mu_);
  NodeRecord s = nodes_[src];
  NodeRecord d = nodes_[dst];
  if (!IsPristineLocked(d))
    return Status::InvalidArgument(fmt::format("clone target '{}' must be an empty image without snapshots", PathOfLocked(dst)));
  Epoch e;
  e.start_gen = d.live_gen + 1;
  e.base_image = src;
  std::string snap_name;
  if (snapshot == kLive) {
    // Freeze the source's current generation for the clone; the source goes on
    // writing a new one.
    e.base_gen = s.live_gen;
    e.base_limit = s.size;
    s.live_gen += 1;
  } else {
    auto it = snapshots_.find(snapshot);
    if (it == snapshots_.end() || it->second.image != src)
      return Status::NotFound(fmt::format("no snapshot {} of image '{}'", snapshot, PathOfLocked(src)));
    e.base_gen = it->second.generation;
    e.base_limit = it->second.size;
    snap_name = it->second.name;
  }
  d.live_gen += 1;
  d.epochs.push_back(e);
  d.size = e.base_limit;
  d.is_clone = true;
  d.origin_image = src;
  d.origin_image_name = PathOfLocked(src);
  d.origin_snapshot_name = snap_name;
  d.mtime = d.ctime = NowTimestamp();
  rocksdb::WriteBatch wb;
  PutNode(&wb, s);
  PutNode(&wb, d);
  SNAPDISK_RETURN_IF_ERROR(Commit(&wb, false, "clone image"));
  nodes_[src] = s;
  nodes_[dst] = d;
  PublishLocked(s);
  PublishLocked(d);  // after src: d's epoch resolves src's state
  dst_st->size = d.size;
  dst_st->change_seq.fetch_add(1);
  dst_st->clone_src = src;
  dst_st->clone_snap = snapshot;
  dst_st->clone_src_seq = src_st->change_seq.load();
  dst_st->clone_own_seq = dst_st->change_seq.load();
  ScheduleGc(dst);  // whatever dst held before is unreachable now
  return Status::OK();
}

Status StoreImpl::CopyRange(NodeId src, SnapshotId snapshot, uint64_t src_offset, NodeId dst,
                            uint64_t dst_offset, uint64_t len, uint64_t* copied) {
  *copied = 0;
  std::shared_ptr<ImageState> src_st, dst_st;
  uint64_t src_size = 0;
  bool pristine = false, continuation = false;
  {
    std::lock_guard l(meta_mu_);
    NodeRecord* s = nullptr;
    NodeRecord* d = nullptr;
    SNAPDISK_RETURN_IF_ERROR(ImageLocked(src, &s));
    SNAPDISK_RETURN_IF_ERROR(ImageLocked(dst, &d));
    src_st = StateLocked(src);
    dst_st = StateLocked(dst);
    src_size = s->size;
    if (snapshot != kLive) {
      auto it = snapshots_.find(snapshot);
      if (it == snapshots_.end() || it->second.image != src)
        return Status::NotFound(fmt::format("no snapshot {} of image '{}'", snapshot, PathOfLocked(src)));
      src_size = it->second.size;
    }
    // A copy of the whole source into an empty image is a clone.
    if (src != dst && src_offset == 0 && dst_offset == 0 && len >= src_size) pristine = IsPristineLocked(*d);
    // cp copies in pieces (the FUSE reply holds 32 bits): after a clone, its
    // later calls ask for ranges that already hold exactly the source bytes.
    continuation = src != dst && src_offset == dst_offset && src_offset > 0 && dst_st->clone_src == src &&
                   dst_st->clone_snap == snapshot && dst_st->clone_own_seq == dst_st->change_seq.load() &&
                   (snapshot != kLive || dst_st->clone_src_seq == src_st->change_seq.load()) &&
                   d->size == src_size;
  }
  if (src_offset >= src_size) return Status::OK();
  len = std::min(len, src_size - src_offset);
  if (pristine) {
    SNAPDISK_RETURN_IF_ERROR(CloneImage(src, snapshot, dst));
    {
      std::lock_guard l(meta_mu_);
      // The clone is at the source's size; bytes before dst_offset==0 are all of it.
      dst_st->clone_own_seq = dst_st->change_seq.load();
      dst_st->clone_src_seq = src_st->change_seq.load();
    }
    *copied = len;
    return Status::OK();
  }
  if (continuation) {
    *copied = len;
    return Status::OK();
  }
  // General case: copy the bytes, at most kMaxByteCopy per call (a short
  // copy, which copy_file_range callers continue).
  constexpr uint64_t kMaxByteCopy = uint64_t{1} << 30;
  len = std::min(len, kMaxByteCopy);
  std::unique_ptr<ImageHandle> in, out;
  SNAPDISK_RETURN_IF_ERROR(OpenImage(src, snapshot, false, &in));
  SNAPDISK_RETURN_IF_ERROR(OpenImage(dst, kLive, true, &out));
  std::vector<char> buf(1 << 20);
  while (*copied < len) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), len - *copied));
    size_t got = 0;
    SNAPDISK_RETURN_IF_ERROR(in->Read(src_offset + *copied, n, buf.data(), &got));
    if (got == 0) break;
    in->ReadAhead();  // the next chunk is read in while this one is written
    SNAPDISK_RETURN_IF_ERROR(out->Write(dst_offset + *copied, buf.data(), got));
    *copied += got;
  }
  return Status::OK();
}

Status StoreImpl::GetCloneOrigin(NodeId image, CloneOrigin* origin) {
  std::lock_guard l(meta_mu_);
  NodeRecord* rec = nullptr;
  SNAPDISK_RETURN_IF_ERROR(ImageLocked(image, &rec));
  origin->is_clone = rec->is_clone;
  origin->image = rec->origin_image;
  origin->image_name = rec->origin_image_name;
  origin->snapshot_name = rec->origin_snapshot_name;
  return Status::OK();
}

}  // namespace snapdisk::engine
