#include "fs/urgent_scope.h"

#include <pthread.h>

#include <atomic>
#include <cstring>

#include "fs/log.h"

namespace snapdisk::fs {

UrgentScope::UrgentScope(bool urgent) {
  if (!urgent || pthread_getschedparam(pthread_self(), &policy_, &param_) != 0) return;
  if (policy_ == SCHED_FIFO || policy_ == SCHED_RR) return;  // real-time already
  sched_param fifo{};
  fifo.sched_priority = 1;
  const int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &fifo);
  raised_ = rc == 0;
  static std::atomic<bool> told{false};
  if (!raised_ && !told.exchange(true)) {
    Log(LogLevel::kDebug,
        "snapdisk: snapshots run at normal priority: SCHED_FIFO refused ({}); run the daemon as "
        "root or give it an RLIMIT_RTPRIO of 1 for steadier snapshot latency under load",
        std::strerror(rc));
  }
}

UrgentScope::~UrgentScope() {
  if (raised_) pthread_setschedparam(pthread_self(), policy_, &param_);
}

}  // namespace snapdisk::fs
