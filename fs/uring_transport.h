// fs/uring_transport.h — FUSE requests over io_uring, next to /dev/fuse.
//
// Why: on a virtual machine the classic transport costs two cross-CPU wakeups
// per request (the requester wakes a daemon thread on whichever vCPU it slept
// on, and the reply wakes the requester back). With FUSE over io_uring
// (Linux 6.14+) the kernel queues each request on the queue of the CPU the
// requester runs on; snapdisk serves each queue with threads pinned to that
// CPU, so a request and its reply stay on one CPU. Measured here: a 4 KiB
// write through FUSE took 26-28 µs spread over both vCPUs and 14 µs with the
// requester and the server on one (docs/transport.md).
//
// libfuse 3.14 knows nothing of this, so the transport sits under it: it
// installs a custom I/O (fuse_session_custom_io) that watches INIT, adds the
// io_uring flag to libfuse's INIT reply, and routes replies to requests that
// came over a ring into that ring's buffers. Requests are still decoded and
// dispatched by libfuse (fuse_session_process_buf), so every op runs the same
// code whichever way its request came. FORGET, INTERRUPT and INIT always
// arrive on /dev/fuse, so libfuse's /dev/fuse loop keeps running beside the
// rings.
//
// Threads start pinned to their queue's CPU; NoteRingWork (below) lets one
// float while it serves reads.
//
// Life cycle (one transport per process, like libfuse's signal handlers):
//   Prepare()  before fuse_session_mount: decides whether to offer io_uring
//              (mode, kernel parameter) and creates every ring, so that once
//              the flag is negotiated nothing can fail before registration
//              (the kernel holds requests until every CPU's queue has an
//              entry; a server that negotiated and never registered hangs).
//   Attach()   after fuse_session_mount: installs the custom I/O.
//   Stop()     after the session loop ended and the file system is
//              unmounted: wakes and joins the ring threads.
// Thread-safety: Prepare, Attach and Stop are called by the mounting thread;
// the rest runs on libfuse's and the transport's own threads.
#pragma once

#include <cstddef>
#include <memory>

#include "fs/fuse.h"
#include "snapdisk/status.h"

namespace snapdisk::fs {

struct UringConfig {
  // auto: use io_uring when the kernel has it, turning on the fuse module's
  //       enable_uring parameter if the daemon may (root); else /dev/fuse.
  // on:   as auto, but a mount that cannot use io_uring fails.
  // off:  /dev/fuse only, as libfuse does.
  enum class Mode { kAuto, kOn, kOff };
  Mode mode = Mode::kAuto;
  // Threads (each with one ring entry) per CPU queue. A request waits only
  // when all of its CPU's threads are busy, e.g. on a cold disk read.
  unsigned threads_per_queue = 4;
};

class UringTransport {
 public:
  UringTransport();
  ~UringTransport();  // Stop()s
  UringTransport(const UringTransport&) = delete;
  UringTransport& operator=(const UringTransport&) = delete;

  // OK when the transport will offer io_uring or is not to be used (mode
  // off, or auto without kernel support: logged); an error (mode on) says
  // why io_uring cannot be used.
  [[nodiscard]] Status Prepare(const UringConfig& config);
  // Installs the custom I/O on a mounted session (whether or not io_uring is
  // offered: it is a plain pass-through then).
  [[nodiscard]] Status Attach(fuse_session* se);
  void Stop();

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// On a ring thread serving a request: a buffer of at least `size` bytes in
// which to build the reply's payload (the ring entry's own payload buffer,
// so that a read's data is not copied again on its way out); nullptr
// anywhere else or if `size` does not fit. Valid until the reply is sent.
char* RingReplyBuffer(size_t size);

// What the op a ring thread is serving does, for where that thread runs.
// Measured (docs/transport.md, 4 GiB image): 4 KiB writes, CPU work in the
// page cache, ran at 52k IOPS from threads pinned to their queue's CPU and
// 43k from unpinned ones; cold 4 KiB reads, which wait for the disk, at 15.3k
// from threads free to run anywhere and 13.4k pinned (1 MiB reads: 1,602
// against 1,323 MiB/s). So a thread is pinned while it serves CPU work and
// floats while it serves work that may wait for the disk; it changes only
// when its work changes (one sched_setaffinity). No-op off ring threads.
// A read whose thread polls for the disk (mount option read_poll) does not
// sleep while it waits, and is pinned like CPU work: cold 4 KiB reads ran at
// 20.0-20.9k IOPS pinned against 16.6-17.2k floating (raw file 20.4-22.4k).
enum class RingWork { kCpu, kMayWaitForDisk, kPollsForDisk };
void NoteRingWork(RingWork work);

}  // namespace snapdisk::fs
