// The crash workload's `check` mode: the engine's own consistency check
// (Store::Check) on an unmounted store, used by crash_loop.sh when the CLI has
// no `snapdisk fsck` yet.
#include <cstdio>
#include <memory>

#include "snapdisk/store.h"
#include "workload.h"

namespace snapdisk::crash {

int CheckStore(const WorkloadConfig& config) {
  Options options;
  options.create_if_missing = false;
  options.background_gc = false;  // look at the store as the crash left it
  std::unique_ptr<Store> store;
  Status s = Store::Open(options, config.store, &store);
  if (!s.ok()) {
    std::printf("check: cannot open store %s: %s\n", config.store.c_str(), s.ToString().c_str());
    return 1;
  }
  CheckReport report;
  s = store->Check(&report, {});
  if (!s.ok()) {
    std::printf("check: Store::Check failed: %s\n", s.ToString().c_str());
    return 1;
  }
  for (size_t i = 0; i < report.problems.size() && i < 30; ++i) {
    std::printf("check: PROBLEM %s\n", report.problems[i].c_str());
  }
  std::printf("check: %llu block versions, %llu bytes verified, %llu checksum errors, %llu index "
              "errors: %s\n",
              static_cast<unsigned long long>(report.versions_checked),
              static_cast<unsigned long long>(report.bytes_verified),
              static_cast<unsigned long long>(report.checksum_errors),
              static_cast<unsigned long long>(report.index_errors),
              report.clean() ? "clean" : "NOT CLEAN");
  std::fflush(stdout);
  return report.clean() ? 0 : 1;
}

}  // namespace snapdisk::crash
