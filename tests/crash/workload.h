// tests/crash/workload.h — the three modes of snapdisk_crash_workload.
#pragma once

#include <cstdint>
#include <string>

namespace snapdisk::crash {

struct WorkloadConfig {
  std::string mnt;       // the mount
  std::string journal;   // on the host, outside the mount
  std::string store;     // check mode only
  uint64_t seed = 0;
  uint64_t cycle = 1;    // must grow from run to run on one store (it orders sequence numbers)
  unsigned threads = 3;  // writer threads
  unsigned images = 3;
  uint64_t image_size = 8ull << 20;
  double max_seconds = 60;  // a run stops by itself after this long if not crashed
};

// Writes records, snapshots and clones until the mount dies (or max_seconds),
// journaling what was acknowledged. Returns 0, or 3 if an operation failed
// while the mount was still alive (a bug, not the crash).
int RunWorkload(const WorkloadConfig& config);

// Checks the mount against the journal. Returns 0 if everything holds, 1 if not.
int VerifyMount(const WorkloadConfig& config);

// Opens the (unmounted) store with the engine and runs Store::Check.
// Returns 0 if clean, 1 if not.
int CheckStore(const WorkloadConfig& config);

}  // namespace snapdisk::crash
