#include "fs/group_snapshot.h"

#include <algorithm>
#include <string>
#include <vector>

#include "fs/inode.h"
#include "fs/log.h"
#include "fs/op_util.h"
#include "fs/store_paths.h"

namespace snapdisk::fs {

Status MirrorSetXattr(SnapFs& fs, uint64_t mirror_ino, std::string_view name,
                      std::string_view value, std::vector<uint64_t>* stale_folders) {
  if (name != kGroupSnapshotXattr) return ReadOnlyTree("setxattr");
  std::string_view snapshot = value.substr(0, value.find('\n'));
  std::vector<NodeId> images;
  if (snapshot.size() == value.size()) {
    SNAPDISK_RETURN_IF_ERROR(CollectImages(fs.store(), IdOf(mirror_ino), &images));
  } else {
    if (mirror_ino != kSnapshotsRootIno) {
      return Status::InvalidArgument(
          "a list of images (NAME\\npath...) is taken only on the .snapshots root");
    }
    std::string_view rest = value.substr(snapshot.size() + 1);
    while (!rest.empty()) {
      std::string_view path = rest.substr(0, rest.find('\n'));
      rest.remove_prefix(std::min(rest.size(), path.size() + 1));
      if (path.empty()) continue;
      NodeAttr attr;
      SNAPDISK_RETURN_IF_ERROR(ResolvePath(fs.store(), path, &attr));
      SNAPDISK_RETURN_IF_ERROR(CollectImages(fs.store(), attr.id, &images));
    }
    std::sort(images.begin(), images.end());
    images.erase(std::unique(images.begin(), images.end()), images.end());
  }
  if (images.empty()) {
    return Status::NotFound("no image to snapshot under '" + fs.store()->PathOf(IdOf(mirror_ino)) +
                            "'");
  }
  std::vector<SnapshotInfo> infos;
  SNAPDISK_RETURN_IF_ERROR(fs.store()->CreateGroupSnapshot(images, snapshot, &infos));
  for (NodeId image : images) {
    if (fs.DropTombstonesNamed(image, snapshot)) {
      stale_folders->push_back(MakeIno(InodeType::kSnapFolder, image));
    }
  }
  Log(LogLevel::kInfo, "group snapshot '{}' of {} image(s) under '/{}' created", snapshot,
      images.size(), fs.store()->PathOf(IdOf(mirror_ino)));
  return Status::OK();
}

}  // namespace snapdisk::fs
