// fs/store_paths.h — naming engine nodes by path from the mount root, for
// the control channel and group snapshots (requests carry paths, not ids).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "snapdisk/store.h"

namespace snapdisk::fs {

// "team-a/db.img" (leading, trailing and doubled '/' ignored; "" is the
// root) to its node. NotFound names the missing component.
Status ResolvePath(Store* store, std::string_view path, NodeAttr* attr);

// Every image in the subtree of `node` (the node itself if it is an image),
// depth first, in directory order.
Status CollectImages(Store* store, NodeId node, std::vector<NodeId>* images);

}  // namespace snapdisk::fs
