// ImageHandle: an open live image or frozen snapshot view (see image.h).
#include <algorithm>
#include <atomic>
#include <mutex>

#include <fmt/format.h>

#include "store_impl.h"

namespace snapdisk::engine {

namespace {

// How many requests' worth a sequential stream is prefetched ahead: the
// scattered pieces of an image with many snapshots are small reads, and the
// device serves more of them at once the more it is handed.
constexpr uint64_t kReadAheadRequests = 4;

class ImageHandleImpl final : public ImageHandle {
 public:
  ImageHandleImpl(StoreImpl* store, std::shared_ptr<ImageState> img, SnapshotId snap, uint64_t gen,
                  uint64_t snap_size, bool writable)
      : store_(store), img_(std::move(img)), snap_(snap), gen_(gen), snap_size_(snap_size),
        writable_(writable) {}

  ~ImageHandleImpl() override { store_->ReleaseHandle(img_, writable_, snap_ == kLive, snap_ == kLive ? 0 : gen_); }

  Status Read(uint64_t offset, size_t len, char* buf, size_t* bytes_read) override {
    uint64_t size = Size();
    *bytes_read = offset >= size ? 0 : static_cast<size_t>(std::min<uint64_t>(len, size - offset));
    if (*bytes_read == 0) return Status::OK();
    // What to prefetch: the read itself when it spans several blocks (its
    // pieces then reach the device together), less what the stream's read-
    // ahead has prefetched already. In a sequential stream (a read that
    // starts where the previous one ended) the next kReadAheadRequests
    // reads' worth is left to ReadAhead(), which the caller runs after it
    // has replied. Relaxed and racy between threads: it only changes a hint.
    const uint64_t end = offset + *bytes_read;
    const bool sequential = next_sequential_.exchange(end, std::memory_order_relaxed) == offset;
    const uint64_t bs = store_->block_size();
    const bool several_blocks = offset / bs != (end - 1) / bs;
    const uint64_t done_until = prefetched_until_.load(std::memory_order_relaxed);
    const uint64_t from = sequential ? std::max(offset, done_until) : offset;
    const uint64_t to = several_blocks ? end : offset;
    if (sequential && *bytes_read > kSubBlockSize) {
      const uint64_t ahead_to = end + kReadAheadRequests * *bytes_read;
      std::lock_guard l(ahead_mu_);
      ahead_from_ = std::max(end, done_until);
      ahead_to_ = ahead_to;
      prefetched_until_.store(ahead_to, std::memory_order_relaxed);
    }
    return store_->ReadRange(*img_, gen_, snap_ == kLive, size, offset, *bytes_read, buf, from, to);
  }

  void ReadAhead() override {
    uint64_t from = 0, to = 0;
    {
      std::lock_guard l(ahead_mu_);
      std::swap(from, ahead_from_);
      std::swap(to, ahead_to_);
    }
    if (to > from) store_->Prefetch(*img_, gen_, snap_ == kLive, Size(), from, to);
  }

  Status Write(uint64_t offset, const char* data, size_t len) override {
    SNAPDISK_RETURN_IF_ERROR(CheckWritable());
    return store_->WriteRange(*img_, offset, data, len, false);
  }

  Status Discard(uint64_t offset, uint64_t len) override {
    SNAPDISK_RETURN_IF_ERROR(CheckWritable());
    uint64_t size = img_->size.load();
    if (offset >= size) return Status::OK();
    len = std::min(len, size - offset);
    return store_->WriteRange(*img_, offset, nullptr, len, true);
  }

  Status Sync() override {
    if (snap_ != kLive) return Status::OK();  // nothing of a frozen view can be unsynced
    return store_->SyncImage(*img_);
  }

  Status Seek(uint64_t offset, SeekWhence whence, uint64_t* result) override {
    uint64_t gen = snap_ == kLive ? img_->LiveGen() : gen_;
    return store_->SeekRange(*img_, gen, Size(), offset, whence, result);
  }

  uint64_t Size() const override { return snap_ == kLive ? img_->size.load() : snap_size_; }
  NodeId node() const override { return img_->id; }
  uint64_t snapshot() const override { return snap_; }
  bool read_only() const override { return !writable_; }

 private:
  std::atomic<uint64_t> next_sequential_{~uint64_t{0}};  // where the last read ended
  std::atomic<uint64_t> prefetched_until_{0};            // end of the last prefetched range
  std::mutex ahead_mu_;  // guards the pair below: the range ReadAhead() is to prefetch
  uint64_t ahead_from_ = 0, ahead_to_ = 0;

  Status CheckWritable() const {
    if (snap_ != kLive) return Status::ReadOnly("a snapshot's frozen view is read-only");
    if (!writable_) return Status::ReadOnly("image handle was opened read-only");
    return Status::OK();
  }

  StoreImpl* const store_;
  const std::shared_ptr<ImageState> img_;
  const SnapshotId snap_;
  const uint64_t gen_;
  const uint64_t snap_size_;
  const bool writable_;
};

}  // namespace

Status StoreImpl::OpenImage(NodeId image, SnapshotId snapshot, bool writable,
                            std::unique_ptr<ImageHandle>* handle) {
  std::lock_guard l(meta_mu_);
  NodeRecord* rec = nullptr;
  SNAPDISK_RETURN_IF_ERROR(ImageLocked(image, &rec));
  auto st = StateLocked(image);
  uint64_t gen = 0, size = 0;
  if (snapshot != kLive) {
    auto it = snapshots_.find(snapshot);
    if (it == snapshots_.end() || it->second.image != image)
      return Status::NotFound(fmt::format("no snapshot {} of image {}", snapshot, PathOfLocked(image)));
    if (writable) return Status::ReadOnly("snapshot '" + it->second.name + "' is read-only");
    gen = it->second.generation;
    size = it->second.size;
    st->pinned_gens.insert(gen);
  } else if (writable) {
    SNAPDISK_RETURN_IF_ERROR(Writable());
    ++st->open_writers;
  }
  ++st->open_handles;
  *handle = std::make_unique<ImageHandleImpl>(this, st, snapshot, gen, size, writable && snapshot == kLive);
  return Status::OK();
}

void StoreImpl::ReleaseHandle(const std::shared_ptr<ImageState>& img, bool writer, bool live,
                              uint64_t pinned_gen) {
  bool collect = false;
  // A closed image keeps nothing pending: its records go to the index now
  // (a failure leaves them pending for the next flush).
  if (writer) (void)FlushPending(*img);
  {
    std::lock_guard l(meta_mu_);
    --img->open_handles;
    if (writer) --img->open_writers;
    if (!live) {
      auto it = img->pinned_gens.find(pinned_gen);
      if (it != img->pinned_gens.end()) img->pinned_gens.erase(it);
      collect = true;  // its snapshot may have been deleted while open
    }
    auto n = nodes_.find(img->id);
    if (n != nodes_.end() && !n->second.linked) collect = true;
  }
  if (collect) ScheduleGc(img->id);
}

}  // namespace snapdisk::engine
