// The seal log: the block records a snapshot sealed, kept safe from a crash
// of the process until the index has them.
//
// Taking a snapshot moves the live generation's unindexed version records
// into a sealed batch (store_impl.h) instead of writing them to the index
// while writes wait; the flusher indexes the batch moments later. Until it
// has, the records exist only in memory, and a kill -9 in between would
// change the snapshot after its mkdir returned. So the batch is appended
// here first, with one write(2) (no memtable insert, no sorting: about a
// tenth of an index write of the same records), and after the index has the
// batch a marker says so. At open, batches without a marker are written to
// the index before anything reads it (StoreImpl::ReplaySealLog).
//
// Like the index's own log between syncs, this survives kill -9 (the page
// cache keeps every completed write(2)) but is not synced: on power loss
// unsynced writes, sealed or not, may be lost. A marker is also written for
// a batch whose snapshot failed and went back to the live image, so that an
// older copy of records that later writes changed is never replayed.
//
// Entry: u32 type, u32 payload length, u64 batch sequence, payload, then the
// XXH3-64 of all that. A batch's payload: u64 image, u64 generation, u32
// count, then per record u64 block and a length-prefixed encoded record. A
// torn tail ends the log. The file is emptied when no batch is unflushed.
//
// Thread-safety: all members are safe from many threads (internally locked).
#pragma once

#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "snapdisk/status.h"

namespace snapdisk::engine {

class SealLog {
 public:
  struct Record {
    uint64_t image = 0, gen = 0, block = 0;
    std::string value;  // VersionRecord::Encode()
  };

  SealLog() = default;
  ~SealLog();
  SealLog(const SealLog&) = delete;
  SealLog& operator=(const SealLog&) = delete;

  // Opens (creating) the log; *unflushed gets the records of every batch
  // that has no marker, oldest batch first.
  Status Open(const std::string& path, std::vector<Record>* unflushed);
  // Empties the log (after the caller has indexed what Open returned).
  Status Reset();
  // Appends one batch of records of (image, gen); *seq identifies it.
  Status AppendBatch(uint64_t image, uint64_t gen, const std::vector<std::pair<uint64_t, std::string>>& records,
                     uint64_t* seq);
  // The index has batch `seq` (or it was given back): it is never replayed.
  Status MarkDone(uint64_t seq);

 private:
  Status AppendLocked(uint32_t type, uint64_t seq, const std::string& payload);

  std::mutex mu_;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint64_t next_seq_ = 1;
  std::set<uint64_t> open_batches_;  // appended, no marker yet
  std::string path_;
};

}  // namespace snapdisk::engine
