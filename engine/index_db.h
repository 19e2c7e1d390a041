// The RocksDB index: opening it with snapdisk's column families and tuning,
// and turning rocksdb::Status into snapdisk::Status. Only engine/ sees
// RocksDB types.
#pragma once

#include <memory>
#include <string>

#include <rocksdb/db.h>

#include "snapdisk/options.h"
#include "snapdisk/status.h"

namespace snapdisk::engine {

struct IndexDb {
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

  // Opens `path`; `create` allows creating a new, empty database.
  Status Open(const std::string& path, const Options& options, bool create);
  Status Close();
};

Status FromRocks(const rocksdb::Status& s, const std::string& what);

}  // namespace snapdisk::engine
