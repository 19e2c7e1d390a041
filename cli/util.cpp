#include "cli/util.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

namespace snapdisk::cli {

using nlohmann::json;

std::string ErrnoText(int err) {
  const char* name = strerrorname_np(err);
  return std::string(strerror(err)) + " (" + (name ? name : std::to_string(err)) + ")";
}

void FailErrno(const std::string& what, int err) {
  throw CliError(kExitFailed, what + ": " + ErrnoText(err));
}

void FailUsage(const std::string& what) { throw CliError(kExitUsage, what); }

std::function<void()> RunVerb(std::string verb, std::function<void()> body) {
  return [verb = std::move(verb), body = std::move(body)] {
    int code = 0;
    try {
      body();
      return;
    } catch (const CliError& e) {
      std::fprintf(stderr, "snapdisk: %s: %s\n", verb.c_str(), e.what());
      code = e.exit_code;
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "snapdisk: %s: out of memory\n", verb.c_str());
      code = kExitFailed;
    } catch (const nlohmann::json::exception& e) {
      std::fprintf(stderr, "snapdisk: %s: bad reply from the daemon: %s\n", verb.c_str(),
                   e.what());
      code = kExitFailed;
    }
    throw CLI::RuntimeError(code);
  };
}

namespace {

// mountinfo escapes ' ', '\t', '\n' and '\\' as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (size_t k = 1; k <= 3; ++k) {
        if (i + k >= s.size() || s[i + k] < '0' || s[i + k] > '7') ok = false;
        else v = v * 8 + (s[i + k] - '0');
      }
      if (ok) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::string AbsolutePath(const std::string& path) {
  char buf[PATH_MAX];
  if (realpath(path.c_str(), buf) != nullptr) return buf;
  if (errno != ENOENT) FailErrno(path, errno);
  // A path to be created: its parent must exist.
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  size_t slash = p.rfind('/');
  std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
  std::string base = slash == std::string::npos ? p : p.substr(slash + 1);
  if (realpath(parent.c_str(), buf) == nullptr) FailErrno(parent, errno);
  std::string abs = buf;
  if (abs != "/") abs += "/";
  return abs + base;
}

}  // namespace

MountRef Locate(const std::string& path) {
  const std::string abs = AbsolutePath(path);
  std::ifstream in("/proc/self/mountinfo");
  if (!in) FailErrno("/proc/self/mountinfo", errno);
  std::string line;
  MountRef best;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    std::string w;
    while (fields >> w) f.push_back(w);
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || dash + 2 >= f.end()) continue;
    const std::string fstype = *(dash + 1);
    const std::string source = Unescape(*(dash + 2));
    if (source.rfind("snapdisk:", 0) != 0) continue;
    if (fstype != "fuse.snapdisk" && fstype != "fuse") continue;
    std::string mp = Unescape(f[4]);
    const bool inside =
        abs == mp || (abs.size() > mp.size() && abs.compare(0, mp.size(), mp) == 0 &&
                      (mp == "/" || abs[mp.size()] == '/'));
    if (inside && mp.size() >= best.mountpoint.size()) {
      best.mountpoint = mp;
      best.store = source.substr(std::string("snapdisk:").size());
      best.rel = abs.size() > mp.size() ? abs.substr(mp == "/" ? 1 : mp.size() + 1) : "";
    }
  }
  if (best.mountpoint.empty()) {
    throw CliError(kExitFailed, path + " is not inside a snapdisk mount");
  }
  return best;
}

MountRef LocateImage(const std::string& path) {
  MountRef ref = Locate(path);
  if (ref.rel == ".snapshots" || ref.rel.rfind(".snapshots/", 0) == 0) {
    FailUsage(path + " is under .snapshots: name the live image and use IMG@SNAPSHOT");
  }
  struct stat st {};
  if (stat(ref.abs().c_str(), &st) != 0) FailErrno(path, errno);
  if (!S_ISREG(st.st_mode)) FailErrno(path + ": not an image", S_ISDIR(st.st_mode) ? EISDIR : EINVAL);
  return ref;
}

void SplitAt(const std::string& spec, std::string* image, std::string* snapshot) {
  size_t at = spec.rfind('@');
  if (at == std::string::npos) {
    *image = spec;
    snapshot->clear();
    return;
  }
  *image = spec.substr(0, at);
  *snapshot = spec.substr(at + 1);
  if (image->empty() || snapshot->empty()) FailUsage("'" + spec + "': expected IMAGE@SNAPSHOT");
}

json ControlRequest(const MountRef& mount, const json& request,
                    const std::function<void(const json&)>& on_event) {
  const std::string path = mount.store + "/control.sock";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) FailErrno("control socket " + path, ENAMETOOLONG);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) FailErrno("socket", errno);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    close(fd);
    FailErrno("cannot reach the daemon of " + mount.mountpoint + " at " + path, e);
  }
  std::string out = request.dump() + "\n";
  size_t sent = 0;
  while (sent < out.size()) {
    ssize_t n = send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      close(fd);
      FailErrno("control request to " + path, e);
    }
    sent += static_cast<size_t>(n);
  }
  std::string buffer;
  char chunk[65536];
  while (true) {
    size_t nl;
    while ((nl = buffer.find('\n')) != std::string::npos) {
      json msg = json::parse(buffer.substr(0, nl));
      buffer.erase(0, nl + 1);
      if (msg.contains("event")) {
        if (on_event) on_event(msg);
        continue;
      }
      close(fd);
      if (msg.value("ok", false)) return msg.value("result", json::object());
      const json& err = msg.at("error");
      const int e = err.value("errno", EIO);
      throw CliError(kExitFailed, err.value("message", std::string("daemon error")) + ": " +
                                      ErrnoText(e));
    }
    ssize_t n = recv(fd, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : ECONNRESET;
      close(fd);
      FailErrno("the daemon closed the control connection", e);
    }
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

bool GetXattr(const std::string& path, const std::string& name, std::string* value) {
  std::vector<char> buf(4096);
  while (true) {
    ssize_t n = lgetxattr(path.c_str(), name.c_str(), buf.data(), buf.size());
    if (n >= 0) {
      value->assign(buf.data(), static_cast<size_t>(n));
      return true;
    }
    if (errno == ENODATA) return false;
    if (errno != ERANGE) FailErrno(path + ": " + name, errno);
    ssize_t need = lgetxattr(path.c_str(), name.c_str(), nullptr, 0);
    if (need < 0) FailErrno(path + ": " + name, errno);
    buf.resize(static_cast<size_t>(need) + 1);
  }
}

void SetXattr(const std::string& path, const std::string& name, const std::string& value) {
  if (lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0) != 0) {
    FailErrno(path + ": " + name, errno);
  }
}

std::vector<std::string> ListXattr(const std::string& path) {
  ssize_t need = llistxattr(path.c_str(), nullptr, 0);
  if (need < 0) FailErrno(path, errno);
  std::vector<char> buf(static_cast<size_t>(need) + 1);
  ssize_t n = llistxattr(path.c_str(), buf.data(), buf.size());
  if (n < 0) FailErrno(path, errno);
  std::vector<std::string> names;
  for (ssize_t i = 0; i < n;) {
    std::string name(buf.data() + i);
    i += static_cast<ssize_t>(name.size()) + 1;
    if (!name.empty()) names.push_back(name);
  }
  return names;
}

void AddFormatOption(CLI::App* cmd, std::string* format) {
  *format = "table";
  cmd->add_option("-f,--format", *format, "Output format")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
}

bool IsJson(const std::string& format) { return format == "json"; }

void PrintJson(const json& value) { std::cout << value.dump(2) << std::endl; }

void PrintTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  auto print = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  };
  print(header);
  for (const auto& row : rows) print(row);
  std::cout.flush();
}

std::string HumanBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  }
  return buf;
}

int64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

double SecondsSince(int64_t start_ns) { return static_cast<double>(NowNs() - start_ns) / 1e9; }

Progress::Progress(std::string label, uint64_t total)
    : label_(std::move(label)), total_(total), tty_(isatty(STDERR_FILENO) == 1) {}

Progress::~Progress() { Finish(); }

void Progress::Update(uint64_t done) {
  if (!tty_ || finished_) return;
  const int64_t now_ms = NowNs() / 1000000;
  if (now_ms - last_draw_ms_ < 100 && done < total_) return;
  last_draw_ms_ = now_ms;
  const double frac = total_ == 0 ? 1.0 : std::min(1.0, static_cast<double>(done) / total_);
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(frac * kWidth);
  std::fprintf(stderr, "\r%s [%s%s] %3d%% %s / %s ", label_.c_str(), std::string(filled, '#').c_str(),
               std::string(kWidth - filled, ' ').c_str(), static_cast<int>(frac * 100),
               HumanBytes(done).c_str(), HumanBytes(total_).c_str());
  std::fflush(stderr);
}

void Progress::Finish() {
  if (!tty_ || finished_) return;
  finished_ = true;
  if (last_draw_ms_ != 0) std::fprintf(stderr, "\n");
}

}  // namespace snapdisk::cli
