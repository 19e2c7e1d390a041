#include "util.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

namespace snapdisk::exerciser {
namespace {

const Config* g_config = nullptr;
const OpLog* g_log = nullptr;
std::mutex g_fail_mu;

std::string Hex(const uint8_t* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += fmt::format("{:02x}", p[i]);
  return s;
}

}  // namespace

std::string ImagePath(const Config& config, const std::string& image) {
  return config.dir + "/" + (config.project.empty() ? "" : config.project + "/") + image;
}

std::string SnapshotDir(const Config& config, const std::string& image, const std::string& snap) {
  return config.dir + "/.snapshots/" + (config.project.empty() ? "" : config.project + "/") +
         image + "/" + snap;
}

void Rng::Fill(uint8_t* p, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = Next();
    std::memcpy(p + i, &v, 8);
  }
  if (i < n) {
    uint64_t v = Next();
    std::memcpy(p + i, &v, n - i);
  }
}

void OpLog::Add(std::string line) {
  std::lock_guard lock(mu_);
  lines_.push_back(fmt::format("#{} {}", ++number_, line));
  if (echo_) std::printf("%s\n", lines_.back().c_str());
  if (lines_.size() > kKeep) lines_.pop_front();
}

std::vector<std::string> OpLog::Tail(size_t n) const {
  std::lock_guard lock(mu_);
  size_t from = lines_.size() > n ? lines_.size() - n : 0;
  return {lines_.begin() + static_cast<std::ptrdiff_t>(from), lines_.end()};
}

void Counters::Count(std::string_view op) {
  std::lock_guard lock(mu_);
  auto it = by_op_.find(op);
  if (it == by_op_.end()) it = by_op_.emplace(std::string(op), 0).first;
  ++it->second;
}

uint64_t Counters::Total() const {
  std::lock_guard lock(mu_);
  uint64_t total = 0;
  for (const auto& [op, n] : by_op_) total += n;
  return total;
}

void Counters::Print() const {
  std::lock_guard lock(mu_);
  uint64_t total = 0;
  for (const auto& [op, n] : by_op_) total += n;
  std::printf("ops by type (%llu total):\n", static_cast<unsigned long long>(total));
  for (const auto& [op, n] : by_op_) {
    std::printf("  %-16s %8llu\n", op.c_str(), static_cast<unsigned long long>(n));
  }
  std::fflush(stdout);
}

void SetFailureContext(const Config* config, const OpLog* log) {
  g_config = config;
  g_log = log;
}

void FailMessage(const std::string& reason) {
  // The first failing thread reports; the others wait here until exit.
  g_fail_mu.lock();
  std::fflush(stdout);
  std::fprintf(stderr, "\nEXERCISER FAILURE: %s\n", reason.c_str());
  if (g_config != nullptr) {
    std::fprintf(stderr, "seed: %llu\nreproduce: %s\n",
                 static_cast<unsigned long long>(g_config->seed), g_config->argv_line.c_str());
  }
  if (g_log != nullptr) {
    std::fprintf(stderr, "--- op log tail (oldest first) ---\n");
    for (const std::string& line : g_log->Tail(60)) std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
  _exit(1);  // other threads may be mid-operation: no destructors
}

std::string ErrnoStr(int err) {
  const char* name = strerrorname_np(err);
  return fmt::format("{} ({})", name != nullptr ? name : "?", std::strerror(err));
}

void PWriteAll(int fd, const uint8_t* data, size_t len, uint64_t off, const std::string& what) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, data + done, len - done, static_cast<off_t>(off + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) Fail("{}: pwrite at {} failed: {}", what, off + done, ErrnoStr(errno));
    if (n == 0) Fail("{}: pwrite at {} returned 0", what, off + done);
    done += static_cast<size_t>(n);
  }
}

size_t PReadUpTo(int fd, uint8_t* data, size_t len, uint64_t off, const std::string& what) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, data + done, len - done, static_cast<off_t>(off + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) Fail("{}: pread at {} failed: {}", what, off + done, ErrnoStr(errno));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

void ExpectBytes(const uint8_t* got, const uint8_t* want, size_t len, uint64_t base,
                 const std::string& what) {
  if (std::memcmp(got, want, len) == 0) return;
  size_t i = 0;
  while (got[i] == want[i]) ++i;
  size_t last = len;
  while (got[last - 1] == want[last - 1]) --last;
  size_t from = i >= 8 ? i - 8 : 0;
  size_t n = std::min<size_t>(32, len - from);
  Fail("{}: data mismatch at offset {} (range [{}, {}), first..last differing byte [{}, {}))\n"
       "  at {}: got  {}\n  at {}: want {}",
       what, base + i, base, base + len, base + i, base + last, base + from, Hex(got + from, n),
       base + from, Hex(want + from, n));
}

bool DropCaches() {
  int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write(fd, "3\n", 2) == 2;
  close(fd);
  return ok;
}

void FillPattern(Rng& rng, uint8_t* data, size_t len) {
  uint64_t kind = rng.Below(100);
  if (kind < 70) {
    rng.Fill(data, len);
  } else if (kind < 85) {
    std::memset(data, 0, len);
  } else {
    std::memset(data, static_cast<int>(1 + rng.Below(255)), len);
  }
}

uint64_t RandomLength(Rng& rng, uint64_t max) {
  if (max == 0) return 0;
  uint64_t len;
  switch (rng.Below(4)) {
    case 0: len = 1 + rng.Below(4096); break;                       // small, unaligned
    case 1: len = kPage * (1 + rng.Below(std::max<uint64_t>(1, max / kPage))); break;  // 4 KiB multiples
    default: len = 1 + rng.Below(max); break;                       // anything
  }
  return std::min(len, max);
}

}  // namespace snapdisk::exerciser
