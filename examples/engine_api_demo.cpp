// A small program on the engine API: create a store, write an image, take a
// snapshot, change the image, and read the snapshot back unchanged.
//   engine_api_demo /tmp/demo-store
#include <cstdio>
#include <memory>
#include <string>

#include "snapdisk/store.h"

using snapdisk::Status;

static int Fail(const char* what, const Status& s) {
  std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s STORE_DIR\n", argv[0]);
    return 2;
  }
  std::unique_ptr<snapdisk::Store> store;
  Status s = snapdisk::Store::Open(snapdisk::Options(), argv[1], &store);
  if (!s.ok()) return Fail("open store", s);

  snapdisk::NodeAttr img;
  s = store->CreateImage(snapdisk::kRootNode, "demo.img", 0644, 0, 0, &img);
  if (!s.ok()) return Fail("create image", s);
  std::unique_ptr<snapdisk::ImageHandle> live;
  if (!(s = store->OpenImage(img.id, snapdisk::kLive, true, &live)).ok()) return Fail("open", s);
  std::string before(4096, 'A'), after(4096, 'B');
  if (!(s = live->Write(0, before.data(), before.size())).ok()) return Fail("write", s);

  snapdisk::SnapshotInfo snap;
  if (!(s = store->CreateSnapshot(img.id, "first", &snap)).ok()) return Fail("snapshot", s);
  if (!(s = live->Write(0, after.data(), after.size())).ok()) return Fail("write", s);
  if (!(s = live->Sync()).ok()) return Fail("sync", s);

  std::unique_ptr<snapdisk::ImageHandle> frozen;
  if (!(s = store->OpenImage(img.id, snap.id, false, &frozen)).ok()) return Fail("open snapshot", s);
  std::string buf(4096, '\0');
  size_t n = 0;
  if (!(s = frozen->Read(0, buf.size(), buf.data(), &n)).ok()) return Fail("read snapshot", s);
  std::printf("snapshot '%s' (generation %llu) still reads '%c'; the live image reads '%c'\n", snap.name.c_str(),
              static_cast<unsigned long long>(snap.generation), buf[0], after[0]);
  return buf == before ? 0 : 1;
}
