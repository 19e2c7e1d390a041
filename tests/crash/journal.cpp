#include "journal.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "record.h"

namespace snapdisk::crash {

JournalWriter::JournalWriter(const std::string& path) {
  fd_ = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    std::fprintf(stderr, "crash workload: cannot open journal %s: %s\n", path.c_str(),
                 ErrnoName(errno).c_str());
    std::exit(2);
  }
}

JournalWriter::~JournalWriter() {
  if (fd_ >= 0) close(fd_);
}

void JournalWriter::Append(const std::string& lines) {
  std::lock_guard lock(mu_);
  size_t done = 0;
  while (done < lines.size()) {
    ssize_t n = write(fd_, lines.data() + done, lines.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::fprintf(stderr, "crash workload: journal write: %s\n", ErrnoName(errno).c_str());
      std::exit(2);
    }
    done += static_cast<size_t>(n);
  }
  if (fdatasync(fd_) != 0) {
    std::fprintf(stderr, "crash workload: journal fdatasync: %s\n", ErrnoName(errno).c_str());
    std::exit(2);
  }
}

JournalState ReadJournal(const std::string& path) {
  JournalState state;
  std::ifstream in(path, std::ios::binary);
  if (!in) return state;
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t pos = 0, line_no = 0;
  while (pos < content.size()) {
    size_t nl = content.find('\n', pos);
    if (nl == std::string::npos) break;  // torn last line: the workload died mid-append
    std::string line = content.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    std::istringstream ls(line);
    std::string kind;
    ls >> kind;
    bool ok = true;
    if (kind == "image") {
      ImageFacts f;
      uint32_t id;
      ok = static_cast<bool>(ls >> f.name >> id >> f.size);
      if (ok) {
        f.acked.assign(f.size / kRecordSize, 0);
        state.images[id] = std::move(f);
      }
    } else if (kind == "ack") {
      uint32_t id;
      uint64_t slot, seq;
      ok = static_cast<bool>(ls >> id >> slot >> seq) && state.images.count(id) != 0 &&
           slot < state.images[id].acked.size();
      if (ok) {
        uint64_t& acked = state.images[id].acked[slot];
        if (seq > acked) acked = seq;
        ++state.acks;
      }
    } else if (kind == "snap" || kind == "snapmade" || kind == "snapdel") {
      uint32_t id;
      std::string name, sha;
      ok = static_cast<bool>(ls >> id >> name);
      if (ok && kind == "snapmade") {
        state.snapshots[{id, name}] = {"", false};
      } else if (ok && kind == "snap") {
        ok = static_cast<bool>(ls >> sha);
        state.snapshots[{id, name}] = {sha, false};
      } else if (ok) {
        auto it = state.snapshots.find({id, name});
        if (it != state.snapshots.end()) it->second.deleting = true;
      }
    } else if (kind == "clone" || kind == "clonedel") {
      std::string name, sha;
      ok = static_cast<bool>(ls >> name);
      if (ok && kind == "clone") {
        ok = static_cast<bool>(ls >> sha);
        state.clones[name] = {sha, false};
      } else if (ok) {
        auto it = state.clones.find(name);
        if (it != state.clones.end()) it->second.deleting = true;
      }
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "crash workload: %s:%zu: malformed journal line: %s\n", path.c_str(),
                   line_no, line.c_str());
      std::exit(2);
    }
  }
  return state;
}

bool Sha256File(const std::string& path, std::string* hex) {
  // Paths here are ours (no quotes in them); quote anyway.
  std::string cmd = "sha256sum < '" + path + "' 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return false;
  char buf[128] = {0};
  size_t n = std::fread(buf, 1, sizeof buf - 1, p);
  int status = pclose(p);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || n < 64) return false;
  hex->assign(buf, 64);
  return true;
}

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return fmt::format("{} ({})", name != nullptr ? name : "?", std::strerror(err));
}

}  // namespace snapdisk::crash
