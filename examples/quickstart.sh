#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a mounted snapdisk store:
# installs the dependencies, builds, mounts the default store and shows a
# short lifecycle (image, snapshot, frozen view, clone). Run as root.
#   STORE=/var/lib/snapdisk/default MOUNT=/mnt/snapdisk   (defaults)
# Unmount later with: snapdisk unmount /mnt/snapdisk   (or fusermount3 -u)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STORE=${STORE:-/var/lib/snapdisk/default}
MOUNT=${MOUNT:-/mnt/snapdisk}

bash .ci/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSNAPDISK_BUILD_TESTS=OFF
cmake --build build -j "$(nproc)"
install -m 0755 build/cli/snapdisk /usr/local/bin/snapdisk

mkdir -p "$MOUNT"
if mountpoint -q "$MOUNT"; then
  echo "quickstart: $MOUNT is already mounted; using it"
else
  snapdisk mount "$STORE" "$MOUNT"
fi
echo "quickstart: store $STORE is mounted at $MOUNT"

demo="$MOUNT/quickstart-demo.img"
if [ ! -e "$demo" ]; then
  set -x
  truncate -s 1G "$demo"
  printf 'hello from the first version\n' | dd of="$demo" conv=notrunc status=none
  mkdir "$MOUNT/.snapshots/quickstart-demo.img/first"
  printf 'second version!!!!!!!!!!!!!!\n' | dd of="$demo" conv=notrunc status=none
  head -c 29 "$MOUNT/.snapshots/quickstart-demo.img/first/quickstart-demo.img"
  head -c 29 "$demo"
  cp "$MOUNT/.snapshots/quickstart-demo.img/first/quickstart-demo.img" "$MOUNT/quickstart-clone.img"
  ls -l "$MOUNT" "$MOUNT/.snapshots/quickstart-demo.img"
  getfattr -d "$MOUNT/.snapshots/quickstart-demo.img/first"
  set +x
fi
echo "quickstart: done. Try: ls $MOUNT/.snapshots; snapdisk --help; bash examples/vm_disk_lifecycle.sh $MOUNT"
