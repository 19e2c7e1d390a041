#include "fs/log.h"

#include <syslog.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace snapdisk::fs {
namespace {

// Process-wide, not per mount: there is one stderr and one syslog per process.
std::atomic<bool> g_syslog{false};
std::atomic<bool> g_debug{false};

int SyslogPriority(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return LOG_DEBUG;
    case LogLevel::kInfo:
      return LOG_INFO;
    case LogLevel::kError:
      return LOG_ERR;
  }
  return LOG_ERR;
}

}  // namespace

void LogToSyslog(bool enable) {
  if (enable) openlog("snapdisk", LOG_PID, LOG_DAEMON);
  g_syslog.store(enable);
}

void SetDebugLogging(bool enable) { g_debug.store(enable); }
bool DebugLogging() { return g_debug.load(std::memory_order_relaxed); }

void LogLine(LogLevel level, std::string_view line) noexcept {
  if (g_syslog.load(std::memory_order_relaxed)) {
    syslog(SyslogPriority(level), "%.*s", static_cast<int>(line.size()), line.data());
    return;
  }
  // One fwrite per line keeps concurrent lines from interleaving.
  std::string out;
  try {
    out.reserve(line.size() + 1);
    out.append(line);
    out.push_back('\n');
  } catch (...) {
    return;
  }
  std::fwrite(out.data(), 1, out.size(), stderr);
  std::fflush(stderr);
}

void LogOpError(std::string_view op, uint64_t ino, std::string_view name, int err,
                std::string_view why) noexcept {
  const char* err_name = strerrorname_np(err);
  if (name.empty()) {
    Log(LogLevel::kError, "{}(ino {:#x}): {}: {}", op, ino, err_name ? err_name : "?", why);
  } else {
    Log(LogLevel::kError, "{}(ino {:#x}, '{}'): {}: {}", op, ino, name, err_name ? err_name : "?",
        why);
  }
}

}  // namespace snapdisk::fs
