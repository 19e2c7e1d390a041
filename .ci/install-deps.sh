#!/usr/bin/env bash
# Installs everything snapdisk needs to build, run and test, from Debian's
# packages, as on a new machine (refreshes the package lists first; apt-get
# skips what is already installed). Used by .ci/run and examples/quickstart.sh.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config
  libfuse3-dev fuse3 librocksdb-dev libfmt-dev libcli11-dev nlohmann-json3-dev
  libxxhash-dev libabsl-dev liburing-dev libgtest-dev googletest
  # tools the integration tests and examples drive
  e2fsprogs attr util-linux mount coreutils qemu-utils fio strace kmod
)
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
echo "install-deps: ${packages[*]}"
as_root apt-get update -q
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
