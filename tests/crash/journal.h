// tests/crash/journal.h — appending to and reading back the host-side journal
// (format in record.h), plus small helpers shared by the workload's modes.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace snapdisk::crash {

// Appends lines and makes them durable (fdatasync) before returning, so a
// fact is in the journal only once what it describes was acknowledged.
// Thread-safe.
class JournalWriter {
 public:
  // Exits the process with status 2 if the journal cannot be opened.
  explicit JournalWriter(const std::string& path);
  ~JournalWriter();
  JournalWriter(const JournalWriter&) = delete;
  JournalWriter& operator=(const JournalWriter&) = delete;
  void Append(const std::string& lines);  // each line ends with '\n'

 private:
  std::mutex mu_;
  int fd_ = -1;  // O_APPEND; GUARDED_BY(mu_) for write+fdatasync pairs
};

struct ImageFacts {
  std::string name;
  uint64_t size = 0;
  std::vector<uint64_t> acked;  // per slot: highest acknowledged seq, 0 if none
};

struct SnapshotFacts {
  std::string sha256;      // empty: made (mkdir returned) but not hashed before the crash
  bool deleting = false;  // an rmdir was started: it may or may not survive
};

struct JournalState {
  std::map<uint32_t, ImageFacts> images;                              // by image id
  std::map<std::pair<uint32_t, std::string>, SnapshotFacts> snapshots;  // (image id, name)
  std::map<std::string, SnapshotFacts> clones;                          // by clone name
  uint64_t acks = 0;                                                    // ack lines read
};

// Reads the journal (a missing file is an empty journal). Exits 2 on a
// malformed line other than a torn last one.
JournalState ReadJournal(const std::string& path);

// sha256 of a file via sha256sum(1); false if it could not be read.
bool Sha256File(const std::string& path, std::string* hex);

std::string ErrnoName(int err);

}  // namespace snapdisk::crash
