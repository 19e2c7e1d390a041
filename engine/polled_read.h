// Reads that poll for their completion instead of sleeping, for small reads
// of data the page cache does not hold (DataFile::Read, mount option
// read_poll).
//
// Why: on a virtual machine whose idle vCPUs halt at once, a thread that
// sleeps through a disk read pays for the wakeup of a halted vCPU when the
// read completes, as much as 10-13 µs of a 45 µs read here. A small cold read
// issued with O_DIRECT through io_uring and polled from user space keeps the
// vCPU running, and the completion is seen as soon as the disk's interrupt
// has delivered it, without a second interrupt to the polling vCPU
// (docs/transport.md, "Small cold reads poll for the disk").
//
// Thread-safety: every function may be called from any thread. Each thread
// that polls gets an io_uring of its own, created on first use and closed
// when the thread ends.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace snapdisk::engine {

// How many of the pages of [pos, pos+len) of `fd` are in the page cache
// (cachestat(2), Linux 6.5+), or -1 when the kernel cannot tell.
int64_t CachedPages(int fd, uint64_t pos, uint64_t len);

// pread(2)'s contract (bytes read, or -1 and errno), but the calling thread
// polls for the completion for up to `poll_ns` before it sleeps. Falls back
// to pread where the thread cannot have an io_uring. *waited_ns receives the
// time from submission to completion.
ssize_t PolledPread(int fd, void* buf, size_t len, off_t pos, uint64_t poll_ns, uint64_t* waited_ns);

}  // namespace snapdisk::engine
