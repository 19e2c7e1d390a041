// snapdisk/status.h — the error type returned across the engine boundary.
//
// Every engine call returns a Status instead of throwing. A Status is a code
// plus a human-readable message that names what failed and why; the FUSE
// layer maps the code to an errno (fs/errno_map.h) and logs the message.
// Status is a small value type: copyable, thread-compatible (no shared state).
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace snapdisk {

class [[nodiscard]] Status {
 public:
  enum class Code {
    kOk = 0,
    kNotFound,         // ENOENT: no such image, directory or snapshot
    kAlreadyExists,    // EEXIST: duplicate name
    kInvalidArgument,  // EINVAL: bad name, bad range, bad option
    kNameTooLong,      // ENAMETOOLONG: a name over 255 bytes
    kBusy,             // EBUSY: image has snapshots, snapshot is protected, ...
    kNoSpace,          // ENOSPC: the store's file system is full
    kCorruption,       // EIO: checksum mismatch or damaged metadata
    kIOError,          // EIO: the OS reported an I/O error
    kReadOnly,         // EROFS: frozen view, or store refuses writes after a failed sync
    kNotDirectory,     // ENOTDIR
    kIsDirectory,      // EISDIR
    kNotEmpty,         // ENOTEMPTY
    kNotSupported,     // EOPNOTSUPP
    kNoData,           // ENODATA: no such xattr
    kTooLarge,         // EFBIG: offset or size beyond the store's limit
    kPermission,       // EPERM/EACCES: operation not permitted
    kOutOfRange,       // ENXIO: lseek SEEK_DATA/SEEK_HOLE past the end
  };

  Status() = default;
  static Status OK() { return Status(); }
  static Status NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {Code::kAlreadyExists, std::move(m)}; }
  static Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
  static Status NameTooLong(std::string m) { return {Code::kNameTooLong, std::move(m)}; }
  static Status Busy(std::string m) { return {Code::kBusy, std::move(m)}; }
  static Status NoSpace(std::string m) { return {Code::kNoSpace, std::move(m)}; }
  static Status Corruption(std::string m) { return {Code::kCorruption, std::move(m)}; }
  static Status IOError(std::string m) { return {Code::kIOError, std::move(m)}; }
  static Status ReadOnly(std::string m) { return {Code::kReadOnly, std::move(m)}; }
  static Status NotDirectory(std::string m) { return {Code::kNotDirectory, std::move(m)}; }
  static Status IsDirectory(std::string m) { return {Code::kIsDirectory, std::move(m)}; }
  static Status NotEmpty(std::string m) { return {Code::kNotEmpty, std::move(m)}; }
  static Status NotSupported(std::string m) { return {Code::kNotSupported, std::move(m)}; }
  static Status NoData(std::string m) { return {Code::kNoData, std::move(m)}; }
  static Status TooLarge(std::string m) { return {Code::kTooLarge, std::move(m)}; }
  static Status Permission(std::string m) { return {Code::kPermission, std::move(m)}; }
  static Status OutOfRange(std::string m) { return {Code::kOutOfRange, std::move(m)}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  bool Is(Code c) const { return code_ == c; }
  // "NotFound: snapshot 'x' of image 'vm1.img'"
  std::string ToString() const;
  static std::string_view CodeName(Code c);

 private:
  Status(Code c, std::string m) : code_(c), message_(std::move(m)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

}  // namespace snapdisk

// Propagate a non-OK Status to the caller.
#define SNAPDISK_RETURN_IF_ERROR(expr)        \
  do {                                        \
    ::snapdisk::Status _st = (expr);          \
    if (!_st.ok()) return _st;                \
  } while (0)
