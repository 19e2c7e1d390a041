#!/usr/bin/env bash
# Builds libfuse's passthrough_ll example (from libfuse3-dev's documentation)
# into DIR/bin/passthrough_ll, with the options bench/README.md names, and
# prints the binary's path. On failure says why on stderr and exits 1.
#
#   bench/build-passthrough.sh DIR
set -euo pipefail
dir="$1"
examples=/usr/share/doc/libfuse3-dev/examples
src=""
for f in "$examples/passthrough_ll.c" "$examples/passthrough_ll.c.gz"; do
  [[ -e "$f" ]] && { src=$f; break; }
done
if [[ -z "$src" ]]; then
  echo "$examples/passthrough_ll.c not found (install libfuse3-dev)" >&2
  exit 1
fi
mkdir -p "$dir/bin" "$dir/src"
cp "$examples"/*.h "$dir/src/" 2>/dev/null || true
if [[ "$src" == *.gz ]]; then zcat "$src" >"$dir/src/passthrough_ll.c"; else cp "$src" "$dir/src/"; fi
# shellcheck disable=SC2046
if ! cc -O2 -Wall -DHAVE_COPY_FILE_RANGE -DHAVE_FALLOCATE -DHAVE_POSIX_FALLOCATE -DHAVE_SETXATTR \
    -I"$dir/src" $(pkg-config --cflags fuse3) "$dir/src/passthrough_ll.c" \
    $(pkg-config --libs fuse3) -lpthread -o "$dir/bin/passthrough_ll" 2>"$dir/pt-build.log"; then
  echo "building passthrough_ll failed: $(tail -3 "$dir/pt-build.log")" >&2
  exit 1
fi
echo "$dir/bin/passthrough_ll"
