#include "fs/errno_map.h"

#include <cerrno>

namespace snapdisk::fs {

int ToErrno(const Status& status) {
  using Code = Status::Code;
  switch (status.code()) {
    case Code::kOk:
      return 0;
    case Code::kNotFound:
      return ENOENT;
    case Code::kAlreadyExists:
      return EEXIST;
    case Code::kInvalidArgument:
      return EINVAL;
    case Code::kNameTooLong:
      return ENAMETOOLONG;
    case Code::kBusy:
      return EBUSY;
    case Code::kNoSpace:
      return ENOSPC;
    case Code::kCorruption:
      return EIO;
    case Code::kIOError:
      return EIO;
    case Code::kReadOnly:
      return EROFS;
    case Code::kNotDirectory:
      return ENOTDIR;
    case Code::kIsDirectory:
      return EISDIR;
    case Code::kNotEmpty:
      return ENOTEMPTY;
    case Code::kNotSupported:
      return EOPNOTSUPP;
    case Code::kNoData:
      return ENODATA;
    case Code::kTooLarge:
      return EFBIG;
    case Code::kPermission:
      return EPERM;
    case Code::kOutOfRange:
      return ENXIO;
  }
  return EIO;  // a code this build does not know: never report success
}

}  // namespace snapdisk::fs
