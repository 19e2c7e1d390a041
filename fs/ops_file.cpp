// Image files: creation, open/release, read/write, fsync.
//
// fi->fh of an open file is an OpenFile* owned by SnapFs (AdoptHandle /
// ReleaseHandle): live images get a read-write or read-only handle on the
// live data, frozen views a read-only handle on their snapshot.
#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <time.h>

#include <memory>
#include <vector>

#include "fs/attr.h"
#include "fs/inode.h"
#include "fs/op_util.h"
#include "fs/ops.h"
#include "fs/uring_transport.h"

namespace snapdisk::fs {
namespace {

bool WantsWrite(int flags) { return (flags & O_ACCMODE) != O_RDONLY; }

Status DoCreateImage(fuse_req_t req, fuse_ino_t parent, std::string_view name, mode_t mode,
                     NodeAttr* attr) {
  SnapFs& fs = FsOf(req);
  if (TypeOf(parent) != InodeType::kLive) return ReadOnlyTree("create");
  if (!S_ISREG(mode)) return Status::Permission("only regular files (disk images) can be created");
  if (parent == kRootNode && name == kSnapshotsDirName)
    return Status::AlreadyExists("reserved name");
  const fuse_ctx* ctx = fuse_req_ctx(req);
  return fs.store()->CreateImage(IdOf(parent), name, mode & 07777, ctx->uid, ctx->gid, attr);
}

Status DoOpen(SnapFs& fs, fuse_ino_t ino, fuse_file_info* fi, std::unique_ptr<ImageHandle>* out) {
  switch (TypeOf(ino)) {
    case InodeType::kLive: {
      SNAPDISK_RETURN_IF_ERROR(fs.store()->OpenImage(IdOf(ino), kLive, WantsWrite(fi->flags), out));
      // Direct I/O (cache=direct, the default): the kernel passes reads
      // and writes straight through instead of keeping pages of the live
      // image. A guest keeps its own cache, rollback and clone need no
      // page invalidation, and, above all, a cached write makes the kernel
      // ask for security.capability (one more FUSE round trip) before
      // every write. The price: no shared mmap of a live image (ENODEV);
      // cache=page restores it.
      if (fs.config().live_direct_io) fi->direct_io = 1;
      // libfuse turns on atomic O_TRUNC: the kernel hands O_TRUNC to open
      // and sends no setattr, so open must truncate (even O_RDONLY|O_TRUNC,
      // which Linux honours once the permission check passed).
      if (fi->flags & O_TRUNC) {
        AttrChange change;
        change.set_size = true;
        change.size = 0;
        NodeAttr attr;
        Status st = fs.store()->SetAttr(IdOf(ino), change, &attr);
        if (!st.ok()) out->reset();
        return st;
      }
      return Status::OK();
    }
    case InodeType::kFrozen: {
      // Checked here, not left to permissions: root may not write either.
      // O_TRUNC would truncate (see above), so it is a write too.
      if (WantsWrite(fi->flags) || (fi->flags & O_TRUNC)) {
        return Status::ReadOnly("a frozen view cannot be written");
      }
      SnapshotInfo info;
      SNAPDISK_RETURN_IF_ERROR(ResolveSnapshot(fs, IdOf(ino), &info));
      SNAPDISK_RETURN_IF_ERROR(fs.store()->OpenImage(info.image, info.id, false, out));
      fi->keep_cache = 1;  // immutable: the page cache never goes stale
      return Status::OK();
    }
    default:
      return Status::IsDirectory("not a file");
  }
}

// Per-thread read buffer: reads are at most max_read (1 MiB) and a FUSE
// worker handles one request at a time.
std::vector<char>& ReadBuffer() {
  thread_local std::vector<char> buffer;
  return buffer;
}

// Writes change mtime and ctime (POSIX); the engine stamps them only when a
// write grows the image, so stamp here, at most once a second per handle.
Status StampMtime(SnapFs& fs, NodeId node, OpenFile* file) {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  int64_t stamped = file->mtime_stamped_sec.load(std::memory_order_relaxed);
  if (stamped == now.tv_sec ||
      !file->mtime_stamped_sec.compare_exchange_strong(stamped, now.tv_sec)) {
    return Status::OK();  // this second is stamped, or another thread is doing it
  }
  AttrChange change;
  change.set_mtime = true;
  change.mtime = Timestamp{now.tv_sec, static_cast<uint32_t>(now.tv_nsec)};
  NodeAttr attr;
  return fs.store()->SetAttr(node, change, &attr);
}

// Replies to an open. A live image served with direct I/O also gets
// FOPEN_PARALLEL_DIRECT_WRITES, which libfuse 3.14 has no fuse_file_info bit
// for (the reply is built here, as libfuse's fuse_reply_open would): without
// it the kernel takes the inode lock exclusively around every direct write,
// so two writers of one image (a VM's I/O threads, fio --numjobs) take turns
// even on distant blocks. The engine orders overlapping writes itself (block
// stripes); writes past the end still take the exclusive lock in the kernel.
int ReplyOpen(fuse_req_t req, const fuse_file_info* fi) {
  if (!fi->direct_io) return fuse_reply_open(req, fi);
  fuse_open_out out{};
  out.fh = fi->fh;
  out.open_flags = FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
  if (fi->keep_cache) out.open_flags |= FOPEN_KEEP_CACHE;
  if (fi->noflush) out.open_flags |= FOPEN_NOFLUSH;
  iovec iov{&out, sizeof(out)};
  return fuse_reply_iov(req, &iov, 1);
}

}  // namespace

void OpMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t) {
  fuse_entry_param e{};
  int err = RunOp("mknod", parent, NameOf(name), [&] {
    NodeAttr attr;
    SNAPDISK_RETURN_IF_ERROR(DoCreateImage(req, parent, NameOf(name), mode, &attr));
    return MakeEntry(FsOf(req), attr.id, &e);
  });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_entry(req, &e);
}

void OpCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi) {
  SnapFs& fs = FsOf(req);
  fuse_entry_param e{};
  OpenFile* raw = nullptr;
  int err = RunOp("create", parent, NameOf(name), [&] {
    NodeAttr attr;
    SNAPDISK_RETURN_IF_ERROR(DoCreateImage(req, parent, NameOf(name), mode, &attr));
    SNAPDISK_RETURN_IF_ERROR(MakeEntry(fs, attr.id, &e));
    std::unique_ptr<ImageHandle> handle;
    SNAPDISK_RETURN_IF_ERROR(fs.store()->OpenImage(attr.id, kLive, WantsWrite(fi->flags), &handle));
    raw = fs.AdoptHandle(std::move(handle));
    return Status::OK();
  });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fi->fh = reinterpret_cast<uint64_t>(raw);
  if (fs.config().live_direct_io) fi->direct_io = 1;  // as in DoOpen
  fi->noflush = 1;  // OpFlush has nothing to do: spare close() a round trip
  if (fuse_reply_create(req, &e, fi) != 0) fs.ReleaseHandle(raw);  // request was interrupted
}

void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  SnapFs& fs = FsOf(req);
  OpenFile* raw = nullptr;
  int err = RunOp("open", ino, "", [&] {
    std::unique_ptr<ImageHandle> handle;
    SNAPDISK_RETURN_IF_ERROR(DoOpen(fs, ino, fi, &handle));
    std::optional<struct stat> frozen;
    if (TypeOf(ino) == InodeType::kFrozen) {
      frozen.emplace();
      SNAPDISK_RETURN_IF_ERROR(StatInode(fs, ino, &*frozen));
    }
    raw = fs.AdoptHandle(std::move(handle), frozen);
    return Status::OK();
  });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fi->fh = reinterpret_cast<uint64_t>(raw);
  fi->noflush = 1;  // OpFlush has nothing to do: spare close() a round trip
  if (ReplyOpen(req, fi) != 0) fs.ReleaseHandle(raw);
}

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  char* data = nullptr;
  size_t got = 0;
  // A reference of our own: after the reply below the file may be released.
  std::shared_ptr<ImageHandle> handle = FileOf(fi)->image;
  int err = RunOp("read", ino, "", [&] {
    if (off < 0) return Status::InvalidArgument("negative offset");
    // Over io_uring the data goes straight into the ring entry's buffer.
    data = RingReplyBuffer(size);
    if (data == nullptr) {
      std::vector<char>& buffer = ReadBuffer();
      if (buffer.size() < size) buffer.resize(size);
      data = buffer.data();
    }
    // Whether this read will poll the disk is only known once it has: a
    // thread whose last read polled expects the next one to (a stream of
    // cold random reads) and stays on its CPU; one served from the page
    // cache floats (RingWork).
    thread_local bool last_read_polled = false;
    NoteRingWork(last_read_polled ? RingWork::kPollsForDisk : RingWork::kMayWaitForDisk);
    const uint64_t polled_before = PolledReadsOnThisThread();
    Status s = handle->Read(static_cast<uint64_t>(off), size, data, &got);
    last_read_polled = PolledReadsOnThisThread() != polled_before;
    return s;
  });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_buf(req, data, got);
  // The reader has its bytes: prefetch what its stream asks for next while
  // it uses them (after the reply, so that this is not on its path).
  handle->ReadAhead();
}

void OpWrite(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
             fuse_file_info* fi) {
  int err = RunOp("write", ino, "", [&] {
    if (TypeOf(ino) != InodeType::kLive) return Status::ReadOnly("a frozen view cannot be written");
    if (off < 0) return Status::InvalidArgument("negative offset");
    OpenFile* file = FileOf(fi);
    NoteRingWork(RingWork::kCpu);
    SNAPDISK_RETURN_IF_ERROR(file->image->Write(static_cast<uint64_t>(off), buf, size));
    return StampMtime(FsOf(req), IdOf(ino), file);
  });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_write(req, size);
}

// Nothing is buffered between write and the engine: close has nothing to
// flush. Durability is fsync's job.
void OpFlush(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

void OpRelease(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  FsOf(req).ReleaseHandle(FileOf(fi));
  fuse_reply_err(req, 0);
}

void OpFsync(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info* fi) {
  int err = RunOp("fsync", ino, "", [&] {
    if (TypeOf(ino) == InodeType::kFrozen) return Status::OK();  // immutable, nothing to sync
    ImageHandle* handle = HandleOf(fi);
    if (handle == nullptr) return FsOf(req).store()->SyncAll();
    return handle->Sync();
  });
  fuse_reply_err(req, err);
}

}  // namespace snapdisk::fs
