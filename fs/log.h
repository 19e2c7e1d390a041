// fs/log.h — the daemon's log: stderr in the foreground, syslog once daemonized.
//
// Every error the adapter returns to the kernel is logged here with what
// failed and why (the engine Status message), except the expected misses
// (ENOENT from lookup, ENODATA from getxattr). Logging never throws.
// Thread-safe: lines are written whole.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <string_view>

namespace snapdisk::fs {

enum class LogLevel { kDebug, kInfo, kError };

// Process-wide sink selection; set once at mount time, before worker threads.
void LogToSyslog(bool enable);
void SetDebugLogging(bool enable);
bool DebugLogging();

void LogLine(LogLevel level, std::string_view line) noexcept;

template <typename... Args>
void Log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) noexcept {
  if (level == LogLevel::kDebug && !DebugLogging()) return;
  try {
    LogLine(level, fmt::format(format, std::forward<Args>(args)...));
  } catch (...) {
    LogLine(LogLevel::kError, "snapdisk: (log line lost: out of memory)");
  }
}

// "OP(ino 0x..., 'name'): ERRNO_NAME: message"
void LogOpError(std::string_view op, uint64_t ino, std::string_view name, int err,
                std::string_view why) noexcept;

}  // namespace snapdisk::fs
