// fs/fuse.h — the libfuse low-level API at the level snapdisk is written for.
// FUSE_USE_VERSION comes from the snapdisk_fs target (CMake), so every file
// sees the same API.
#pragma once

#ifndef FUSE_USE_VERSION
#error "FUSE_USE_VERSION must be set by the build (fs/CMakeLists.txt)"
#endif
#include <fuse_lowlevel.h>
