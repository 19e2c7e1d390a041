// The RocksDB index: opening it with snapdisk's column families and tuning,
// and turning rocksdb::Status into snapdisk::Status. Only engine/ sees
// RocksDB types.
#pragma once

#include <memory>
#include <string>

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include "snapdisk/options.h"
#include "snapdisk/status.h"

namespace snapdisk::engine {

struct IndexDb {
  // Set only when a test replaced the file system (UseFileSystem); declared
  // before `db` so that it outlives it.
  std::unique_ptr<rocksdb::Env> env;
  std::unique_ptr<rocksdb::DB> db;
  rocksdb::ColumnFamilyHandle* meta = nullptr;      // default: format, counters
  rocksdb::ColumnFamilyHandle* nodes = nullptr;     // node id -> NodeRecord
  rocksdb::ColumnFamilyHandle* snapshots = nullptr; // snapshot id -> SnapshotInfo
  rocksdb::ColumnFamilyHandle* versions = nullptr;  // (image, block, ~gen) -> VersionRecord
  rocksdb::ColumnFamilyHandle* dirty = nullptr;     // (image, block, ~gen) -> ""

  IndexDb() = default;
  ~IndexDb();
  IndexDb(const IndexDb&) = delete;
  IndexDb& operator=(const IndexDb&) = delete;

  // Runs RocksDB on `fs` instead of the default file system: the seam
  // through which tests inject faults (engine/fault_injection.h). Call
  // before Open.
  void UseFileSystem(const std::shared_ptr<rocksdb::FileSystem>& fs);

  // Opens `path`; `create` allows creating a new, empty database.
  Status Open(const std::string& path, const Options& options, bool create);
  Status Close();
};

Status FromRocks(const rocksdb::Status& s, const std::string& what);

}  // namespace snapdisk::engine
