#include "fs/mount_table.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace snapdisk::fs {
namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo (octal).
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      out += static_cast<char>(std::strtol(s.substr(i + 1, 3).c_str(), nullptr, 8));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

std::vector<SnapdiskMount> SnapdiskMounts() {
  std::vector<SnapdiskMount> mounts;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER_OPTIONS
    std::istringstream f(line);
    std::string id, parent, dev, root, mnt, word;
    f >> id >> parent >> dev >> root >> mnt;
    while (f >> word && word != "-") {
    }
    std::string type, source;
    f >> type >> source;
    source = Unescape(source);
    if (type == "fuse.snapdisk" && source.rfind("snapdisk:", 0) == 0)
      mounts.push_back({Unescape(mnt), source.substr(9)});
  }
  return mounts;
}

std::string StoreSourcePath(const std::string& store) {
  std::error_code ec;
  std::string abs_store = std::filesystem::absolute(store, ec).lexically_normal().string();
  if (ec) abs_store = store;
  if (abs_store.size() > 1 && abs_store.back() == '/') abs_store.pop_back();
  return abs_store;
}

std::string StoreInUseHint(const std::string& store) {
  const std::string abs_store = StoreSourcePath(store);
  std::string where;
  for (const SnapdiskMount& m : SnapdiskMounts())
    if (m.store == abs_store) where = m.mountpoint;
  if (!where.empty())
    return "it is mounted at " + where + ": unmount it first (snapdisk unmount " + where + ")";
  // Held, but not by a mount this namespace can see: most often a daemon
  // whose mount is gone and which is still syncing what was written (that
  // can take seconds after a large write), or an offline `snapdisk fsck`.
  return "it is not mounted here: the process holding it is still closing it (after an unmount the daemon "
         "writes its data to disk before it exits) or is checking it offline. Try again once that process "
         "has exited; `snapdisk unmount` waits for it";
}

}  // namespace snapdisk::fs
