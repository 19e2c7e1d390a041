// tests/exerciser/util.h — shared pieces of the snapdisk exerciser: the
// deterministic random source, the operation log kept for failure reports,
// per-type counters and byte-exact I/O helpers that fail loudly.
//
// Threading: Rng is per thread (never shared). OpLog and Counters are shared
// by all worker threads and lock internally. Fail() may be called from any
// thread; the first caller prints its report and ends the process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace snapdisk::exerciser {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB;
constexpr uint64_t kPage = 4096;

struct Config {
  std::string dir;             // the mounted filesystem (or any directory)
  uint64_t seed = 0;
  uint64_t ops = 1000;
  unsigned threads = 1;        // 1: the single-threaded model run; >1: disjoint-range threads
  uint64_t max_size = 16 * MiB;
  std::set<std::string> skip; // op kinds not to run (--skip NAME, for triage)
  bool verbose = false;        // print every op as it starts
  std::string project;         // images live in DIR/PROJECT/ (a plain directory) when set
  std::string argv_line;       // how to reproduce, printed on failure
};

// DIR[/PROJECT]/IMAGE
std::string ImagePath(const Config& config, const std::string& image);
// DIR/.snapshots[/PROJECT]/IMAGE/SNAP: the snapshot's folder (mkdir/rmdir).
std::string SnapshotDir(const Config& config, const std::string& image, const std::string& snap);

// splitmix64: tiny, fast, and the same sequence on every platform for a seed.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); n == 0 yields 0.
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }
  // Uniform in [lo, hi] (inclusive).
  uint64_t Between(uint64_t lo, uint64_t hi) { return lo + Below(hi - lo + 1); }
  bool OneIn(uint64_t n) { return Below(n) == 0; }
  void Fill(uint8_t* p, size_t n);

 private:
  uint64_t state_;
};

// The last operations performed, for the failure report.
class OpLog {
 public:
  void set_echo(bool echo) { echo_ = echo; }
  void Add(std::string line);
  std::vector<std::string> Tail(size_t n) const;

 private:
  static constexpr size_t kKeep = 400;
  mutable std::mutex mu_;
  std::deque<std::string> lines_;  // GUARDED_BY(mu_)
  uint64_t number_ = 0;            // GUARDED_BY(mu_)
  bool echo_ = false;              // set before threads start
};

class Counters {
 public:
  void Count(std::string_view op);
  void Print() const;
  uint64_t Total() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, uint64_t, std::less<>> by_op_;  // GUARDED_BY(mu_)
};

// Process-wide context for Fail(): set once in main before any thread starts.
void SetFailureContext(const Config* config, const OpLog* log);

// Prints the reason, the seed, the reproduction command and the op log tail,
// then exits 1. Safe from any thread; later callers block forever.
[[noreturn]] void FailMessage(const std::string& reason);
template <typename... Args>
[[noreturn]] void Fail(fmt::format_string<Args...> f, Args&&... args) {
  FailMessage(fmt::format(f, std::forward<Args>(args)...));
}

std::string ErrnoStr(int err);

// Full-length I/O, failing the run on an error or a short count. `what`
// names the operation for the report.
void PWriteAll(int fd, const uint8_t* data, size_t len, uint64_t off, const std::string& what);
// Reads up to len bytes; returns how many (short only at end of file).
size_t PReadUpTo(int fd, uint8_t* data, size_t len, uint64_t off, const std::string& what);

// Compares got with want; on a difference fails with the first mismatching
// offset (base + index) and a hex excerpt of both.
void ExpectBytes(const uint8_t* got, const uint8_t* want, size_t len, uint64_t base,
                 const std::string& what);

// echo 3 > /proc/sys/vm/drop_caches; silently does nothing if not allowed.
// Returns whether it dropped.
bool DropCaches();

// Fills `data` with one of the write patterns: random bytes, zeros (the
// engine's zero elision), or one repeated byte.
void FillPattern(Rng& rng, uint8_t* data, size_t len);

// A random length up to `max`, biased towards small and 4 KiB-multiple sizes.
uint64_t RandomLength(Rng& rng, uint64_t max);

}  // namespace snapdisk::exerciser
