// Polled reads through a per-thread io_uring (see polled_read.h).
#include "polled_read.h"

#include "snapdisk/image.h"

#include <liburing.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace snapdisk::engine {

namespace {

// cachestat(2): the same number on every architecture (Linux 6.5). Debian
// 12's headers predate it, so its structures are declared here.
constexpr long kSysCachestat = 451;
struct CachestatRange {
  uint64_t off;
  uint64_t len;
};
struct Cachestat {
  uint64_t nr_cache;
  uint64_t nr_dirty;
  uint64_t nr_writeback;
  uint64_t nr_evicted;
  uint64_t nr_recently_evicted;
};
std::atomic<bool> cachestat_missing{false};
thread_local uint64_t t_polled_reads = 0;

// The spin-wait hint: lets the other hyperthread run and saves power.
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

uint64_t NowNs() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<uint64_t>(t.tv_sec) * 1000000000u + static_cast<uint64_t>(t.tv_nsec);
}

// One small ring per thread, created with IORING_SETUP_COOP_TASKRUN and
// TASKRUN_FLAG (Linux 5.19+). A read's completion is handed to the thread
// that submitted it as task work. Without COOP_TASKRUN the kernel interrupts
// that thread with an inter-processor interrupt to run it; on this virtual
// machine that costs a VM exit on both vCPUs, and polling from vCPU 0 (the
// disk interrupts vCPU 1) took 46-50 µs a read against 38-41 µs with the
// flag (docs/transport.md). With it, the kernel only sets IORING_SQ_TASKRUN
// in the ring's flags, which the poll loop watches and answers with one
// io_uring_enter(2) that runs the task work. A kernel without the flags gets
// a plain ring, and the interrupt does the work as before.
struct ThreadRing {
  io_uring ring{};
  bool ok = false;
  bool taskrun_flag = false;
  ThreadRing() {
    if (io_uring_queue_init(2, &ring, IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG) == 0) {
      ok = taskrun_flag = true;
    } else {
      ok = io_uring_queue_init(2, &ring, 0) == 0;
    }
  }
  ~ThreadRing() {
    if (ok) io_uring_queue_exit(&ring);
  }
  ThreadRing(const ThreadRing&) = delete;
  ThreadRing& operator=(const ThreadRing&) = delete;

  // True when the kernel has a completion waiting to be run as task work.
  bool TaskWorkPending() const {
    return taskrun_flag && (IO_URING_READ_ONCE(*ring.sq.kflags) & IORING_SQ_TASKRUN) != 0;
  }
};

}  // namespace

int64_t CachedPages(int fd, uint64_t pos, uint64_t len) {
  if (cachestat_missing.load(std::memory_order_relaxed)) return -1;
  CachestatRange range{pos, len};
  Cachestat cs{};
  if (syscall(kSysCachestat, fd, &range, &cs, 0) != 0) {
    if (errno == ENOSYS) cachestat_missing.store(true, std::memory_order_relaxed);
    return -1;
  }
  return static_cast<int64_t>(cs.nr_cache);
}

ssize_t PolledPread(int fd, void* buf, size_t len, off_t pos, uint64_t poll_ns, uint64_t* waited_ns) {
  thread_local ThreadRing t;
  const uint64_t start = NowNs();
  if (!t.ok) {
    ssize_t n = pread(fd, buf, len, pos);
    *waited_ns = NowNs() - start;
    return n;
  }
  io_uring_sqe* sqe = io_uring_get_sqe(&t.ring);  // never null: one read in flight at a time
  io_uring_prep_read(sqe, fd, buf, static_cast<unsigned>(len), static_cast<uint64_t>(pos));
  int rc = io_uring_submit(&t.ring);
  if (rc != 1) {
    errno = rc < 0 ? -rc : EIO;
    return -1;
  }
  io_uring_cqe* cqe = nullptr;
  while (io_uring_peek_cqe(&t.ring, &cqe) != 0) {
    if (NowNs() - start >= poll_ns) {
      // Slower than the poll allows: sleep like any other read.
      while ((rc = io_uring_wait_cqe(&t.ring, &cqe)) == -EINTR || rc == -EAGAIN || rc == -EBUSY) {
      }
      if (rc != 0) {
        // Cannot happen with one read in flight; should it, the ring is
        // never used again (its read may still be under way).
        t.ok = false;
        errno = -rc;
        return -1;
      }
      break;
    }
    if (t.TaskWorkPending()) {
      io_uring_get_events(&t.ring);  // posts the completion; peeked next
      continue;
    }
    // A pause, not sched_yield(): yielding on every check cost about 1.5k
    // of 19k cold 4 KiB reads a second here (docs/transport.md). The poll
    // is bounded, and the scheduler still preempts it for a waking task.
    CpuRelax();
  }
  *waited_ns = NowNs() - start;
  const int res = cqe->res;
  io_uring_cqe_seen(&t.ring, cqe);
  if (res < 0) {
    errno = -res;
    return -1;
  }
  ++t_polled_reads;
  return res;
}

}  // namespace snapdisk::engine

namespace snapdisk {
uint64_t PolledReadsOnThisThread() { return engine::t_polled_reads; }
}  // namespace snapdisk
