// fs/op_util.h — the boundary between a FUSE callback and its do_xxx() body.
//
// A callback runs its body through RunOp(), which turns a Status into an
// errno, logs it, and turns any exception into ENOMEM/EIO, so nothing throws
// into libfuse. Bodies never call fuse_reply_*; the callback replies exactly
// once, after RunOp returns.
#pragma once

#include <cerrno>
#include <exception>
#include <new>
#include <string_view>

#include "fs/errno_map.h"
#include "fs/fuse.h"
#include "fs/log.h"
#include "fs/snapfs.h"
#include "snapdisk/status.h"

namespace snapdisk::fs {

inline SnapFs& FsOf(fuse_req_t req) { return *static_cast<SnapFs*>(fuse_req_userdata(req)); }

// Runs `body` (returning Status); returns 0 or the errno to reply. Errors are
// logged unless they equal `quiet_errno` (expected misses such as ENOENT on
// lookup).
template <typename Body>
int RunOp(std::string_view op, uint64_t ino, std::string_view name, Body&& body,
          int quiet_errno = 0) noexcept {
  try {
    Status st = body();
    if (st.ok()) return 0;
    int err = ToErrno(st);
    if (err != quiet_errno) LogOpError(op, ino, name, err, st.message());
    return err;
  } catch (const std::bad_alloc&) {
    LogOpError(op, ino, name, ENOMEM, "out of memory");
    return ENOMEM;
  } catch (const std::exception& e) {
    LogOpError(op, ino, name, EIO, e.what());
    return EIO;
  } catch (...) {
    LogOpError(op, ino, name, EIO, "unknown exception");
    return EIO;
  }
}

// The open file behind fi->fh (files only; see SnapFs::AdoptHandle).
inline OpenFile* FileOf(const fuse_file_info* fi) {
  return fi ? reinterpret_cast<OpenFile*>(fi->fh) : nullptr;
}
inline ImageHandle* HandleOf(const fuse_file_info* fi) {
  OpenFile* file = FileOf(fi);
  return file ? file->image.get() : nullptr;
}

inline std::string_view NameOf(const char* name) { return name ? std::string_view(name) : ""; }

// The errno for writing anything under .snapshots/ that is not a snapshot
// operation.
inline Status ReadOnlyTree(std::string_view what) {
  return Status::ReadOnly(std::string(what) +
                          ": .snapshots is read-only except for snapshot "
                          "operations (mkdir, rmdir, mv within an image's folder)");
}

}  // namespace snapdisk::fs
