// snapdisk/options.h — knobs for opening a store.
//
// Options is a plain value; it is read once by Store::Open and not kept.
#pragma once

#include <cstddef>
#include <cstdint>

namespace snapdisk {

struct Options {
  // Create the store directory and an empty store if the path holds none.
  // Default: true. Set false to make a missing store an error (NotFound).
  bool create_if_missing = true;

  // Size of one block, the unit of the index and of space allocation, in
  // bytes: a power of two from 16 KiB to 256 KiB. Fixed when the store is
  // created; ignored when opening an existing store. Default: 64 KiB.
  // Larger blocks mean fewer index entries (less RAM and faster clones of
  // fully written images); validity is tracked per 4 KiB inside a block, so
  // a snapshot still holds only the 4 KiB pieces changed after it.
  uint32_t block_size = 64 * 1024;

  // RocksDB block cache for the index, in bytes. Default: 32 MiB. The index
  // of a fully written 32 GiB image is about 40 MiB; a smaller cache costs
  // reads of index blocks from the page cache, not correctness.
  std::size_t index_cache_bytes = 32u << 20;

  // RocksDB memtable size, in bytes. Default: 16 MiB. Bounds the memory held
  // by index updates that are not yet flushed to sorted files.
  std::size_t index_write_buffer_bytes = 16u << 20;

  // Largest image size accepted, in bytes. Default: 16 TiB. Writes or
  // truncates beyond it fail with TooLarge (EFBIG).
  uint64_t max_image_size = uint64_t{16} << 40;

  // Run background reclamation (garbage collection) of blocks that no
  // snapshot, clone or live image references any more. Default: true.
  // Tests switch it off to call Store::CollectGarbage() synchronously.
  bool background_gc = true;

  // Index pending block records in the background (a flusher thread, in
  // groups, and every few seconds). Default: true. When false they are
  // indexed only by the calls that need it (sync, snapshot scans, close) and
  // by a writer once 16,384 are pending: tests use it to read records that
  // are still only in memory.
  bool background_flush = true;

  // Verify the checksum of every 4 KiB piece on read. Default: true.
  // Turning it off trades silent-corruption detection for a little CPU.
  bool verify_checksums = true;

  // Small reads (up to 16 KiB of a block) of data that the page cache does
  // not hold bypass it (O_DIRECT), and the reading thread polls for the
  // completion for up to this many microseconds before it sleeps. Default:
  // 200. 0 turns it off: every read is buffered and sleeps. On a virtual
  // machine whose idle vCPUs halt, a read that sleeps pays for waking its
  // vCPU: on the raw file here, 37 µs polled with O_DIRECT against 47 µs
  // for a sleeping buffered pread (docs/transport.md). A device whose reads
  // take longer than this on average is not polled (one read in 64 still
  // tries). Needs cachestat(2) (Linux 6.5+) and a file system with O_DIRECT;
  // without them, buffered.
  uint32_t read_poll_us = 200;

  // Write-behind of the data file, in bytes. Whole blocks written in bulk
  // (an install, a restore, a fill) are dropped from the page cache once
  // this many bytes of whole blocks have been written after them (their
  // writeback started then, and they are dropped again as far behind again,
  // once written back); 4 KiB pieces are never dropped. Default: 16 MiB. 0
  // keeps everything cached until the kernel reclaims it. Without it a
  // 32 GiB image filled on a 24 GiB machine left 23 GiB cached, and the
  // writes after it had to make room first; keeping 1 GiB did worse than
  // 16 MiB there (bench/README.md, "Since 12:45 on 2026-12-05").
  uint64_t write_behind_bytes = uint64_t{16} << 20;
};

}  // namespace snapdisk
