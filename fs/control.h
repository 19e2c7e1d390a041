// fs/control.h — the daemon's control channel: what a filesystem cannot carry.
//
// The daemon listens on a Unix socket, STORE/control.sock (mode 0600), from
// a thread started once the store is open and the mount is up, and stopped
// before the store closes. The protocol is JSON lines: the client sends one
// request object per line, the daemon answers each with one response line
//
//   {"ok":true,"result":...}
//   {"ok":false,"error":{"errno":N,"message":"what and why"}}
//
// preceded, for long work (check), by event lines {"event":"progress",...}.
// Requests name images by their path from the mount root ("team-a/db.img")
// and snapshots by name:
//
//   {"cmd":"diff","image":P,"from":SNAP|null,"to":SNAP|null}
//        Store::Diff; from null = from nothing, to null = the live image.
//        result: {"extents":[{"offset":O,"length":L},...],"bytes":B}
//   {"cmd":"usage","image":P}        live image and each snapshot:
//        result: {"image":P,"referenced":R,"unique":U,"snapshots":[{"name",
//        "id","referenced","unique"},...]}
//   {"cmd":"usage"}                  the same for every image of the store:
//        result: {"images":[...as above, without "snapshots"...]}
//   {"cmd":"stats"}                  Store::GetStats
//   {"cmd":"check"}                  Store::Check with progress events
//
// Robustness: a request line is at most kMaxRequestBytes; a longer line, bad
// JSON or an unknown command gets an error response (EINVAL), never a crash.
// Connections are served by their own threads (at most kMaxConnections at
// once; more are refused). Stop() waits for them; a check in progress runs to
// its end first (Store::Check cannot be interrupted).
#pragma once

#include <atomic>
#include <functional>
#include <list>
#include <string>
#include <thread>

#include "snapdisk/status.h"
#include "snapdisk/store.h"

namespace snapdisk::fs {

constexpr const char* kControlSocketName = "control.sock";

class ControlServer {
 public:
  static constexpr size_t kMaxRequestBytes = 1 << 20;
  static constexpr int kMaxConnections = 16;

  ControlServer(Store* store, std::string socket_path);
  ~ControlServer();  // Stop()
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Binds and listens (replacing a stale socket file) and starts the thread.
  Status Start();
  // Stops accepting, waits for every connection thread, removes the socket.
  void Stop();

  // Handles one request line: calls `emit` with each event and, last, the
  // response (each a JSON text without the newline). Never throws.
  static void HandleLine(Store* store, const std::string& line,
                         const std::function<void(const std::string&)>& emit);

 private:
  void AcceptLoop();
  void ServeConnection(int fd);

  Store* const store_;
  const std::string socket_path_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::thread acceptor_;
  // One per connection; finished ones are joined by the acceptor before it
  // accepts the next connection, the rest by Stop(). Only the acceptor
  // thread and Stop() (after joining the acceptor) touch the list.
  struct Worker {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  std::list<Worker> workers_;
  void ReapWorkers(bool all);
};

}  // namespace snapdisk::fs
