// Concurrency: writers on different blocks, snapshots taken while they run,
// readers, and the collector. Snapshots must be point-in-time: each writer's
// history appears in a snapshot as a prefix of its (ordered) writes.
// Worth running under SNAPDISK_SANITIZE=thread.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>

#include "test_util.h"

namespace snapdisk::test {
namespace {

using ConcurrencyTest = StoreTest;

constexpr int kWriters = 4;
constexpr uint64_t kRegion = MiB;                 // each writer owns one MiB
constexpr uint64_t kPiecesPerRegion = kRegion / 4096;

// Writer t's step i writes 4 KiB piece (i * 37 % pieces) of its region with
// pattern seed Seed(t, i): a snapshot can be checked against any prefix.
uint64_t Seed(int t, uint64_t i) { return 1000000 * (t + 1) + i + 1; }
uint64_t PieceOf(uint64_t i) { return (i * 37) % kPiecesPerRegion; }

// Expected region content after the first n steps of writer t.
std::string RegionAfter(int t, uint64_t n) {
  std::vector<int64_t> last(kPiecesPerRegion, -1);
  for (uint64_t i = 0; i < n; ++i) last[PieceOf(i)] = static_cast<int64_t>(i);
  std::string s;
  s.reserve(kRegion);
  for (uint64_t p = 0; p < kPiecesPerRegion; ++p) {
    const uint64_t off = t * kRegion + p * 4096;
    s += last[p] < 0 ? Zeros(4096) : Pattern(4096, off, Seed(t, last[p]));
  }
  return s;
}

// Which step (< max_steps) of writer t wrote this piece: -1 for zeros, -2 for
// bytes no step wrote. Steps writing piece p are i = p * 37^-1 (mod 256) + 256k;
// the newest candidates are tried first since snapshots are recent.
int64_t StepOf(int t, uint64_t piece, const std::string& data, uint64_t max_steps) {
  if (data == Zeros(4096)) return -1;
  uint64_t inv = 0;
  while ((inv * 37) % kPiecesPerRegion != 1) ++inv;
  const uint64_t first = (piece * inv) % kPiecesPerRegion;
  if (first >= max_steps) return -2;
  for (uint64_t i = first + (max_steps - 1 - first) / kPiecesPerRegion * kPiecesPerRegion;;
       i -= kPiecesPerRegion) {
    if (data == Pattern(4096, t * kRegion + piece * 4096, Seed(t, i))) return static_cast<int64_t>(i);
    if (i < kPiecesPerRegion) break;
  }
  return -2;
}

TEST_F(ConcurrencyTest, SnapshotsDuringParallelWritesArePointInTime) {
  NodeId img = MakeImage("a", kRootNode, kWriters * kRegion);
  auto h = OpenLive(img);
  ASSERT_NE(h, nullptr);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> steps_done[kWriters];
  std::atomic<int> errors{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t) {
    steps_done[t] = 0;
    writers.emplace_back([&, t] {
      for (uint64_t i = 0; !stop.load(); ++i) {
        const uint64_t off = t * kRegion + PieceOf(i) * 4096;
        std::string data = Pattern(4096, off, Seed(t, i));
        if (!h->Write(off, data.data(), data.size()).ok()) {
          errors.fetch_add(1);
          return;
        }
        steps_done[t].store(i + 1);
      }
    });
  }
  std::thread reader([&] {
    std::string buf;
    for (uint64_t i = 0; !stop.load(); ++i) {
      if (!ReadStr(h.get(), (i * 12345) % (kWriters * kRegion), 64 * KiB, &buf).ok())
        errors.fetch_add(1);
    }
  });
  struct Taken {
    SnapshotInfo info;
    uint64_t before[kWriters], after[kWriters];
  };
  std::vector<Taken> taken;
  std::chrono::steady_clock::duration slowest_snapshot{};
  const auto started = std::chrono::steady_clock::now();
  for (int k = 0; k < 6; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(15));
    Taken tk;
    for (int t = 0; t < kWriters; ++t) tk.before[t] = steps_done[t].load();
    const auto t0 = std::chrono::steady_clock::now();
    Status s = store_->CreateSnapshot(img, "s" + std::to_string(k), &tk.info);
    slowest_snapshot = std::max(slowest_snapshot, std::chrono::steady_clock::now() - t0);
    for (int t = 0; t < kWriters; ++t) tk.after[t] = steps_done[t].load();
    EXPECT_TRUE(s.ok()) << s.ToString();
    if (s.ok()) taken.push_back(tk);
    if (k % 3 == 2) {
      EXPECT_OK(store_->CollectGarbage());
    }
  }
  stop = true;
  for (auto& w : writers) w.join();
  reader.join();
  ASSERT_EQ(errors.load(), 0);
  const auto verify_started = std::chrono::steady_clock::now();
  std::printf("[ info     ] %d writers did %llu writes in %.0f ms; slowest snapshot %.1f ms\n",
              kWriters,
              static_cast<unsigned long long>(steps_done[0] + steps_done[1] + steps_done[2] + steps_done[3]),
              std::chrono::duration<double, std::milli>(verify_started - started).count(),
              std::chrono::duration<double, std::milli>(slowest_snapshot).count());

  for (const Taken& tk : taken) {
    SCOPED_TRACE(tk.info.name);
    const std::string all = ReadAll(img, tk.info.id);
    ASSERT_EQ(all.size(), kWriters * kRegion);
    for (int t = 0; t < kWriters; ++t) {
      // The writes acknowledged before the snapshot began must all be in it,
      // none that began after it returned, and what is in it is a prefix.
      const std::string region = all.substr(t * kRegion, kRegion);
      int64_t newest = -1;
      for (uint64_t p = 0; p < kPiecesPerRegion; ++p) {
        int64_t step = StepOf(t, p, region.substr(p * 4096, 4096), tk.after[t] + 1);
        ASSERT_NE(step, -2) << "writer " << t << " piece " << p << " holds bytes no write wrote";
        newest = std::max(newest, step);
      }
      const uint64_t n = static_cast<uint64_t>(newest + 1);
      EXPECT_GE(n, tk.before[t]) << "writer " << t << ": acknowledged writes missing";
      EXPECT_LE(n, tk.after[t] + 1) << "writer " << t << ": writes from after the snapshot";
      EXPECT_BYTES_EQ(region, RegionAfter(t, n), t * kRegion);
    }
  }
  // And the live image holds every writer's full history.
  const std::string live = ReadAll(img);
  for (int t = 0; t < kWriters; ++t)
    EXPECT_BYTES_EQ(live.substr(t * kRegion, kRegion), RegionAfter(t, steps_done[t].load()),
                    t * kRegion);
}

TEST_F(ConcurrencyTest, ParallelImagesWithSnapshotChurnAndCollector) {
  constexpr int kImages = 3;
  NodeId imgs[kImages];
  for (int i = 0; i < kImages; ++i) imgs[i] = MakeImage("img" + std::to_string(i));
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::mutex first_error_mu;
  std::string first_error;
  auto fail = [&](const Status& st) {
    if (st.ok()) return;
    errors.fetch_add(1);
    std::lock_guard l(first_error_mu);
    if (first_error.empty()) first_error = st.ToString();
  };
  std::vector<std::thread> threads;
  std::string finals[kImages];
  for (int i = 0; i < kImages; ++i) {
    threads.emplace_back([&, i] {
      std::unique_ptr<ImageHandle> h;
      if (!store_->OpenImage(imgs[i], kLive, true, &h).ok()) {
        errors.fetch_add(1);
        return;
      }
      std::string model(MiB, '\0');
      for (uint64_t k = 0; k < 300; ++k) {
        const uint64_t off = (k * 7919 * 4096 + k * 333) % (MiB - 20000);
        const uint64_t len = 1 + (k * 131) % 20000;
        std::string data = Pattern(len, off, i * 1000 + k);
        fail(h->Write(off, data.data(), len));
        model.replace(off, len, data);
      }
      finals[i] = model;
    });
  }
  threads.emplace_back([&] {
    for (int k = 0; !stop.load(); ++k) {
      const NodeId img = imgs[k % kImages];
      SnapshotInfo info;
      const std::string name = "t" + std::to_string(k);
      fail(store_->CreateSnapshot(img, name, &info));
      if (k % 2 == 1) fail(store_->DeleteSnapshot(img, name));
      if (k % 5 == 4) fail(store_->CollectGarbage());
    }
  });
  for (int i = 0; i < kImages; ++i) threads[i].join();
  stop = true;
  threads.back().join();
  ASSERT_EQ(errors.load(), 0) << "first error: " << first_error;
  ASSERT_OK(store_->CollectGarbage());
  for (int i = 0; i < kImages; ++i) {
    std::string all = ReadAll(imgs[i]);
    all.resize(MiB, '\0');
    EXPECT_BYTES_EQ(all, finals[i], 0);
  }
  CheckReport report;
  ASSERT_OK(store_->Check(&report, {}));
  EXPECT_TRUE(report.clean()) << (report.problems.empty() ? "" : report.problems[0]);
}

// PathOf is called by the FUSE adapter (lookups under .snapshots, the
// control socket) while other threads create, rename and snapshot images:
// it must read the namespace under the engine's lock (a TSan run caught an
// unlocked walk racing a group snapshot).
TEST_F(ConcurrencyTest, PathOfRacesNamespaceChanges) {
  const NodeId dir = MakeDir("team-a");
  const NodeId img = MakeImage("db.img", dir);
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::thread reader([&] {
    while (!stop.load()) {
      const std::string path = store_->PathOf(img);
      if (path != "team-a/db.img" && path != "team-a/db2.img") errors.fetch_add(1);
    }
  });
  for (int k = 0; k < 100; ++k) {
    NodeAttr attr;
    SnapshotInfo info;
    EXPECT_OK(store_->CreateImage(kRootNode, "new" + std::to_string(k), 0644, 0, 0, &attr));
    EXPECT_OK(store_->CreateSnapshot(img, "s" + std::to_string(k), &info));
    EXPECT_OK(store_->Rename(dir, k % 2 ? "db2.img" : "db.img", dir, k % 2 ? "db.img" : "db2.img",
                             false));
  }
  stop = true;
  reader.join();
  EXPECT_EQ(errors.load(), 0);
}

}  // namespace
}  // namespace snapdisk::test
