// fs/mount.h — mounting a store: the life of a snapdisk daemon.
#pragma once

#include <string>
#include <vector>

namespace snapdisk::fs {

struct MountOptions {
  std::string store;        // store directory; created if absent
  std::string mountpoint;   // an existing directory
  bool foreground = false;  // stay attached to the terminal, log to stderr
  bool debug = false;       // libfuse request tracing and debug log lines (implies foreground)
  unsigned threads = 0;     // most FUSE worker threads; 0: libfuse's default
  // -o values, each possibly comma-separated. Passed to libfuse except:
  //   block_size=N                 snapdisk: block size of a newly created store
  //   cache=direct|page            snapdisk: live images with direct I/O (default)
  //                                or through the page cache (allows shared mmap)
  //   uring=auto|on|off            snapdisk: requests over io_uring where the kernel
  //                                has it (default auto; fs/uring_transport.h)
  //   uring_threads=N              snapdisk: threads per CPU queue (1-64, default 4)
  //   read_poll=USEC               snapdisk: small uncached reads poll up to USEC
  //                                (0-10000, default 200; 0: off; Options::read_poll_us)
  //   defaults, auto, noauto, user, nouser, users, owner, group, nofail,
  //   _netdev, x-*, comment=*      fstab/mount(8) bookkeeping: dropped
  //   relatime, nodiratime, strictatime, lazytime, iversion, silent, ...
  //                                atime flavours libfuse 3.14 rejects: dropped
  std::vector<std::string> options;
};

// Opens the store, mounts it and serves requests until unmounted or
// signalled (SIGINT, SIGTERM, SIGHUP). Returns the process exit code: 0 after
// a clean unmount, 1 if the store cannot be opened or the mount fails.
//
// Unless foreground, the process forks first and the parent returns only once
// the child has opened the store and mounted (0) or failed (1, with the error
// already printed to stderr): a failed open is a failed mount. The store is
// opened in the child, never before fork(), because an open store owns
// threads and a process-private lock that a fork would not carry over.
int RunMount(const MountOptions& options);

}  // namespace snapdisk::fs
