// tests/exerciser/runs.h — the two exerciser modes.
#pragma once

#include "util.h"

namespace snapdisk::exerciser {

// Random operations on several images from one thread, checked against an
// in-memory model (single.cpp). Returns only on success.
void RunSingle(const Config& config, OpLog& log, Counters& counters);

// config.threads threads on disjoint ranges of one image, with snapshots taken
// while they write (threaded.cpp). Returns only on success.
void RunThreaded(const Config& config, OpLog& log, Counters& counters);

}  // namespace snapdisk::exerciser
