// The index's background threads (engine/index_db.cpp): RocksDB's flushes
// and compactions run at nice 19, so that a ring thread serving a request
// wins the CPU from them.
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "index_db.h"
#include "test_util.h"

namespace snapdisk::test {
namespace {

// The nice value of every thread of this process whose name starts with
// "rocksdb:", by name (/proc/self/task/TID/comm and the 19th field of stat).
std::map<std::string, std::vector<int>> RocksDbThreadNice() {
  std::map<std::string, std::vector<int>> out;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::string comm;
    std::getline(std::ifstream(task.path() / "comm"), comm);
    if (comm.rfind("rocksdb:", 0) != 0) continue;
    std::string stat;
    std::getline(std::ifstream(task.path() / "stat"), stat);
    // After "(comm)" come the fields from the 3rd (state) on; nice is the 19th.
    std::istringstream rest(stat.substr(stat.rfind(')') + 2));
    std::string field;
    for (int i = 3; i < 19 && rest >> field; ++i) {
    }
    int nice = 0;
    if (rest >> nice) out[comm].push_back(nice);
  }
  return out;
}

TEST(IndexDbTest, FlushAndCompactionThreadsRunAtNice19) {
  TempDir dir;
  engine::IndexDb index;
  ASSERT_TRUE(index.Open(dir.path() + "/index", TestOptions(), true).ok());
  // Two flushes (the HIGH pool's jobs) make two files, which a forced
  // compaction (a LOW pool job) merges. A pool's thread takes its priority
  // when it picks up a job.
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(index.db->Put(rocksdb::WriteOptions(), index.meta, "key" + std::to_string(i), "value").ok());
    ASSERT_TRUE(index.db->Flush(rocksdb::FlushOptions(), index.meta).ok());
  }
  rocksdb::CompactRangeOptions compact;
  compact.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  ASSERT_TRUE(index.db->CompactRange(compact, index.meta, nullptr, nullptr).ok());

  const auto nice = RocksDbThreadNice();
  for (const char* pool : {"rocksdb:high", "rocksdb:low"}) {
    auto it = nice.find(pool);
    ASSERT_NE(it, nice.end()) << "no thread named " << pool;
    for (int n : it->second) EXPECT_EQ(n, 19) << pool;
  }
  ASSERT_TRUE(index.Close().ok());
}

}  // namespace
}  // namespace snapdisk::test
