// fs/fuse_uring_abi.h — the kernel's FUSE-over-io_uring interface (Linux
// 6.14+, FUSE protocol 7.42+), which Debian 12's <linux/fuse.h> (7.38) does
// not have yet. Layouts as in the kernel's include/uapi/linux/fuse.h; the
// static_asserts pin the sizes that interface fixes. What the kernel does with
// them is written down in docs/transport.md.
#pragma once

#include <linux/fuse.h>

#include <cstddef>
#include <cstdint>

namespace snapdisk::fs::uring_abi {

// INIT flag (bit 41, i.e. bit 9 of fuse_init_in/out.flags2, valid only with
// FUSE_INIT_EXT in flags): offered by the kernel when the fuse module's
// enable_uring parameter is on; a server that sets it in its INIT reply must
// then register ring entries for every possible CPU, or requests wait.
inline constexpr uint64_t kOverIoUring = uint64_t{1} << 41;

inline constexpr size_t kInOutHeaderSize = 128;  // FUSE_URING_IN_OUT_HEADER_SZ
inline constexpr size_t kOpInOutSize = 128;      // FUSE_URING_OP_IN_OUT_SZ

struct EntInOut {  // struct fuse_uring_ent_in_out
  uint64_t flags;
  uint64_t commit_id;   // the request's unique; echoed back by COMMIT_AND_FETCH
  uint32_t payload_sz;  // bytes used in the payload buffer, both directions
  uint32_t padding;
  uint64_t reserved;
};

// struct fuse_uring_req_header: the first of an entry's two buffers.
struct ReqHeader {
  char in_out[kInOutHeaderSize];  // fuse_in_header in, fuse_out_header out
  char op_in[kOpInOutSize];       // the request's first argument (its op header), if any
  EntInOut ring_ent_in_out;
};

enum Cmd : uint32_t {  // enum fuse_uring_cmd: sqe->cmd_op
  kCmdRegister = 1,
  kCmdCommitAndFetch = 2,
};

struct CmdReq {  // struct fuse_uring_cmd_req: in the SQE's command area
  uint64_t flags;
  uint64_t commit_id;
  uint16_t qid;  // the queue: one per possible CPU, numbered by CPU
  uint8_t padding[6];
};

static_assert(sizeof(EntInOut) == 32);
static_assert(sizeof(ReqHeader) == 288);
static_assert(offsetof(ReqHeader, ring_ent_in_out) == 256);
static_assert(sizeof(CmdReq) == 24);
static_assert(sizeof(fuse_in_header) == 40);
static_assert(sizeof(fuse_out_header) == 16);
static_assert(offsetof(fuse_init_out, flags2) == 32);

}  // namespace snapdisk::fs::uring_abi
