// Fault injection for engine tests: a Store whose index (RocksDB) and data
// file run on faulty I/O that the test controls.
//
// FaultHooks owns two wrappers around the real I/O:
// - under the data files (a DataFileIo, engine/data_file.h): pwrite, punch
//   and fdatasync can fail with any errno, pwrite can be short;
// - under RocksDB (a rocksdb::FileSystemWrapper): appends, syncs and file
//   creation can fail (ENOSPC -> IOStatus::NoSpace, anything else -> IOError),
//   for all of the index's files or only its write-ahead logs.
// Both remember what was written since each file's last successful sync, so
// a test can simulate a machine crash: Crash() makes every later mutation
// fail (the "process" is dead; destroy the Store now), DropUnsyncedData()
// puts the files back as a power loss could leave them, Restart() clears
// everything and the store can be reopened.
//
// A sync that fails is treated as Linux does after a writeback error: what
// it should have made durable may be gone, so those bytes are dropped at the
// next crash even if a later sync of the same file succeeds.
//
// Faults are deterministic: a rule lets `skip` matching calls pass, then
// fails the next `times` (kForever: until cleared). No RocksDB types appear
// here. Thread-safe. A FaultHooks must outlive every Store opened with it.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include "snapdisk/options.h"
#include "snapdisk/status.h"
#include "snapdisk/store.h"

namespace snapdisk::engine {

enum class FaultOp {
  kDataWrite,    // pwrite to data/blocks.dat or data/pieces.dat
  kDataPunch,    // hole punch in either data file
  kDataSync,     // fdatasync (or write-back wait) of either data file
  kIndexCreate,  // creating any RocksDB file
  kIndexWrite,   // Append / PositionedAppend to any RocksDB file
  kIndexSync,    // Sync / Fsync of any RocksDB file
  kWalWrite,     // Append to a RocksDB write-ahead log (*.log) only
  kWalSync,      // Sync / Fsync of a write-ahead log only
};
constexpr int kFaultOpCount = 8;

// How DropUnsyncedData leaves files.
enum class DropMode {
  kAll,     // every byte written since the last good sync is lost
  kRandom,  // the data file loses each unsynced write with probability 1/2
            // (whole writes: pages reach the disk in any order); each log
            // keeps a random prefix of its unsynced tail (a torn tail)
};

class FaultHooks {
 public:
  static constexpr uint64_t kForever = std::numeric_limits<uint64_t>::max();

  FaultHooks();
  ~FaultHooks();
  FaultHooks(const FaultHooks&) = delete;
  FaultHooks& operator=(const FaultHooks&) = delete;

  // After `skip` calls of `op` pass, the next `times` fail with `err`
  // (an errno: ENOSPC, EIO...). Replaces any earlier rule for `op`.
  void Fail(FaultOp op, int err, uint64_t skip = 0, uint64_t times = kForever);
  void Clear(FaultOp op);
  void ClearAll();  // every rule and short writes; not a crash
  uint64_t Calls(FaultOp op) const;     // calls of `op` seen so far
  uint64_t Injected(FaultOp op) const;  // of which failed by a rule

  // Each data-file pwrite transfers at most `max_bytes` (0: none, and
  // returns 0); DataFile must continue or fail cleanly.
  void ShortWrites(uint32_t max_bytes);
  void NoShortWrites();

  // The process dies: from now on every write, punch, sync, file creation,
  // rename and deletion fails with EIO and changes nothing.
  void Crash();
  // After the Store is destroyed: undoes unsynced writes (see DropMode);
  // `seed` makes kRandom reproducible.
  void DropUnsyncedData(DropMode mode = DropMode::kAll, uint64_t seed = 1);
  // Clears the crash, every rule and the record of unsynced writes.
  void Restart();

  struct Impl;

 private:
  friend Status OpenStoreWithIo(const Options&, const std::string&, FaultHooks*,
                                std::unique_ptr<Store>*);
  std::unique_ptr<Impl> impl_;
};

// Store::Open, with the index and data file on `hooks`' faulty I/O.
Status OpenStoreWithIo(const Options& options, const std::string& path, FaultHooks* hooks,
                       std::unique_ptr<Store>* store);

}  // namespace snapdisk::engine
