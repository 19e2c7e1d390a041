// The dirty log: which block versions may have been overwritten in place
// since their checksums were last made durable.
//
// An in-place overwrite changes a slot's bytes before the version record
// with the new checksums reaches the index (records are flushed at sync
// time, see block_io.cpp). If the process dies in between, the index holds
// the old checksums for new bytes. Before the first in-place write to a
// version since the last sync, its key is appended here; at the next open
// every logged version gets its checksums recomputed from the bytes on disk
// (StoreImpl::RecoverDirty). The bytes there are all legitimate: old or new
// data of writes that nobody saw synced.
//
// Why a shared memory mapping of a plain file: an append is a 32-byte
// memcpy, with no system call on the 4 KiB write path (a write(2) that grew
// the file cost a few microseconds and a journal handle per append), and it
// is exactly as safe against kill -9 as write(2): the stores land in the
// page cache, which outlives the process. The file's capacity is written
// with zeros before it is mapped, so a store never needs a block allocation
// (no SIGBUS on a full disk); growing it can fail with NoSpace, cleanly.
// Emptying the log zeroes the used prefix instead of truncating the file.
// Entries are self-checking, so a torn tail is ignored.
//
// Durability: by itself the log guards against a process crash only (the
// page cache outlives the process). An image fsync whose only unsynced
// index changes are the new checksums of in-place overwrites skips the
// index log's sync and makes this log durable instead (MakeDurable, then
// the data file's fdatasync): after a power loss the entries it lists are
// what RecoverDirty needs to recompute those checksums from the synced
// bytes. Entries stay until a sync that does sync the index releases them.
//
// Thread-safety: all members are safe from many threads (internally locked).
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include <absl/container/flat_hash_set.h>

#include "keys.h"
#include "snapdisk/status.h"

namespace snapdisk::engine {

class DirtyLog {
 public:
  DirtyLog() = default;
  ~DirtyLog();
  DirtyLog(const DirtyLog&) = delete;
  DirtyLog& operator=(const DirtyLog&) = delete;

  // Opens (creating) the log and returns the version keys it holds.
  Status Open(const std::string& path, std::vector<std::string>* logged_keys);
  // Appends one version key (once until it is released).
  Status Append(const keys::VersionKeyBytes& version_key);
  // True once the log is half full: the caller should have GrowAhead run
  // on a thread that may wait (the store's flusher), so that no append has
  // to grow the file itself.
  bool WantsGrowth() const { return wants_growth_.load(std::memory_order_relaxed); }
  // Doubles the log's capacity if it is at least half full. The zeros are
  // written without holding the lock appends take; only the remap is under
  // it. Growing the file from 1 to 2 MiB inside an append held a 4 KiB
  // write for 5 ms (bench/README.md).
  Status GrowAhead();
  // Releases keys whose versions are now durable. Empties the log when none
  // is left, and compacts it when mostly stale.
  void Release(const std::vector<keys::VersionKeyBytes>& version_keys);
  // Empties the log (after recovery has repaired what it listed).
  Status Reset();
  // Starts writing the appended entries back to the device (a hint for a
  // MakeDurable that follows; errors are left to it).
  void StartWriteback();
  // Makes every entry appended so far survive a power loss. With
  // `flush_follows` (the caller flushes the device cache of the same file
  // system next, e.g. by an fdatasync of the data file, and that file
  // system overwrites in place) the entries' pages are only written back,
  // unless the file or its directory entry may not be durable yet (created,
  // grown); otherwise this is an fdatasync.
  Status MakeDurable(bool flush_follows);
  // How many keys are listed and not released.
  size_t Listed();

 private:
  // Appended keys in shards. A hash table grows by moving all its keys at
  // once, under mu_ and so in some append's write: one table of 28,000 keys
  // took 0.8 ms, and the set grows with every in-place write until a sync.
  // A shard holds a 64th of them.
  class KeySet {
   public:
    bool insert(const keys::VersionKeyBytes& k) {
      const bool inserted = Of(k).insert(k).second;
      count_ += inserted;
      return inserted;
    }
    void erase(const keys::VersionKeyBytes& k) { count_ -= Of(k).erase(k); }
    bool contains(const keys::VersionKeyBytes& k) const { return Of(k).contains(k); }
    size_t size() const { return count_; }
    bool empty() const { return count_ == 0; }
    void clear();

   private:
    using Shard = absl::flat_hash_set<keys::VersionKeyBytes>;
    Shard& Of(const keys::VersionKeyBytes& k) { return shards_[ShardOf(k)]; }
    const Shard& Of(const keys::VersionKeyBytes& k) const { return shards_[ShardOf(k)]; }
    static size_t ShardOf(const keys::VersionKeyBytes& k);
    std::array<Shard, 64> shards_;
    size_t count_ = 0;
  };

  // Makes the mapping at least `bytes` long (zero-filled file, remapped).
  // Waits for a GrowAhead under way first: its zeros must land before any
  // entry is stored past the old capacity.
  Status ReserveLocked(std::unique_lock<std::mutex>& l, uint64_t bytes);
  // Maps the file's first `bytes` (already zero-filled past size_).
  Status MapLocked(uint64_t bytes);
  // Sets wants_growth_ from how full the log is.
  void NoteFillLocked();
  void CompactLocked();

  // Held by MakeDurable while pages are written back, and by whatever
  // moves or erases entries (Release, Reset): a page written back in the
  // middle of a compaction could miss a live entry. Appends do not take it.
  // Order: rewrite_mu_ before mu_.
  std::mutex rewrite_mu_;
  std::mutex mu_;
  // Counts growths of the file; durable_growths_ is the count the last
  // fdatasync covered (both under mu_). The first MakeDurable also syncs
  // the directory (the file may be new).
  uint64_t growths_ = 1;
  uint64_t durable_growths_ = 0;
  bool dir_synced_ = false;  // under rewrite_mu_
  int fd_ = -1;
  char* map_ = nullptr;     // MAP_SHARED view of the file's first capacity_ bytes
  uint64_t capacity_ = 0;   // bytes mapped (and written as zeros or entries)
  uint64_t size_ = 0;       // bytes of entries; everything past it is zero
  // Appended and not yet released. Fixed-size keys in open-addressing
  // sets: an append allocates nothing but a shard's occasional growth.
  KeySet live_;
  bool growing_ = false;  // a GrowAhead is writing zeros past capacity_ (under mu_)
  std::condition_variable grown_;  // signalled when growing_ becomes false
  std::atomic<bool> wants_growth_{false};
  uint64_t failed_at_capacity_ = 0;  // the capacity at which GrowAhead last failed (under mu_)
  std::string path_;
};

}  // namespace snapdisk::engine
