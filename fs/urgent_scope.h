#pragma once
// Runs the calling thread under SCHED_FIFO (priority 1) for one short piece
// of work that others wait for: a snapshot holds every writer of its images
// while it seals their live generation, and under a write load the thread
// taking it used to be preempted half-way by the daemon's flusher or
// RocksDB's threads. Not for whole classes of requests: ring threads kept at
// SCHED_FIFO halved the 4 KiB write rate (docs/transport.md, "Snapshots").
//
// Needs CAP_SYS_NICE (root) or an RLIMIT_RTPRIO of at least 1; without it
// the work runs at normal priority (logged once, at debug level).
// Thread-safety: per thread; construct and destroy on the same thread.
#include <sched.h>

namespace snapdisk::fs {

class UrgentScope {
 public:
  explicit UrgentScope(bool urgent);
  ~UrgentScope();
  UrgentScope(const UrgentScope&) = delete;
  UrgentScope& operator=(const UrgentScope&) = delete;

 private:
  int policy_ = SCHED_OTHER;  // what to restore
  sched_param param_{};
  bool raised_ = false;
};

}  // namespace snapdisk::fs
