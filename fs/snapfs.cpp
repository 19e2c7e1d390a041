#include "fs/snapfs.h"

#include <utility>

namespace snapdisk::fs {

SnapFs::SnapFs(Store* store, FsConfig config) : store_(store), config_(config) {
  StoreStats stats;
  if (store_->GetStats(&stats).ok() && stats.block_size != 0) block_size_ = stats.block_size;
}

SnapFs::~SnapFs() {
  std::set<OpenFile*> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(open_files_);
  }
  for (OpenFile* file : left) delete file;
}

void SnapFs::AddTombstone(SnapshotId id, Tombstone tombstone) {
  std::lock_guard<std::mutex> lock(mu_);
  tombstones_[id] = std::move(tombstone);
}

std::optional<Tombstone> SnapFs::FindTombstone(SnapshotId id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tombstones_.find(id);
  if (it == tombstones_.end()) return std::nullopt;
  return it->second;
}

std::optional<SnapshotId> SnapFs::FindTombstoneByName(NodeId image, std::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, t] : tombstones_) {
    if (t.image == image && t.name == name) return id;
  }
  return std::nullopt;
}

std::vector<std::pair<SnapshotId, Tombstone>> SnapFs::TombstonesOf(NodeId image) const {
  std::vector<std::pair<SnapshotId, Tombstone>> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, t] : tombstones_) {
    if (t.image == image) out.emplace_back(id, t);
  }
  return out;
}

void SnapFs::DropTombstone(SnapshotId id) {
  std::lock_guard<std::mutex> lock(mu_);
  tombstones_.erase(id);
}

bool SnapFs::DropTombstonesNamed(NodeId image, std::string_view name) {
  std::lock_guard<std::mutex> lock(mu_);
  bool dropped = false;
  for (auto it = tombstones_.begin(); it != tombstones_.end();) {
    if (it->second.image == image && it->second.name == name) {
      it = tombstones_.erase(it);
      dropped = true;
    } else {
      ++it;
    }
  }
  return dropped;
}

OpenFile* SnapFs::AdoptHandle(std::unique_ptr<ImageHandle> handle,
                              std::optional<struct stat> frozen_attr) {
  auto file = std::make_unique<OpenFile>(std::move(handle));
  file->frozen_attr = frozen_attr;
  std::lock_guard<std::mutex> lock(mu_);
  open_files_.insert(file.get());
  return file.release();
}

std::optional<struct stat> SnapFs::OpenFrozenAttr(uint64_t ino) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const OpenFile* file : open_files_) {
    if (file->frozen_attr && file->frozen_attr->st_ino == ino) return file->frozen_attr;
  }
  return std::nullopt;
}

void SnapFs::ReleaseHandle(OpenFile* file) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (open_files_.erase(file) == 0) return;  // never adopted: not ours
  }
  delete file;
}

}  // namespace snapdisk::fs
