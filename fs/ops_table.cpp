// Session setup (init) and the table of low-level callbacks.
#include "fs/log.h"
#include "fs/ops.h"

namespace snapdisk::fs {
namespace {

constexpr unsigned kMaxWrite = 1u << 20;

void OpInit(void*, fuse_conn_info* conn) {
  conn->max_write = kMaxWrite;
  conn->time_gran = 1;
  // No writeback cache: every write reaches the engine before it is
  // acknowledged, so snapshots taken through the mount see all of them.
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  // Always readdirplus, not the adaptive mode: `ls -l` reads the whole
  // directory before its first stat, so the adaptive kernel would switch to
  // plain readdir after the first page and then stat every entry by a round
  // trip (10,000 of them in a big snapshot folder).
  if (conn->capable & FUSE_CAP_READDIRPLUS) {
    conn->want |= FUSE_CAP_READDIRPLUS;
    conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
  }
  Log(LogLevel::kDebug, "init: protocol {}.{}, max_write {}", conn->proto_major, conn->proto_minor,
      conn->max_write);
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops{};
  ops.init = OpInit;
  ops.lookup = OpLookup;
  ops.forget = OpForget;
  ops.forget_multi = OpForgetMulti;
  ops.getattr = OpGetattr;
  ops.setattr = OpSetattr;
  ops.statfs = OpStatfs;
  ops.opendir = OpOpendir;
  ops.readdir = OpReaddir;
  ops.readdirplus = OpReaddirplus;
  ops.releasedir = OpReleasedir;
  ops.fsyncdir = OpFsyncdir;
  ops.mkdir = OpMkdir;
  ops.rmdir = OpRmdir;
  ops.unlink = OpUnlink;
  ops.rename = OpRename;
  ops.symlink = OpSymlink;
  ops.link = OpLink;
  ops.mknod = OpMknod;
  ops.create = OpCreate;
  ops.open = OpOpen;
  ops.read = OpRead;
  ops.write = OpWrite;
  ops.flush = OpFlush;
  ops.release = OpRelease;
  ops.fsync = OpFsync;
  ops.fallocate = OpFallocate;
  ops.lseek = OpLseek;
  ops.copy_file_range = OpCopyFileRange;
  ops.getxattr = OpGetxattr;
  ops.setxattr = OpSetxattr;
  ops.listxattr = OpListxattr;
  ops.removexattr = OpRemovexattr;
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& SnapdiskOps() {
  static const fuse_lowlevel_ops ops = MakeOps();
  return ops;
}

}  // namespace snapdisk::fs
