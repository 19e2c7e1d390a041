#!/usr/bin/env bash
# A VM disk's life on a snapdisk mount: create, format, fill, snapshot,
# change, look at the old state read-only, clone, roll back, clean up.
#   bash examples/vm_disk_lifecycle.sh MOUNTPOINT     (as root: uses a loop device)
set -euo pipefail
MNT=${1:?usage: vm_disk_lifecycle.sh MOUNTPOINT}
work=$(mktemp -d)
trap 'umount -q "$work/fs" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/fs"

step() { printf '\n== %s\n' "$*"; }

step "create a 1 GiB sparse disk and put ext4 on it"
truncate -s 1G "$MNT/demo-vm.img"
mkfs.ext4 -q -F "$MNT/demo-vm.img"
mount -o loop "$MNT/demo-vm.img" "$work/fs"
echo "version 1" > "$work/fs/app.conf"
umount "$work/fs"

step "snapshot it (mkdir in .snapshots)"
time mkdir "$MNT/.snapshots/demo-vm.img/before-upgrade"
ls -l "$MNT/.snapshots/demo-vm.img/"

step "change the live disk"
mount -o loop "$MNT/demo-vm.img" "$work/fs"
echo "version 2" > "$work/fs/app.conf"
umount "$work/fs"

step "the frozen view still has the old file"
mount -o loop,ro,noload "$MNT/.snapshots/demo-vm.img/before-upgrade/demo-vm.img" "$work/fs"
cat "$work/fs/app.conf"
umount "$work/fs"

step "clone the snapshot into a new disk (copy_file_range: instant)"
time cp "$MNT/.snapshots/demo-vm.img/before-upgrade/demo-vm.img" "$MNT/demo-clone.img"

step "describe the snapshot"
setfattr -n user.description -v "state before the upgrade" "$MNT/.snapshots/demo-vm.img/before-upgrade"
getfattr -d "$MNT/.snapshots/demo-vm.img/before-upgrade"

step "roll the live disk back to the snapshot"
setfattr -n user.snapdisk.rollback -v before-upgrade "$MNT/demo-vm.img"
mount -o loop "$MNT/demo-vm.img" "$work/fs"
cat "$work/fs/app.conf"
umount "$work/fs"

step "clean up: a disk with snapshots cannot be removed (EBUSY) until they are gone"
rm "$MNT/demo-vm.img" || echo "(refused, as expected)"
rmdir "$MNT/.snapshots/demo-vm.img/before-upgrade"
rm "$MNT/demo-vm.img" "$MNT/demo-clone.img"
echo "done"
