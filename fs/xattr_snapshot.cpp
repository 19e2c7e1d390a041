// Extended attributes of snapshot directories: description, properties,
// protection and read-only facts (see xattr.h).
#include <sys/xattr.h>
#include <time.h>

#include <cstdio>

#include "fs/attr.h"
#include "fs/inode.h"
#include "fs/op_util.h"
#include "fs/xattr.h"

namespace snapdisk::fs {
namespace {

constexpr std::string_view kDescription = "user.description";
constexpr std::string_view kPropertyPrefix = "user.property.";
constexpr std::string_view kProtected = "user.snapdisk.protected";

// The snapshot behind a type-3 or type-4 inode; tombstones have no xattrs.
Status SnapshotOf(SnapFs& fs, uint64_t ino, SnapshotInfo* info) {
  SnapDir dir;
  SNAPDISK_RETURN_IF_ERROR(ResolveSnapDir(fs, IdOf(ino), &dir));
  if (dir.tombstone) return Status::NotFound("snapshot was deleted");
  *info = std::move(dir.info);
  return Status::OK();
}

Status ComputedFact(SnapFs& fs, const SnapshotInfo& info, std::string_view name,
                    std::string* value) {
  const std::string_view fact = name.substr(kReservedPrefix.size());
  if (fact == "created") {
    *value = FormatTimeNs(info.created_ns);
  } else if (fact == "size") {
    *value = std::to_string(info.size);
  } else if (fact == "generation") {
    *value = std::to_string(info.generation);
  } else if (fact == "id") {
    *value = std::to_string(info.id);
  } else if (fact == "protected") {
    value->assign(1, info.is_protected ? '1' : '0');
  } else if (fact == "referenced" || fact == "unique") {
    SpaceUsage usage;
    SNAPDISK_RETURN_IF_ERROR(fs.store()->GetSpaceUsage(info.image, info.id, &usage));
    *value = std::to_string(fact == "referenced" ? usage.referenced : usage.unique);
  } else {
    return Status::NoData("no such snapshot fact");
  }
  return Status::OK();
}

}  // namespace

std::string FormatTimeNs(int64_t ns) {
  int64_t sec = ns / 1000000000;
  int64_t nsec = ns % 1000000000;
  if (nsec < 0) {
    nsec += 1000000000;
    sec -= 1;
  }
  time_t t = static_cast<time_t>(sec);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(nsec));
  return buf;
}

Status SnapGetXattr(SnapFs& fs, uint64_t ino, std::string_view name, std::string* value) {
  SnapshotInfo info;
  Status st = SnapshotOf(fs, ino, &info);
  if (!st.ok()) return st.Is(Status::Code::kNotFound) ? Status::NoData(st.message()) : st;
  if (name == kDescription) {
    if (info.description.empty()) return Status::NoData("no description");
    *value = info.description;
    return Status::OK();
  }
  if (HasPrefix(name, kPropertyPrefix)) {
    auto it = info.properties.find(std::string(name.substr(kPropertyPrefix.size())));
    if (it == info.properties.end()) return Status::NoData("no such property");
    *value = it->second;
    return Status::OK();
  }
  if (HasPrefix(name, kReservedPrefix)) return ComputedFact(fs, info, name, value);
  return Status::NoData("snapshot directories keep only user.description and user.property.*");
}

Status SnapListXattr(SnapFs& fs, uint64_t ino, std::vector<std::string>* names) {
  names->clear();
  SnapshotInfo info;
  Status st = SnapshotOf(fs, ino, &info);
  if (st.Is(Status::Code::kNotFound)) return Status::OK();  // tombstone: nothing
  SNAPDISK_RETURN_IF_ERROR(st);
  if (!info.description.empty()) names->emplace_back(kDescription);
  for (const auto& [key, unused] : info.properties) {
    names->push_back(std::string(kPropertyPrefix) + key);
  }
  for (const char* fact :
       {"created", "size", "generation", "referenced", "unique", "id", "protected"}) {
    names->push_back(std::string(kReservedPrefix) + fact);
  }
  return Status::OK();
}

Status SnapSetXattr(SnapFs& fs, uint64_t ino, std::string_view name, std::string_view value,
                    int flags) {
  if (TypeOf(ino) != InodeType::kSnapDir) return ReadOnlyTree("setxattr");
  SnapshotInfo info;
  SNAPDISK_RETURN_IF_ERROR(SnapshotOf(fs, ino, &info));
  if (name == kProtected) {
    if (value != "0" && value != "1") {
      return Status::InvalidArgument("user.snapdisk.protected takes 0 or 1");
    }
    return fs.store()->SetSnapshotProtected(info.image, info.name, value == "1");
  }
  if (HasPrefix(name, kReservedPrefix)) {
    return Status::Permission(std::string(name) + " is read-only");
  }
  if (name == kDescription) {
    const bool exists = !info.description.empty();
    if ((flags & XATTR_CREATE) && exists) return Status::AlreadyExists("description is set");
    if ((flags & XATTR_REPLACE) && !exists) return Status::NoData("no description");
    return fs.store()->SetSnapshotDescription(info.image, info.name, value);
  }
  if (HasPrefix(name, kPropertyPrefix)) {
    std::string key(name.substr(kPropertyPrefix.size()));
    if (key.empty()) return Status::InvalidArgument("empty property key");
    const bool exists = info.properties.count(key) != 0;
    if ((flags & XATTR_CREATE) && exists) return Status::AlreadyExists("property is set");
    if ((flags & XATTR_REPLACE) && !exists) return Status::NoData("no such property");
    const std::string stored(value);
    return fs.store()->SetSnapshotProperty(info.image, info.name, key, &stored);
  }
  return Status::NotSupported(
      "snapshot directories keep only user.description and "
      "user.property.*");
}

Status SnapRemoveXattr(SnapFs& fs, uint64_t ino, std::string_view name) {
  if (TypeOf(ino) != InodeType::kSnapDir) return ReadOnlyTree("removexattr");
  SnapshotInfo info;
  SNAPDISK_RETURN_IF_ERROR(SnapshotOf(fs, ino, &info));
  if (HasPrefix(name, kReservedPrefix)) {
    return Status::Permission(std::string(name) + " cannot be removed");
  }
  if (name == kDescription) {
    if (info.description.empty()) return Status::NoData("no description");
    return fs.store()->SetSnapshotDescription(info.image, info.name, "");
  }
  if (HasPrefix(name, kPropertyPrefix)) {
    const std::string key(name.substr(kPropertyPrefix.size()));
    return fs.store()->SetSnapshotProperty(info.image, info.name, key, nullptr);
  }
  return Status::NoData("no such attribute");
}

}  // namespace snapdisk::fs
