// Status formatting and name validation.
#include "snapdisk/snapshot.h"
#include "snapdisk/status.h"

#include <fmt/format.h>

namespace snapdisk {

std::string_view Status::CodeName(Code c) {
  switch (c) {
    case Code::kOk: return "OK";
    case Code::kNotFound: return "NotFound";
    case Code::kAlreadyExists: return "AlreadyExists";
    case Code::kInvalidArgument: return "InvalidArgument";
    case Code::kNameTooLong: return "NameTooLong";
    case Code::kBusy: return "Busy";
    case Code::kNoSpace: return "NoSpace";
    case Code::kCorruption: return "Corruption";
    case Code::kIOError: return "IOError";
    case Code::kReadOnly: return "ReadOnly";
    case Code::kNotDirectory: return "NotDirectory";
    case Code::kIsDirectory: return "IsDirectory";
    case Code::kNotEmpty: return "NotEmpty";
    case Code::kNotSupported: return "NotSupported";
    case Code::kNoData: return "NoData";
    case Code::kTooLarge: return "TooLarge";
    case Code::kPermission: return "Permission";
    case Code::kOutOfRange: return "OutOfRange";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return fmt::format("{}: {}", CodeName(code_), message_);
}

Status ValidateName(std::string_view name) {
  if (name.empty()) return Status::InvalidArgument("empty name");
  if (name.size() > 255)
    return Status::NameTooLong(fmt::format("name of {} bytes (the limit is 255)", name.size()));
  if (name == "." || name == "..") return Status::InvalidArgument(fmt::format("'{}' is not a valid name", name));
  if (name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos)
    return Status::InvalidArgument("a name may not contain '/' or NUL");
  if (name.substr(0, 9) == ".snapdisk")
    return Status::InvalidArgument(fmt::format("'{}': names starting with .snapdisk are reserved", name));
  return Status::OK();
}

}  // namespace snapdisk
