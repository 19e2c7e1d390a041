#include "fs/store_paths.h"

namespace snapdisk::fs {

Status ResolvePath(Store* store, std::string_view path, NodeAttr* attr) {
  SNAPDISK_RETURN_IF_ERROR(store->GetAttr(kRootNode, attr));
  size_t start = 0;
  while (start < path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(start, slash - start);
    start = slash + 1;
    if (part.empty() || part == ".") continue;
    if (attr->kind != NodeKind::kDirectory) {
      return Status::NotDirectory("'" + std::string(path) + "': a component is an image");
    }
    NodeAttr child;
    Status st = store->Lookup(attr->id, part, &child);
    if (st.Is(Status::Code::kNotFound)) {
      return Status::NotFound("no image or directory '" + std::string(path) + "'");
    }
    SNAPDISK_RETURN_IF_ERROR(st);
    *attr = child;
  }
  return Status::OK();
}

Status CollectImages(Store* store, NodeId node, std::vector<NodeId>* images) {
  NodeAttr attr;
  SNAPDISK_RETURN_IF_ERROR(store->GetAttr(node, &attr));
  if (attr.kind == NodeKind::kImage) {
    images->push_back(node);
    return Status::OK();
  }
  std::vector<DirEntry> children;
  SNAPDISK_RETURN_IF_ERROR(store->ReadDirectory(node, &children));
  for (const DirEntry& child : children) {
    if (child.kind == NodeKind::kImage) {
      images->push_back(child.id);
    } else {
      SNAPDISK_RETURN_IF_ERROR(CollectImages(store, child.id, images));
    }
  }
  return Status::OK();
}

}  // namespace snapdisk::fs
