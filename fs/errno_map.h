// fs/errno_map.h — the one place that turns an engine Status into an errno.
#pragma once

#include "snapdisk/status.h"

namespace snapdisk::fs {

// Returns 0 for OK, otherwise a positive errno for fuse_reply_err().
int ToErrno(const Status& status);

}  // namespace snapdisk::fs
