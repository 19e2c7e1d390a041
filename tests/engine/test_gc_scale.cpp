// Garbage collection at scale: one pass over an image with many snapshots
// (10,000 by default, as in bench/harness.py's "many" phase), and the
// background collector's debounce of bursts of deletions.
//
// The pass times are logged ("[gc-scale] ..."), not asserted: the machine is
// shared and noisy. SNAPDISK_GC_SCALE_SNAPSHOTS changes the snapshot count.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>

#include "test_util.h"

namespace snapdisk::test {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

uint64_t EnvOr(const char* name, uint64_t def) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : def;
}

using GcScaleTest = StoreTest;

TEST_F(GcScaleTest, PassOverImageWithManySnapshots) {
  const uint64_t n = EnvOr("SNAPDISK_GC_SCALE_SNAPSHOTS", 10000);
  const uint64_t size = 256 * MiB, bs = 64 * KiB;
  const uint64_t hot = size - bs;  // rewritten around snapshot k only
  const uint64_t k = n / 2;
  NodeId img = MakeImage("many.img", kRootNode, size);
  auto h = OpenLive(img);
  // A stored piece in every block: each pass judges every block.
  for (uint64_t off = 0; off < size; off += bs) {
    ASSERT_OK(WriteStr(h.get(), off, Pattern(4096, off, 1)));
  }
  Snap(img, "base");
  std::mt19937_64 rng(7);
  std::vector<SnapshotInfo> snaps;
  auto t0 = Clock::now();
  for (uint64_t i = 1; i <= n; ++i) {
    // As the harness does: one random 4 KiB write before each snapshot.
    const uint64_t off = rng() % ((size - bs) / 4096) * 4096;  // not the hot block
    ASSERT_OK(WriteStr(h.get(), off, Pattern(4096, off, 100 + i)));
    if (i == k || i == k + 1) {
      ASSERT_OK(WriteStr(h.get(), hot, Pattern(4096, hot, 10 + i)));
    }
    snaps.push_back(Snap(img, "s" + std::to_string(i)));
  }
  std::printf("[gc-scale] created %llu snapshots in %.0f ms\n", static_cast<unsigned long long>(n), MsSince(t0));
  ASSERT_OK(h->Sync());
  ASSERT_OK(store_->CollectGarbage());

  // Deleting s_k frees exactly the hot piece written just before it (the
  // random writes around it hit other pieces with this seed).
  const uint64_t before = StoredBytes();
  ASSERT_OK(store_->DeleteSnapshot(img, snaps[k - 1].name));
  t0 = Clock::now();
  ASSERT_OK(store_->CollectGarbage());
  std::vector<double> passes{MsSince(t0)};
  EXPECT_EQ(before - StoredBytes(), 4096u) << "the deleted snapshot's own piece";
  // A few more passes (deleting snapshots far from the hot block).
  for (uint64_t j = 1; j <= 4; ++j) {
    ASSERT_OK(store_->DeleteSnapshot(img, snaps[j * n / 5 - 1].name));
    t0 = Clock::now();
    ASSERT_OK(store_->CollectGarbage());
    passes.push_back(MsSince(t0));
  }
  std::sort(passes.begin(), passes.end());
  std::printf("[gc-scale] one GC pass, %llu MiB image, %llu snapshots: median %.1f ms (min %.1f, max %.1f)\n",
              static_cast<unsigned long long>(size / MiB), static_cast<unsigned long long>(n), passes[passes.size() / 2],
              passes.front(), passes.back());

  t0 = Clock::now();
  SpaceUsage live = Usage(img);
  const double live_ms = MsSince(t0);
  t0 = Clock::now();
  SpaceUsage old = Usage(img, snaps[0].id);
  const double snap_ms = MsSince(t0);
  std::printf("[gc-scale] GetSpaceUsage: live %.1f ms, a snapshot %.1f ms\n", live_ms, snap_ms);
  EXPECT_GE(live.referenced, size / bs * 4096);
  EXPECT_LE(live.unique, live.referenced);
  EXPECT_LE(old.unique, old.referenced);

  // The views around the deleted snapshot still read right.
  auto prev = OpenSnap(img, snaps[k - 2].id);
  auto next = OpenSnap(img, snaps[k].id);
  std::string got;
  ASSERT_OK(ReadStr(prev.get(), hot, 4096, &got));
  EXPECT_TRUE(BytesEq(got, Pattern(4096, hot, 1), hot));
  ASSERT_OK(ReadStr(next.get(), hot, 4096, &got));
  EXPECT_TRUE(BytesEq(got, Pattern(4096, hot, 10 + k + 1), hot));
  ASSERT_OK(ReadStr(h.get(), hot, 4096, &got));
  EXPECT_TRUE(BytesEq(got, Pattern(4096, hot, 10 + k + 1), hot));
}

// The background collector waits for a burst of deletions to end, then
// reclaims all of it; closing does not wait for that delay.
TEST_F(GcScaleTest, BackgroundCollectorAfterBurstOfDeletes) {
  Options o = TestOptions();
  o.background_gc = true;
  OpenStore(o);
  NodeId img = MakeImage("a.img", kRootNode, 4 * MiB);
  auto h = OpenLive(img);
  ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 1)));
  std::vector<SnapshotInfo> snaps;
  for (int i = 0; i < 20; ++i) {
    snaps.push_back(Snap(img, "s" + std::to_string(i)));
    ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 2 + static_cast<uint64_t>(i))));
  }
  ASSERT_OK(h->Sync());
  EXPECT_EQ(StoredBytes(), 21 * MiB);
  for (const SnapshotInfo& s : snaps) {
    ASSERT_OK(store_->DeleteSnapshot(img, s.name));
  }
  // The live MiB, give or take the data file's allocation after punching.
  const uint64_t kLeft = MiB + 64 * KiB;
  auto t0 = Clock::now();
  while (StoredBytes() > kLeft && MsSince(t0) < 30000) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_LE(StoredBytes(), kLeft) << "the background collector reclaims the deleted snapshots";
  std::printf("[gc-scale] background reclaim after 20 deletes: %.0f ms\n", MsSince(t0));
  std::string got;
  ASSERT_OK(ReadStr(h.get(), 0, MiB, &got));
  EXPECT_TRUE(BytesEq(got, Pattern(MiB, 0, 21), 0));

  // A deletion just before closing: the close does not sit out the delay,
  // and the reopened store collects it at once.
  snaps = {Snap(img, "last")};
  ASSERT_OK(WriteStr(h.get(), 0, Pattern(MiB, 0, 50)));
  ASSERT_OK(h->Sync());
  h.reset();
  ASSERT_OK(store_->DeleteSnapshot(img, "last"));
  t0 = Clock::now();
  store_.reset();
  const double close_ms = MsSince(t0);
  std::printf("[gc-scale] close right after a delete: %.0f ms\n", close_ms);
  EXPECT_LT(close_ms, 1500.0) << "closing waited for the collector's delay";
  OpenStore(o);
  t0 = Clock::now();
  while (StoredBytes() > kLeft && MsSince(t0) < 30000) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_LE(StoredBytes(), kLeft);
  EXPECT_TRUE(BytesEq(ReadAll(img).substr(0, MiB), Pattern(MiB, 0, 50), 0));
}

}  // namespace
}  // namespace snapdisk::test
