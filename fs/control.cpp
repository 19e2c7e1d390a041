#include "fs/control.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "fs/errno_map.h"
#include "fs/log.h"
#include "fs/store_paths.h"

namespace snapdisk::fs {
namespace {

using nlohmann::json;

constexpr int kPollMs = 200;              // how often idle threads look at stopping_
constexpr int kIdleTimeoutMs = 10 * 60 * 1000;  // a silent client is dropped

// A request that failed: the response's error object.
struct RequestError {
  int err;
  std::string message;
};

json ErrorResponse(int err, const std::string& message) {
  return json{{"ok", false}, {"error", {{"errno", err}, {"message", message}}}};
}

void ThrowIfError(const Status& st) {
  if (!st.ok()) throw RequestError{ToErrno(st), st.ToString()};
}

std::string StringField(const json& req, const char* key, bool required) {
  auto it = req.find(key);
  if (it == req.end() || it->is_null()) {
    if (required) throw RequestError{EINVAL, std::string("missing field '") + key + "'"};
    return "";
  }
  if (!it->is_string()) throw RequestError{EINVAL, std::string("field '") + key + "' must be a string"};
  return it->get<std::string>();
}

NodeId ImageOf(Store* store, const std::string& path) {
  NodeAttr attr;
  ThrowIfError(ResolvePath(store, path, &attr));
  if (attr.kind != NodeKind::kImage) {
    throw RequestError{EISDIR, "'" + path + "' is a directory, not an image"};
  }
  return attr.id;
}

// A snapshot name to its id; "" is kLive.
SnapshotId SnapshotOf(Store* store, NodeId image, const std::string& name) {
  if (name.empty()) return kLive;
  SnapshotInfo info;
  Status st = store->GetSnapshot(image, name, &info);
  if (st.ok() && info.hidden) st = Status::NotFound("");
  if (st.Is(Status::Code::kNotFound)) {
    throw RequestError{ENOENT, "NotFound: no snapshot '" + name + "' of image '" +
                                   store->PathOf(image) + "'"};
  }
  ThrowIfError(st);
  return info.id;
}

json DoDiff(Store* store, const json& req) {
  const std::string path = StringField(req, "image", true);
  const NodeId image = ImageOf(store, path);
  const SnapshotId from = SnapshotOf(store, image, StringField(req, "from", false));
  const SnapshotId to = SnapshotOf(store, image, StringField(req, "to", false));
  std::vector<Store::Extent> extents;
  ThrowIfError(store->Diff(image, from, to, &extents));
  json list = json::array();
  uint64_t bytes = 0;
  for (const Store::Extent& e : extents) {
    list.push_back({{"offset", e.offset}, {"length", e.length}});
    bytes += e.length;
  }
  return json{{"extents", std::move(list)}, {"bytes", bytes}};
}

json UsageOf(Store* store, NodeId image, bool with_snapshots) {
  SpaceUsage live;
  ThrowIfError(store->GetSpaceUsage(image, kLive, &live));
  NodeAttr attr;
  ThrowIfError(store->GetAttr(image, &attr));
  json out{{"image", store->PathOf(image)},
           {"size", attr.size},
           {"referenced", live.referenced},
           {"unique", live.unique}};
  std::vector<SnapshotInfo> snapshots;
  ThrowIfError(store->ListSnapshots(image, &snapshots));
  json list = json::array();
  uint64_t count = 0;
  for (const SnapshotInfo& s : snapshots) {
    if (s.hidden) continue;
    ++count;
    if (!with_snapshots) continue;
    SpaceUsage usage;
    ThrowIfError(store->GetSpaceUsage(image, s.id, &usage));
    list.push_back({{"name", s.name},
                    {"id", s.id},
                    {"size", s.size},
                    {"referenced", usage.referenced},
                    {"unique", usage.unique}});
  }
  out["snapshot_count"] = count;
  if (with_snapshots) out["snapshots"] = std::move(list);
  return out;
}

json DoUsage(Store* store, const json& req) {
  const std::string path = StringField(req, "image", false);
  if (!path.empty()) return UsageOf(store, ImageOf(store, path), true);
  std::vector<NodeId> images;
  ThrowIfError(CollectImages(store, kRootNode, &images));
  json list = json::array();
  for (NodeId image : images) list.push_back(UsageOf(store, image, false));
  return json{{"images", std::move(list)}};
}

json DoStats(Store* store) {
  StoreStats s;
  ThrowIfError(store->GetStats(&s));
  return json{{"block_size", s.block_size},         {"capacity_bytes", s.capacity_bytes},
              {"available_bytes", s.available_bytes}, {"stored_bytes", s.stored_bytes},
              {"images", s.images},                 {"snapshots", s.snapshots},
              {"directories", s.directories}};
}

json DoCheck(Store* store, const std::function<void(const std::string&)>& emit) {
  CheckReport report;
  auto last = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  uint64_t last_percent = 101;
  auto progress = [&](uint64_t done, uint64_t total) {
    // At most ~5 events a second, and one per whole percent.
    const uint64_t percent = total == 0 ? 100 : done * 100 / total;
    auto now = std::chrono::steady_clock::now();
    if (percent == last_percent && done != total) return;
    if (now - last < std::chrono::milliseconds(200) && done != total) return;
    last = now;
    last_percent = percent;
    emit(json{{"event", "progress"}, {"done", done}, {"total", total}}.dump());
  };
  ThrowIfError(store->Check(&report, progress));
  return json{{"versions_checked", report.versions_checked},
              {"bytes_verified", report.bytes_verified},
              {"checksum_errors", report.checksum_errors},
              {"index_errors", report.index_errors},
              {"problems", report.problems},
              {"clean", report.clean()}};
}

// Writes all of `data`; false if the peer went away.
bool SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

void ControlServer::HandleLine(Store* store, const std::string& line,
                               const std::function<void(const std::string&)>& emit) {
  json response;
  try {
    json req = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (req.is_discarded() || !req.is_object()) {
      throw RequestError{EINVAL, "request is not a JSON object"};
    }
    const std::string cmd = StringField(req, "cmd", true);
    json result;
    if (cmd == "diff") {
      result = DoDiff(store, req);
    } else if (cmd == "usage") {
      result = DoUsage(store, req);
    } else if (cmd == "stats") {
      result = DoStats(store);
    } else if (cmd == "check") {
      result = DoCheck(store, emit);
    } else if (cmd == "ping") {
      result = json::object();
    } else {
      throw RequestError{EINVAL, "unknown command '" + cmd + "'"};
    }
    response = json{{"ok", true}, {"result", std::move(result)}};
  } catch (const RequestError& e) {
    response = ErrorResponse(e.err, e.message);
  } catch (const std::bad_alloc&) {
    response = ErrorResponse(ENOMEM, "out of memory");
  } catch (const std::exception& e) {
    response = ErrorResponse(EINVAL, e.what());
  }
  try {
    emit(response.dump(-1, ' ', false, json::error_handler_t::replace));
  } catch (...) {
    emit(R"({"ok":false,"error":{"errno":12,"message":"cannot format the response"}})");
  }
}

ControlServer::ControlServer(Store* store, std::string socket_path)
    : store_(store), socket_path_(std::move(socket_path)) {}

ControlServer::~ControlServer() { Stop(); }

Status ControlServer::Start() {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof(addr.sun_path)) {
    return Status::NameTooLong("control socket path '" + socket_path_ + "' is over " +
                               std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::IOError(std::string("socket: ") + std::strerror(errno));
  // The store is ours (Store::Open holds its lock): a socket file left
  // there is stale, from a daemon that died.
  unlink(socket_path_.c_str());
  mode_t old_mask = umask(0177);  // the socket is born 0600
  int rc = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int bind_errno = errno;
  umask(old_mask);
  if (rc != 0 || listen(fd, 16) != 0) {
    int e = rc != 0 ? bind_errno : errno;
    close(fd);
    return Status::IOError("cannot listen on " + socket_path_ + ": " + std::strerror(e));
  }
  chmod(socket_path_.c_str(), 0600);
  listen_fd_ = fd;
  acceptor_ = std::thread([this] { AcceptLoop(); });
  return Status::OK();
}

void ControlServer::Stop() {
  if (listen_fd_ < 0) return;
  stopping_ = true;
  if (acceptor_.joinable()) acceptor_.join();
  ReapWorkers(true);
  close(listen_fd_);
  listen_fd_ = -1;
  unlink(socket_path_.c_str());
}

void ControlServer::ReapWorkers(bool all) {
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (all || it->done) {
      if (it->thread.joinable()) it->thread.join();
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
}

void ControlServer::AcceptLoop() {
  while (!stopping_) {
    pollfd pfd{listen_fd_, POLLIN, 0};
    int n = poll(&pfd, 1, kPollMs);
    if (n <= 0) continue;
    ReapWorkers(false);
    int conn = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) continue;
    if (connections_.load() >= kMaxConnections) {
      SendAll(conn, ErrorResponse(EBUSY, "too many control connections").dump() + "\n");
      close(conn);
      continue;
    }
    ++connections_;
    try {
      Worker& worker = workers_.emplace_back();
      worker.thread = std::thread([this, conn, &worker] {
        ServeConnection(conn);
        close(conn);
        --connections_;
        worker.done = true;
      });
    } catch (...) {  // no thread: drop the connection, keep the daemon
      if (!workers_.empty() && !workers_.back().thread.joinable()) workers_.pop_back();
      close(conn);
      --connections_;
    }
  }
}

void ControlServer::ServeConnection(int fd) {
  std::string buffer;
  int idle_ms = 0;
  char chunk[65536];
  auto emit = [fd](const std::string& text) { SendAll(fd, text + "\n"); };
  while (!stopping_) {
    size_t newline;
    while ((newline = buffer.find('\n')) != std::string::npos) {
      std::string line = buffer.substr(0, newline);
      buffer.erase(0, newline + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      HandleLine(store_, line, emit);
    }
    if (buffer.size() > kMaxRequestBytes) {
      emit(ErrorResponse(EINVAL, "request line over " + std::to_string(kMaxRequestBytes) +
                                     " bytes")
               .dump());
      return;
    }
    pollfd pfd{fd, POLLIN, 0};
    int n = poll(&pfd, 1, kPollMs);
    if (n == 0) {
      idle_ms += kPollMs;
      if (idle_ms >= kIdleTimeoutMs) return;
      continue;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    ssize_t got = recv(fd, chunk, sizeof chunk, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return;  // EOF or error: the client is gone
    idle_ms = 0;
    buffer.append(chunk, static_cast<size_t>(got));
  }
}

}  // namespace snapdisk::fs
