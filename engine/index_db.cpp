// RocksDB setup for the index (see index_db.h and docs/format.md).
#include "index_db.h"

#include <rocksdb/cache.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>

#include <vector>

#include "keys.h"

namespace snapdisk::engine {

Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::OK();
  std::string msg = what + ": " + s.ToString();
  if (s.IsNotFound()) return Status::NotFound(msg);
  if (s.IsCorruption()) return Status::Corruption(msg);
  if (s.IsNoSpace() || s.subcode() == rocksdb::Status::kNoSpace)
    return Status::NoSpace(msg + " (free space in the store's file system)");
  if (s.IsBusy() || s.IsTryAgain()) return Status::Busy(msg);
  if (s.IsInvalidArgument()) return Status::Corruption(msg);
  return Status::IOError(msg);
}

IndexDb::~IndexDb() { (void)Close(); }

void IndexDb::UseFileSystem(const std::shared_ptr<rocksdb::FileSystem>& fs) {
  env = rocksdb::NewCompositeEnv(fs);
}

Status IndexDb::Close() {
  if (!db) return Status::OK();
  for (auto* h : {nodes, snapshots, versions, dirty})
    if (h) db->DestroyColumnFamilyHandle(h);
  nodes = snapshots = versions = dirty = nullptr;
  meta = nullptr;
  rocksdb::Status s = db->Close();
  db.reset();
  return FromRocks(s, "close index");
}

Status IndexDb::Open(const std::string& path, const Options& options, bool create) {
  rocksdb::Options dbo;
  if (env) dbo.env = env.get();
  dbo.create_if_missing = create;
  dbo.create_missing_column_families = create;
  dbo.error_if_exists = false;
  dbo.paranoid_checks = true;
  dbo.max_background_jobs = 2;
  // Flushes and compactions run at nice 19. At nice 0 a compaction thread
  // took a vCPU for its whole 3 ms slice while the thread serving a 4 KiB
  // write, and the writer it had just answered, waited on that vCPU's run
  // queue (the other one idle): a 3 ms gap in the writes (sched_switch
  // trace, bench/README.md "Since 10:00 on 2026-12-05"). At nice 19 they
  // weigh 1/68 of a ring thread, so they lose most picks to one; not all:
  // later traces still caught them holding a vCPU for 3-5 ms while a ring
  // thread waited, and SCHED_IDLE did no better ("Since 12:45 on
  // 2026-12-05"). With nothing else to run they still get a whole CPU.
  // The pools are the process's (Env::Default, which the
  // tests' fault-injecting Env forwards to), so every open sets the same
  // thing; an Env that cannot returns NotSupported and keeps its threads.
  for (auto pool : {rocksdb::Env::Priority::LOW, rocksdb::Env::Priority::HIGH})
    (void)dbo.env->LowerThreadPoolCPUPriority(pool, rocksdb::CpuPriority::kLow);
  dbo.max_open_files = 512;
  dbo.keep_log_file_num = 4;
  dbo.max_log_file_size = 4 << 20;
  dbo.max_total_wal_size = 64 << 20;
  dbo.avoid_flush_during_shutdown = false;
  // Everything the engine writes goes through the WAL: a Put is in the
  // kernel before it returns (survives kill -9); fsync syncs the WAL.
  dbo.manual_wal_flush = false;
  // Reuse old log files instead of appending to new ones: an fsync then
  // overwrites allocated blocks and needs no file-system journal commit,
  // which is most of its cost. Recycled logs require point-in-time
  // recovery (a stale record from the file's previous life ends the log).
  dbo.recycle_log_file_num = 4;
  dbo.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  // A write waits for the log writes of the writers ahead of it, not for
  // their memtable inserts: a snapshot's few keys no longer queue behind
  // the flusher's batch of records (about 3 us of skip-list insert each, up
  // to 1 ms for a batch under a 4 KiB write load). The price is RocksDB's
  // snapshot immutability, which the engine does not use: it takes no
  // RocksDB snapshots, and a reader that meets a batch still being
  // inserted sees each key old or new, which is what it would see had the
  // batch landed a moment later; every record a batch carries is also held
  // in memory (live caches, sealed batches) until that batch's Write
  // returns, and readers ask there first. Recovery replays whole batches.
  dbo.unordered_write = true;

  auto cache = rocksdb::NewLRUCache(options.index_cache_bytes);
  auto table_options = [&](bool bloom) {
    rocksdb::BlockBasedTableOptions t;
    t.block_cache = cache;
    t.cache_index_and_filter_blocks = true;
    t.pin_l0_filter_and_index_blocks_in_cache = true;
    if (bloom) {
      t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10, false));
      // Filters and indexes in 4 KiB partitions under a pinned top level.
      // A whole-file filter of a large table (1 MiB and more once an image
      // of tens of GiB is indexed) does not fit one shard of the block
      // cache, so it was read from disk and checksummed again on every
      // seek: a cold seq read of an image whose records sat in such a table
      // ran at 220 MiB/s with the daemon on 100 % CPU instead of ~900.
      t.partition_filters = true;
      t.index_type = rocksdb::BlockBasedTableOptions::kTwoLevelIndexSearch;
      t.metadata_block_size = 4096;
      t.pin_top_level_index_and_filter = true;
    }
    return t;
  };

  rocksdb::ColumnFamilyOptions small;
  small.write_buffer_size = 4 << 20;
  small.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table_options(false)));

  rocksdb::ColumnFamilyOptions ver;
  ver.write_buffer_size = options.index_write_buffer_bytes;
  ver.max_write_buffer_number = 2;
  ver.prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(keys::kVersionPrefixSize));
  // The memtable's bloom filter (prefixes and whole keys) is allocated and
  // zeroed whole when a memtable is created, inside the write that switches
  // memtables. At 0.1 of the 16 MiB buffer (1.6 MiB) that took about a
  // millisecond here, and a snapshot's commit that happened to be that
  // write took 1.2 ms (bench/README.md). At 0.02 it is 320 KiB, still about
  // 12 bits for each of the ~220k prefixes and keys a full memtable holds.
  // Measured with a program writing 128-record batches at the flusher's
  // rate, with a one-key write between every four: writes over 0.5 ms, 2 of
  // 2,000 at 0.1 (1.1-3.9 ms) in each of two runs, none at 0.02 (max 145 and
  // 83 us).
  ver.memtable_prefix_bloom_size_ratio = 0.02;
  ver.memtable_whole_key_filtering = true;
  auto vt = table_options(true);
  vt.whole_key_filtering = true;
  ver.table_factory.reset(rocksdb::NewBlockBasedTableFactory(vt));
  ver.compression = rocksdb::kNoCompression;

  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, small},
      {"nodes", small},
      {"snapshots", small},
      {"versions", ver},
      {"dirty", small},
  };
  if (!create) {
    // Refuse a foreign RocksDB directory clearly instead of adding our
    // column families to someone else's database.
    std::vector<std::string> existing;
    rocksdb::Status ls = rocksdb::DB::ListColumnFamilies(dbo, path, &existing);
    if (!ls.ok()) return FromRocks(ls, "read index at " + path);
    for (const auto& d : cfs) {
      bool found = false;
      for (const auto& e : existing) found |= (e == d.name);
      if (!found)
        return Status::Corruption("index at " + path + " has no column family '" + d.name +
                                  "': not a snapdisk store");
    }
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(dbo, path, cfs, &handles, &raw);
  if (!s.ok()) return FromRocks(s, "open index at " + path);
  db.reset(raw);
  meta = handles[0];
  nodes = handles[1];
  snapshots = handles[2];
  versions = handles[3];
  dirty = handles[4];
  // The default column family's handle is owned by the DB; keep ours out of
  // Close()'s destroy list by not storing it anywhere else.
  db->DestroyColumnFamilyHandle(handles[0]);
  meta = db->DefaultColumnFamily();
  return Status::OK();
}

}  // namespace snapdisk::engine
