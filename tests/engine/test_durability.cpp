// Durability: synced writes survive closing and crashing; one opener at a time.
//
// Crash tests re-execute this binary (/proc/self/exe) with a gtest filter
// selecting DurabilityChild.DISABLED_Run, which works on the store named by
// SNAPDISK_CHILD_STORE and is killed with SIGKILL by the parent at a random
// instant. A fresh process (not a bare fork) keeps RocksDB's thread pools sane.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <thread>

#include "test_util.h"

extern char** environ;

namespace snapdisk::test {
namespace {

using DurabilityTest = StoreTest;

TEST_F(DurabilityTest, SyncedDataSurvivesCloseAndReopen) {
  NodeId d = MakeDir("proj");
  NodeId img = MakeImage("a.img", d);
  const std::string v = Pattern(3 * MiB + 17, 0, 1);
  {
    auto h = OpenLive(img);
    ASSERT_OK(WriteStr(h.get(), 0, v));
    ASSERT_OK(h->Sync());
  }
  SnapshotInfo s = Snap(img, "s");
  ASSERT_OK(store_->SyncAll());
  store_.reset();
  OpenStore();
  NodeAttr attr;
  ASSERT_OK(store_->Lookup(d, "a.img", &attr));
  EXPECT_EQ(attr.size, v.size());
  EXPECT_BYTES_EQ(ReadAll(img), v, 0);
  EXPECT_BYTES_EQ(ReadAll(img, s.id), v, 0);
}

TEST_F(DurabilityTest, SecondOpenIsBusy) {
  std::unique_ptr<Store> second;
  Status s = Store::Open(TestOptions(), store_path(), &second);
  EXPECT_TRUE(s.Is(Status::Code::kBusy)) << s.ToString();
  EXPECT_EQ(second, nullptr);
  // The first store still works, and once closed the store opens again.
  NodeId img = MakeImage("a");
  store_.reset();
  ASSERT_OK(Store::Open(TestOptions(), store_path(), &second));
  NodeAttr attr;
  ASSERT_OK(second->GetAttr(img, &attr));
}

// ---- the child process -----------------------------------------------------
// Modes (SNAPDISK_CHILD_MODE):
//   "try-open": exits 0 if Store::Open is Busy, 1 if it opened, 2 otherwise.
//   "writer":   rounds of writes; after each round's Sync prints "synced R"
//               on stdout; every 5th round also takes snapshot "rR" first.
//               Runs until killed.
constexpr uint64_t kPieces = 256;  // 1 MiB of 4 KiB pieces
constexpr int kPiecesPerRound = 6;

// The pieces round r writes (deterministic), all with pattern seed r.
std::vector<uint64_t> PiecesOfRound(uint64_t r) {
  std::vector<uint64_t> v;
  std::mt19937_64 rng(r * 7919);
  for (int j = 0; j < kPiecesPerRound; ++j) v.push_back(rng() % kPieces);
  return v;
}

TEST(DurabilityChild, DISABLED_Run) {
  const char* path = std::getenv("SNAPDISK_CHILD_STORE");
  const char* mode = std::getenv("SNAPDISK_CHILD_MODE");
  if (path == nullptr || mode == nullptr) GTEST_SKIP() << "runs only as a child";
  std::unique_ptr<Store> store;
  Status s = Store::Open(TestOptions(), path, &store);
  if (std::string(mode) == "try-open") {
    std::_Exit(s.Is(Status::Code::kBusy) ? 0 : s.ok() ? 1 : 2);
  }
  if (std::string(mode) == "sealed") {
    // Unsynced writes, then a snapshot, and the flusher never runs: what the
    // snapshot shows exists only in memory and the seal log when killed.
    store.reset();
    Options o = TestOptions();
    o.background_flush = false;
    if (!Store::Open(o, path, &store).ok()) std::_Exit(3);
    NodeAttr attr;
    if (!store->CreateImage(kRootNode, "sealed.img", 0644, 0, 0, &attr).ok()) std::_Exit(4);
    std::unique_ptr<ImageHandle> h;
    if (!store->OpenImage(attr.id, kLive, true, &h).ok()) std::_Exit(5);
    std::string base = Pattern(MiB, 0, 1);
    if (!h->Write(0, base.data(), base.size()).ok() || !h->Sync().ok()) std::_Exit(6);
    for (uint64_t off : {uint64_t{5000}, 300 * KiB, 2 * MiB}) {  // in place, in place, a new block
      std::string d = Pattern(20000, off, 2);
      if (!h->Write(off, d.data(), d.size()).ok()) std::_Exit(7);
    }
    SnapshotInfo info;
    if (!store->CreateSnapshot(attr.id, "s", &info).ok()) std::_Exit(8);
    std::string later = Pattern(8000, 4000, 3);  // the live image moves on, unsynced
    if (!h->Write(4000, later.data(), later.size()).ok()) std::_Exit(9);
    std::printf("snapped\n");
    std::fflush(stdout);
    for (;;) ::pause();
  }
  if (!s.ok()) {
    std::fprintf(stderr, "child open: %s\n", s.ToString().c_str());
    std::_Exit(3);
  }
  NodeAttr attr;
  s = store->CreateImage(kRootNode, "crash.img", 0644, 0, 0, &attr);
  if (!s.ok()) std::_Exit(4);
  std::unique_ptr<ImageHandle> h;
  if (!store->OpenImage(attr.id, kLive, true, &h).ok()) std::_Exit(5);
  for (uint64_t r = 1;; ++r) {
    if (r % 5 == 0) {
      SnapshotInfo info;
      if (!store->CreateSnapshot(attr.id, "r" + std::to_string(r), &info).ok()) std::_Exit(6);
    }
    for (uint64_t piece : PiecesOfRound(r)) {
      std::string data = Pattern(4096, piece * 4096, r);
      if (!h->Write(piece * 4096, data.data(), data.size()).ok()) std::_Exit(7);
    }
    // A big write too, so a crash often lands inside a multi-block write.
    std::string big = Pattern(192 * KiB, MiB, r);
    if (!h->Write(MiB, big.data(), big.size()).ok()) std::_Exit(8);
    if (!h->Sync().ok()) std::_Exit(9);
    std::printf("synced %llu\n", static_cast<unsigned long long>(r));
    std::fflush(stdout);
  }
}

// Starts the child; returns its pid and a FILE* on its stdout.
pid_t SpawnChild(const std::string& store, const std::string& mode, FILE** out) {
  // Everything the child needs is built before fork: between fork and exec
  // only async-signal-safe calls are allowed (the parent has threads).
  std::vector<std::string> env_strings = {"SNAPDISK_CHILD_STORE=" + store,
                                          "SNAPDISK_CHILD_MODE=" + mode};
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "SNAPDISK_CHILD_", 15) != 0) env_strings.push_back(*e);
  }
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const char* argv[] = {"engine_tests", "--gtest_filter=DurabilityChild.DISABLED_Run",
                        "--gtest_also_run_disabled_tests", nullptr};
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execve("/proc/self/exe", const_cast<char* const*>(argv), envp.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  *out = ::fdopen(fds[0], "r");
  return pid;
}

TEST_F(DurabilityTest, SecondOpenFromAnotherProcessIsBusy) {
  FILE* out = nullptr;
  pid_t pid = SpawnChild(store_path(), "try-open", &out);
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  std::fclose(out);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the second process opened the store; 2: other error";
}

// A snapshot's mkdir has returned: a kill -9 right after must not change
// what it shows, though its records were sealed and never indexed.
TEST_F(DurabilityTest, SnapshotSurvivesProcessCrashBeforeItsRecordsAreIndexed) {
  const std::string path = dir_.path() + "/sealed";
  store_.reset();
  FILE* out = nullptr;
  pid_t pid = SpawnChild(path, "sealed", &out);
  ASSERT_GT(pid, 0);
  char line[64] = {};
  bool snapped = false;
  while (!snapped && std::fgets(line, sizeof line, out) != nullptr) snapped = std::string(line) == "snapped\n";
  ::kill(pid, SIGKILL);
  std::fclose(out);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(snapped) << "child exited with code " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);

  std::string want = Pattern(MiB, 0, 1);
  for (uint64_t off : {uint64_t{5000}, 300 * KiB, 2 * MiB}) {
    if (want.size() < off + 20000) want.resize(off + 20000, '\0');
    want.replace(off, 20000, Pattern(20000, off, 2));
  }
  std::unique_ptr<Store> store;
  ASSERT_OK(Store::Open(TestOptions(), path, &store));
  NodeAttr attr;
  ASSERT_OK(store->Lookup(kRootNode, "sealed.img", &attr));
  SnapshotInfo info;
  ASSERT_OK(store->GetSnapshot(attr.id, "s", &info));
  std::unique_ptr<ImageHandle> sh;
  ASSERT_OK(store->OpenImage(attr.id, info.id, false, &sh));
  std::string got;
  ASSERT_OK(ReadStr(sh.get(), 0, want.size(), &got));
  EXPECT_BYTES_EQ(got, want, 0);
  CheckReport report;
  ASSERT_OK(store->Check(&report, {}));
  EXPECT_TRUE(report.clean()) << (report.problems.empty() ? "" : report.problems[0]);
}

TEST_F(DurabilityTest, SyncedWritesSurviveProcessCrash) {
  std::mt19937_64 rng(::testing::UnitTest::GetInstance()->random_seed());
  for (int iteration = 0; iteration < 3; ++iteration) {
    SCOPED_TRACE("iteration " + std::to_string(iteration));
    const std::string path = dir_.path() + "/crash" + std::to_string(iteration);
    store_.reset();
    FILE* out = nullptr;
    pid_t pid = SpawnChild(path, "writer", &out);
    ASSERT_GT(pid, 0);
    // Let it get some rounds done, then kill it at a random instant.
    const uint64_t kill_after = 10 + rng() % 20;
    uint64_t synced = 0;
    char line[64];
    while (synced < kill_after && std::fgets(line, sizeof line, out) != nullptr) {
      unsigned long long r = 0;
      if (std::sscanf(line, "synced %llu", &r) == 1) synced = r;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    ::kill(pid, SIGKILL);
    while (std::fgets(line, sizeof line, out) != nullptr) {
      unsigned long long r = 0;
      if (std::sscanf(line, "synced %llu", &r) == 1) synced = r;
    }
    std::fclose(out);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with code "
                                      << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    ASSERT_GE(synced, kill_after) << "child died before syncing enough rounds";

    // Reopen after the crash: the lock is gone, and every synced round is there.
    std::unique_ptr<Store> store;
    ASSERT_OK(Store::Open(TestOptions(), path, &store));
    NodeAttr attr;
    ASSERT_OK(store->Lookup(kRootNode, "crash.img", &attr));
    std::unique_ptr<ImageHandle> h;
    ASSERT_OK(store->OpenImage(attr.id, kLive, false, &h));
    ASSERT_GE(h->Size(), MiB + 192 * KiB);

    // Each piece must hold the version of its last synced writer, or of a
    // later (unsynced but possibly durable) round: never older, never garbage.
    std::map<uint64_t, uint64_t> last_synced_writer;
    for (uint64_t r = 1; r <= synced; ++r)
      for (uint64_t p : PiecesOfRound(r)) last_synced_writer[p] = r;
    for (uint64_t p = 0; p < kPieces; ++p) {
      std::string got;
      ASSERT_OK(ReadStr(h.get(), p * 4096, 4096, &got));
      const uint64_t min_round = last_synced_writer.count(p) ? last_synced_writer[p] : 0;
      bool ok = false;
      if (min_round == 0 && got == Zeros(4096)) ok = true;
      for (uint64_t r = std::max<uint64_t>(min_round, 1); !ok && r <= synced + 3; ++r)
        ok = got == Pattern(4096, p * 4096, r);
      EXPECT_TRUE(ok) << "piece " << p << " after crash: neither round " << min_round
                      << " nor a later one (synced up to " << synced << ")";
    }
    // The big range: all pieces from one round >= synced (a torn multi-block
    // write may mix rounds synced..synced+1 between pieces, never garbage).
    for (uint64_t off = MiB; off < MiB + 192 * KiB; off += 4096) {
      std::string got;
      ASSERT_OK(ReadStr(h.get(), off, 4096, &got));
      bool ok = false;
      for (uint64_t r = synced; !ok && r <= synced + 3; ++r) ok = got == Pattern(4096, off, r);
      EXPECT_TRUE(ok) << "big-write piece at " << off << " (synced up to " << synced << ")";
    }
    // Snapshots of synced rounds exist and hold exactly the state before that round.
    std::vector<SnapshotInfo> snaps;
    ASSERT_OK(store->ListSnapshots(attr.id, &snaps));
    EXPECT_GE(snaps.size(), synced / 5);
    for (const SnapshotInfo& info : snaps) {
      const uint64_t r = std::stoull(info.name.substr(1));
      std::map<uint64_t, uint64_t> writer;  // state after rounds 1..r-1
      for (uint64_t q = 1; q < r; ++q)
        for (uint64_t p : PiecesOfRound(q)) writer[p] = q;
      std::unique_ptr<ImageHandle> sh;
      ASSERT_OK(store->OpenImage(attr.id, info.id, false, &sh));
      for (uint64_t p = 0; p < kPieces; ++p) {
        std::string got;
        ASSERT_OK(ReadStr(sh.get(), p * 4096, 4096, &got));
        const std::string want = writer.count(p) ? Pattern(4096, p * 4096, writer[p]) : Zeros(4096);
        EXPECT_TRUE(got == want) << "snapshot " << info.name << " piece " << p;
      }
    }
    CheckReport report;
    ASSERT_OK(store->Check(&report, {}));
    EXPECT_TRUE(report.clean()) << (report.problems.empty() ? "" : report.problems[0]);
    // And the recovered store is writable.
    std::unique_ptr<ImageHandle> w;
    ASSERT_OK(store->OpenImage(attr.id, kLive, true, &w));
    ASSERT_OK(WriteStr(w.get(), 0, "after crash"));
    ASSERT_OK(w->Sync());
  }
}

}  // namespace
}  // namespace snapdisk::test
