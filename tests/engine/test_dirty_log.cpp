// DirtyLog (engine/dirty_log.h): what is appended is listed again by the
// next Open of the file, whatever happened to the process in between, until
// it is released; torn entries and stale leftovers are never listed. And the
// store's use of it: a sync releases the in-place overwrites completed before it.
#include <fcntl.h>
#include <sys/resource.h>
#include <csignal>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <set>
#include <thread>

#include "dirty_log.h"
#include "keys.h"
#include "test_util.h"

namespace snapdisk::test {
namespace {

using engine::DirtyLog;

class DirtyLogTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()); }

  static keys::VersionKeyBytes Key(uint64_t i) { return keys::VersionBytes(7, i, 3); }
  static std::string Str(uint64_t i) { return keys::Version(7, i, 3); }

  // Opens the file as a new process would (the old object may still be alive,
  // as after kill -9 the page cache still holds what the mapping stored).
  std::vector<std::string> Reopen(std::unique_ptr<DirtyLog>* log) {
    *log = std::make_unique<DirtyLog>();
    std::vector<std::string> keys;
    EXPECT_OK((*log)->Open(path_, &keys));
    return keys;
  }

  TempDir dir_;
  const std::string path_ = dir_.path() + "/dirty.log";
};

TEST_F(DirtyLogTest, AppendedKeysAreListedByTheNextOpenUntilReleased) {
  std::unique_ptr<DirtyLog> log;
  EXPECT_TRUE(Reopen(&log).empty());
  for (uint64_t i = 0; i < 10; ++i) ASSERT_OK(log->Append(Key(i)));
  ASSERT_OK(log->Append(Key(3)));  // once until released
  std::unique_ptr<DirtyLog> other;
  std::vector<std::string> listed = Reopen(&other);
  ASSERT_EQ(listed.size(), 10u);
  for (uint64_t i = 0; i < 10; ++i) EXPECT_EQ(listed[i], Str(i));
  other.reset();

  log->Release({Key(0), Key(1)});  // some still dirty: nothing is dropped yet
  EXPECT_EQ(Reopen(&other).size(), 10u);
  other.reset();
  std::vector<keys::VersionKeyBytes> rest;
  for (uint64_t i = 2; i < 10; ++i) rest.push_back(Key(i));
  log->Release(rest);  // none left: the log is empty
  EXPECT_TRUE(Reopen(&other).empty());
  other.reset();
  ASSERT_OK(log->Append(Key(42)));  // appends after emptying start from the front
  listed = Reopen(&other);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0], Str(42));
}

TEST_F(DirtyLogTest, GrowsPastItsFirstCapacityAndCompacts) {
  std::unique_ptr<DirtyLog> log;
  Reopen(&log);
  const uint64_t n = 100000;  // 3.2 MiB of entries: two remaps past the first 1 MiB
  for (uint64_t i = 0; i < n; ++i) ASSERT_OK(log->Append(Key(i)));
  std::unique_ptr<DirtyLog> other;
  ASSERT_EQ(Reopen(&other).size(), n);
  other.reset();
  // Release all but every 1000th: mostly stale, so it is compacted in place.
  std::vector<keys::VersionKeyBytes> done;
  std::set<std::string> kept;
  for (uint64_t i = 0; i < n; ++i) {
    if (i % 1000 == 0) kept.insert(Str(i));
    else done.push_back(Key(i));
  }
  log->Release(done);
  std::vector<std::string> listed = Reopen(&other);
  EXPECT_EQ(std::set<std::string>(listed.begin(), listed.end()), kept);
  EXPECT_EQ(listed.size(), kept.size()) << "compaction left stale entries";
}

TEST_F(DirtyLogTest, GrowsAheadOnAnotherThreadWithoutLosingConcurrentAppends) {
  std::unique_ptr<DirtyLog> log;
  Reopen(&log);
  auto file_size = [&] {
    struct stat st {};
    EXPECT_EQ(::stat(path_.c_str(), &st), 0);
    return st.st_size;
  };
  // The first capacity is 1 MiB, 32,768 entries: half full asks for growth.
  uint64_t n = 0;
  for (; n + 1 < 16384; ++n) ASSERT_OK(log->Append(Key(n)));
  EXPECT_FALSE(log->WantsGrowth());
  ASSERT_OK(log->GrowAhead());  // less than half used: nothing to do
  EXPECT_EQ(file_size(), 1 << 20);
  ASSERT_OK(log->Append(Key(n++)));
  EXPECT_TRUE(log->WantsGrowth());
  ASSERT_OK(log->GrowAhead());
  EXPECT_EQ(file_size(), 2 << 20);
  EXPECT_FALSE(log->WantsGrowth());
  // Half of 2 MiB, then appends go on while another thread grows the file,
  // and go past its capacity: either the growth is done by then or the
  // append that needs it waits for it.
  while (!log->WantsGrowth()) ASSERT_OK(log->Append(Key(n++)));
  EXPECT_EQ(n, 32768u);
  Status grown;
  std::thread grower([&] { grown = log->GrowAhead(); });
  for (const uint64_t end = n + 40000; n < end; ++n) ASSERT_OK(log->Append(Key(n)));
  grower.join();
  ASSERT_OK(grown);
  EXPECT_GE(file_size(), 4 << 20);
  std::unique_ptr<DirtyLog> other;
  std::vector<std::string> listed = Reopen(&other);
  ASSERT_EQ(listed.size(), n) << "an entry was lost to the growth's zeros";
  for (uint64_t i = 0; i < n; ++i) ASSERT_EQ(listed[i], Str(i)) << "entry " << i;
}

TEST_F(DirtyLogTest, AFailedGrowthIsNotAskedForAgainAtThatCapacity) {
  std::unique_ptr<DirtyLog> log;
  Reopen(&log);
  uint64_t n = 0;
  while (!log->WantsGrowth()) ASSERT_OK(log->Append(Key(n++)));
  {
    // The file may not grow past 1.5 MiB: the growth to 2 MiB fails (EFBIG),
    // as it would on a full disk.
    struct rlimit saved {};
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
    auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = saved;
    small.rlim_cur = 3 << 19;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
    const Status grown = log->GrowAhead();
    const bool wants_after = log->WantsGrowth();
    ASSERT_OK(log->Append(Key(n++)));
    const bool wants_after_append = log->WantsGrowth();
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &saved), 0);
    ::signal(SIGXFSZ, old_handler);
    EXPECT_FALSE(grown.ok());
    EXPECT_FALSE(wants_after) << "the flusher would be asked again at once";
    EXPECT_FALSE(wants_after_append);
  }
  // The append that fills the log grows it itself.
  while (n < 40000) ASSERT_OK(log->Append(Key(n++)));
  std::unique_ptr<DirtyLog> other;
  std::vector<std::string> listed = Reopen(&other);
  ASSERT_EQ(listed.size(), n);
  for (uint64_t i = 0; i < n; ++i) ASSERT_EQ(listed[i], Str(i)) << "entry " << i;
}

TEST_F(DirtyLogTest, TornEntryEndsTheListAndIsOverwritten) {
  std::unique_ptr<DirtyLog> log;
  Reopen(&log);
  for (uint64_t i = 0; i < 3; ++i) ASSERT_OK(log->Append(Key(i)));
  log.reset();
  // Damage the second entry, as a process killed in the middle of its
  // memcpy leaves it; the third is then past the torn point.
  int fd = ::open(path_.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "X", 1, 32 + 5), 1);
  ::close(fd);
  std::vector<std::string> listed = Reopen(&log);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0], Str(0));
  // The torn entry and what followed are gone for good: a new append takes
  // the torn entry's place and nothing stale reappears after it.
  ASSERT_OK(log->Append(Key(9)));
  std::unique_ptr<DirtyLog> other;
  listed = Reopen(&other);
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[1], Str(9));
}

TEST_F(DirtyLogTest, ReadsAnOlderBuildsUnpreallocatedLog) {
  {  // an older build wrote entries with write(2) and no zero tail
    std::unique_ptr<DirtyLog> log;
    Reopen(&log);
    for (uint64_t i = 0; i < 2; ++i) ASSERT_OK(log->Append(Key(i)));
  }
  ASSERT_EQ(::truncate(path_.c_str(), 64), 0);
  std::unique_ptr<DirtyLog> log;
  std::vector<std::string> listed = Reopen(&log);
  ASSERT_EQ(listed.size(), 2u);
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_GE(st.st_size, 1 << 20) << "capacity is written before it is mapped";
  EXPECT_GE(st.st_blocks * 512, 1 << 20) << "the mapped capacity must have blocks (no SIGBUS when full)";
}

// The store's use of the log: an in-place overwrite of an indexed version is
// listed until a sync of the index makes its checksums durable, and such a
// sync releases exactly the overwrites completed before it. An image sync
// that skips the index keeps them listed.
class StoreDirtyLogTest : public StoreTest {
 protected:
  // The blocks of `image` a new process would find in the store's dirty
  // log now (read from a copy: Open rewrites a torn tail).
  std::set<uint64_t> ListedBlocks(NodeId image) {
    const std::string copy = store_path() + "/dirty.copy";
    std::filesystem::copy_file(store_path() + "/data/dirty.log", copy,
                               std::filesystem::copy_options::overwrite_existing);
    DirtyLog log;
    std::vector<std::string> listed;
    EXPECT_OK(log.Open(copy, &listed));
    std::set<uint64_t> blocks;
    for (const std::string& k : listed) {
      keys::VersionKey vk;
      EXPECT_TRUE(keys::ParseVersion(k, &vk));
      if (vk.image == image) blocks.insert(vk.block);
    }
    return blocks;
  }
};

TEST_F(StoreDirtyLogTest, SyncReleasesTheInPlaceOverwritesBeforeItAndKeepsLaterOnes) {
  constexpr uint64_t kBlock = 64 * KiB;
  constexpr uint64_t kBlocks = 64;
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  const std::string fill(kBlocks * kBlock, 'a');
  ASSERT_OK(h->Write(0, fill.data(), fill.size()));
  ASSERT_OK(h->Sync());  // indexed and durable: nothing is dirty
  EXPECT_TRUE(ListedBlocks(img).empty());

  const std::string piece(4 * KiB, 'b');
  std::set<uint64_t> all;
  for (uint64_t b = 0; b < kBlocks; ++b) {
    ASSERT_OK(h->Write(b * kBlock + 4 * KiB, piece.data(), piece.size()));
    all.insert(b);
  }
  EXPECT_EQ(ListedBlocks(img), all);  // every block was overwritten in place
  ASSERT_OK(store_->SyncAll());
  EXPECT_TRUE(ListedBlocks(img).empty());

  ASSERT_OK(h->Write(5 * kBlock, piece.data(), piece.size()));
  ASSERT_OK(store_->SyncAll());
  ASSERT_OK(h->Write(9 * kBlock, piece.data(), piece.size()));  // after the last sync
  EXPECT_EQ(ListedBlocks(img), std::set<uint64_t>{9});
  ASSERT_OK(h->Write(9 * kBlock + 8 * KiB, piece.data(), piece.size()));  // listed once
  ASSERT_OK(h->Write(5 * kBlock, piece.data(), piece.size()));            // dirty again
  EXPECT_EQ(ListedBlocks(img), (std::set<uint64_t>{5, 9}));
  ASSERT_OK(store_->SyncAll());
  EXPECT_TRUE(ListedBlocks(img).empty());
}

TEST_F(StoreDirtyLogTest, ImageSyncOfInPlaceOverwritesKeepsThemListedUntilTheIndexIsSynced) {
  constexpr uint64_t kBlock = 64 * KiB;
  NodeId img = MakeImage("a.img");
  auto h = OpenLive(img);
  const std::string fill(16 * kBlock, 'a');
  ASSERT_OK(h->Write(0, fill.data(), fill.size()));
  ASSERT_OK(h->Sync());
  const std::string piece(4 * KiB, 'b');
  for (uint64_t b : {2, 7}) ASSERT_OK(h->Write(b * kBlock, piece.data(), piece.size()));
  ASSERT_OK(h->Sync());  // nothing but new checksums: the dirty log stands in for them
  EXPECT_EQ(ListedBlocks(img), (std::set<uint64_t>{2, 7}));
  ASSERT_OK(h->Write(3 * kBlock, piece.data(), piece.size()));
  ASSERT_OK(h->Discard(11 * kBlock, 4 * KiB));  // changes a piece map: the next sync syncs the index
  ASSERT_OK(h->Sync());
  EXPECT_TRUE(ListedBlocks(img).empty());
}

}  // namespace
}  // namespace snapdisk::test
