// SlotAllocator (engine/data_file.h): never hands out a slot in use, and
// always the lowest free one, so that an image written after a delete gets
// ascending slots (sequential in the data file).
#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "data_file.h"

namespace snapdisk::test {
namespace {

using engine::SlotAllocator;

TEST(SlotAllocatorTest, FreshAllocatorCountsUp) {
  SlotAllocator a;
  a.Finish();
  for (uint64_t i = 0; i < 200; ++i) EXPECT_EQ(a.Allocate(), i);
  EXPECT_EQ(a.high_water(), 200u);
  EXPECT_EQ(a.used(), 200u);
}

TEST(SlotAllocatorTest, FreedSlotsComeBackLowestFirst) {
  SlotAllocator a;
  a.Finish();
  for (int i = 0; i < 10000; ++i) a.Allocate();
  // Free a run in ascending order, as GC frees a deleted image's blocks,
  // and a second run below it afterwards.
  for (uint64_t s = 5000; s < 6000; ++s) a.Free(s);
  for (uint64_t s = 100; s < 164; ++s) a.Free(s);
  EXPECT_EQ(a.used(), 10000u - 1064u);
  for (uint64_t s = 100; s < 164; ++s) EXPECT_EQ(a.Allocate(), s);
  for (uint64_t s = 5000; s < 6000; ++s) EXPECT_EQ(a.Allocate(), s);
  EXPECT_EQ(a.Allocate(), 10000u);  // no free slot left below the high water
  EXPECT_EQ(a.high_water(), 10001u);
}

TEST(SlotAllocatorTest, LoadedHolesAreReusedInOrder) {
  SlotAllocator a;
  for (uint64_t s : {0, 1, 3, 7, 8, 200}) a.MarkUsed(s);
  a.Finish();
  EXPECT_EQ(a.used(), 6u);
  EXPECT_EQ(a.high_water(), 201u);
  std::vector<uint64_t> got;
  for (int i = 0; i < 6; ++i) got.push_back(a.Allocate());
  EXPECT_EQ(got, (std::vector<uint64_t>{2, 4, 5, 6, 9, 10}));
}

TEST(SlotAllocatorTest, RandomFreesAndAllocationsMatchASortedModel) {
  SlotAllocator a;
  a.Finish();
  std::set<uint64_t> in_use, free_model;
  uint64_t high = 0;
  std::mt19937_64 rng(42);
  for (int op = 0; op < 200000; ++op) {
    if (in_use.empty() || rng() % 3 != 0) {
      uint64_t s = a.Allocate();
      uint64_t want = free_model.empty() ? high++ : *free_model.begin();
      ASSERT_EQ(s, want) << "op " << op;
      free_model.erase(want);
      ASSERT_TRUE(in_use.insert(s).second) << "slot " << s << " handed out twice";
    } else {
      auto it = in_use.begin();
      std::advance(it, static_cast<long>(rng() % std::min<size_t>(in_use.size(), 64)));
      if (rng() % 2) it = std::prev(in_use.end());
      a.Free(*it);
      free_model.insert(*it);
      in_use.erase(it);
    }
  }
  EXPECT_EQ(a.used(), in_use.size());
  EXPECT_EQ(a.high_water(), high);
}

}  // namespace
}  // namespace snapdisk::test
