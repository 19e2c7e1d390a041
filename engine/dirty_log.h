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
// Why a plain file and not the index: an append is one small write(2) with
// no memtable insert, no WAL record and no later delete; the log is emptied
// with one ftruncate once nothing is dirty. It is never synced: it guards
// against a process crash (kill -9), where every write(2) issued before the
// data pwrite(2) is already in the page cache. Entries are self-checking, so
// a torn tail is ignored.
//
// Thread-safety: all members are safe from many threads (internally locked).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

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
  Status Append(const std::string& version_key);
  // Releases keys whose versions are now durable. Empties the file when none
  // is left, and rewrites it when mostly stale.
  void Release(const std::vector<std::string>& version_keys);
  // Empties the file (after recovery has repaired what it listed).
  Status Reset();

 private:
  std::mutex mu_;
  int fd_ = -1;
  Status CompactLocked();

  uint64_t size_ = 0;                     // bytes in the file
  std::unordered_set<std::string> live_;  // appended and not yet released
  std::string path_;
};

}  // namespace snapdisk::engine
