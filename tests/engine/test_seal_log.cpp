// SealLog (engine/seal_log.h): batches without a marker are replayed by the
// next Open, oldest first; marked ones never are; a torn tail is ignored.
#include <sys/stat.h>
#include <unistd.h>

#include <memory>

#include "seal_log.h"
#include "test_util.h"

namespace snapdisk::test {
namespace {

using engine::SealLog;

class SealLogTest : public ::testing::Test {
 protected:
  std::vector<SealLog::Record> Reopen(std::unique_ptr<SealLog>* log) {
    *log = std::make_unique<SealLog>();
    std::vector<SealLog::Record> out;
    EXPECT_OK((*log)->Open(path_, &out));
    return out;
  }
  uint64_t FileSize() {
    struct stat st {};
    EXPECT_EQ(::stat(path_.c_str(), &st), 0);
    return static_cast<uint64_t>(st.st_size);
  }
  TempDir dir_;
  std::string path_ = dir_.path() + "/sealed.log";
};

TEST_F(SealLogTest, UnmarkedBatchesAreReplayedOldestFirst) {
  std::unique_ptr<SealLog> log;
  EXPECT_TRUE(Reopen(&log).empty());
  uint64_t a = 0, b = 0, c = 0;
  ASSERT_OK(log->AppendBatch(7, 3, {{10, "a10"}, {11, "a11"}}, &a));
  ASSERT_OK(log->AppendBatch(8, 5, {{10, "b10"}}, &b));
  ASSERT_OK(log->AppendBatch(7, 4, {{10, "c10"}}, &c));
  ASSERT_OK(log->MarkDone(b));
  std::unique_ptr<SealLog> other;  // as the next process would, while this one lives on
  std::vector<SealLog::Record> got = Reopen(&other);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].image, 7u);
  EXPECT_EQ(got[0].gen, 3u);
  EXPECT_EQ(got[0].block, 10u);
  EXPECT_EQ(got[0].value, "a10");
  EXPECT_EQ(got[1].value, "a11");
  EXPECT_EQ(got[2].value, "c10");
  EXPECT_EQ(got[2].gen, 4u);
  other.reset();
  ASSERT_OK(log->MarkDone(a));
  ASSERT_OK(log->MarkDone(c));  // the last one: the file is emptied, not marked
  EXPECT_EQ(FileSize(), 0u);
  EXPECT_TRUE(Reopen(&other).empty());
}

TEST_F(SealLogTest, TornTailIsIgnored) {
  std::unique_ptr<SealLog> log;
  Reopen(&log);
  uint64_t a = 0, b = 0;
  ASSERT_OK(log->AppendBatch(1, 1, {{0, std::string(100, 'x')}}, &a));
  const uint64_t first_end = FileSize();
  ASSERT_OK(log->AppendBatch(1, 2, {{0, std::string(100, 'y')}}, &b));
  log.reset();
  ASSERT_EQ(::truncate(path_.c_str(), static_cast<off_t>(first_end + 30)), 0);  // the second entry torn
  std::vector<SealLog::Record> got = Reopen(&log);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].value, std::string(100, 'x'));
  ASSERT_OK(log->Reset());
  EXPECT_EQ(FileSize(), 0u);
}

}  // namespace
}  // namespace snapdisk::test
