// tests/engine/test_util.h — shared helpers for the engine unit tests.
//
// Every test gets a fresh store in its own mkdtemp directory under /tmp,
// removed when the test ends. Stores are opened with background_gc=false so
// space accounting only changes when a test calls CollectGarbage().
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "snapdisk/image.h"
#include "snapdisk/options.h"
#include "snapdisk/snapshot.h"
#include "snapdisk/status.h"
#include "snapdisk/store.h"

namespace snapdisk::test {

// ---- Status assertions -----------------------------------------------------
// Each evaluates `expr` once, prints the expression and Status::ToString() on
// failure, and accepts a streamed message like any gtest assertion.
inline ::testing::AssertionResult StatusOk(const char* expr, const Status& s) {
  if (s.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << expr << " -> " << s.ToString();
}
inline ::testing::AssertionResult StatusIs(const char* expr, const Status& s, Status::Code want) {
  if (s.code() == want) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << expr << " -> " << (s.ok() ? "OK" : s.ToString())
                                       << " (expected " << Status::CodeName(want) << ")";
}
#define ASSERT_OK(expr) ASSERT_TRUE(::snapdisk::test::StatusOk(#expr, (expr)))
#define EXPECT_OK(expr) EXPECT_TRUE(::snapdisk::test::StatusOk(#expr, (expr)))
// Expects a specific failure code, e.g. EXPECT_STATUS(kBusy, s->DeleteSnapshot(...)).
#define EXPECT_STATUS(want_code, expr) \
  EXPECT_TRUE(::snapdisk::test::StatusIs(#expr, (expr), ::snapdisk::Status::Code::want_code))
#define ASSERT_STATUS(want_code, expr) \
  ASSERT_TRUE(::snapdisk::test::StatusIs(#expr, (expr), ::snapdisk::Status::Code::want_code))

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t GiB = 1024 * MiB;
constexpr uint64_t TiB = 1024 * GiB;

// ---- data patterns ---------------------------------------------------------
// A deterministic, position-dependent byte stream: the byte at image offset
// `pos` written with `seed` is PatternByte(seed, pos), so data that lands at
// the wrong offset (or comes from the wrong version) never compares equal.
inline uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
inline uint8_t PatternByte(uint64_t seed, uint64_t pos) {
  uint8_t b = static_cast<uint8_t>(Mix64(seed * 0x100000001b3ull ^ (pos >> 3)) >> ((pos & 7) * 8));
  // Never zero, so pattern data is never mistaken for (or elided as) a hole.
  return b == 0 ? 1 : b;
}
// Fills buf[0, len) with the pattern bytes of image range [pos, pos+len).
inline void FillPattern(char* buf, size_t len, uint64_t pos, uint64_t seed) {
  for (size_t i = 0; i < len; ++i) buf[i] = static_cast<char>(PatternByte(seed, pos + i));
}
inline std::string Pattern(size_t len, uint64_t pos, uint64_t seed) {
  std::string s(len, '\0');
  FillPattern(s.data(), len, pos, seed);
  return s;
}

// Index of the first byte where a and b differ (or the shorter length), for
// failure messages that say where, not just "not equal".
inline std::string DescribeMismatch(std::string_view got, std::string_view want,
                                    uint64_t base_offset = 0) {
  if (got.size() != want.size()) {
    return "length " + std::to_string(got.size()) + " != expected " + std::to_string(want.size());
  }
  size_t i = 0;
  while (i < got.size() && got[i] == want[i]) ++i;
  if (i == got.size()) return "";
  size_t last = got.size();
  while (last > i && got[last - 1] == want[last - 1]) --last;
  char bytes[32];
  std::snprintf(bytes, sizeof bytes, "got 0x%02x want 0x%02x", static_cast<uint8_t>(got[i]),
                static_cast<uint8_t>(want[i]));
  return "first mismatch at offset " + std::to_string(base_offset + i) + " (" + bytes +
         "), last mismatch at " + std::to_string(base_offset + last - 1) + ", " +
         std::to_string(got.size()) + " bytes compared";
}
inline ::testing::AssertionResult BytesEq(std::string_view got, std::string_view want,
                                         uint64_t base_offset) {
  std::string m = DescribeMismatch(got, want, base_offset);
  if (m.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << m;
}
// Compares byte strings, reporting where they differ instead of dumping them.
#define EXPECT_BYTES_EQ(got, want, base) EXPECT_TRUE(::snapdisk::test::BytesEq((got), (want), (base)))

// ---- handle helpers ----------------------------------------------------------
inline Status WriteStr(ImageHandle* h, uint64_t offset, std::string_view data) {
  return h->Write(offset, data.data(), data.size());
}
// Reads [offset, offset+len) (short at the end of the image) into *out.
inline Status ReadStr(ImageHandle* h, uint64_t offset, size_t len, std::string* out) {
  out->assign(len, '\xEE');
  size_t got = 0;
  Status s = h->Read(offset, len, out->data(), &got);
  if (!s.ok()) return s;
  if (got > len) return Status::InvalidArgument("Read reported more bytes than asked");
  out->resize(got);
  return s;
}
inline std::string Zeros(size_t len) { return std::string(len, '\0'); }

// ---- temp store directory ------------------------------------------------------
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/snapdisk-test-XXXXXX";
    const char* p = ::mkdtemp(tmpl);
    if (p == nullptr) {
      ADD_FAILURE() << "mkdtemp failed: " << std::strerror(errno);
      return;
    }
    path_ = p;
  }
  ~TempDir() {
    if (path_.empty()) return;
    if (std::getenv("SNAPDISK_KEEP_TEST_DIRS") != nullptr) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline Options TestOptions(uint32_t block_size = 64 * 1024) {
  Options o;
  o.create_if_missing = true;
  o.background_gc = false;  // deterministic: tests call CollectGarbage()
  o.block_size = block_size;
  return o;
}

// The store lives in a subdirectory, so tests can also check that Open
// creates a missing directory.
class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { OpenStore(); }
  void TearDown() override { store_.reset(); }

  std::string store_path() const { return dir_.path() + "/store"; }

  void OpenStore(const Options& options) {
    store_.reset();
    Status s = Store::Open(options, store_path(), &store_);
    ASSERT_TRUE(s.ok()) << "Store::Open(" << store_path() << ") -> " << s.ToString();
    ASSERT_NE(store_, nullptr);
  }
  void OpenStore() { OpenStore(TestOptions(block_size_)); }
  // Destroys the Store (flush and close) and opens it again.
  void Reopen() {
    store_.reset();
    OpenStore();
  }

  // Creates an image (or fails the test) and returns its id.
  NodeId MakeImage(std::string_view name, NodeId parent = kRootNode, uint64_t size = 0) {
    NodeAttr attr;
    Status s = store_->CreateImage(parent, name, 0644, 1000, 1000, &attr);
    EXPECT_TRUE(s.ok()) << "CreateImage(" << name << ") -> " << s.ToString();
    if (!s.ok()) return 0;
    if (size != 0) {
      AttrChange ch;
      ch.set_size = true;
      ch.size = size;
      NodeAttr after;
      Status r = store_->SetAttr(attr.id, ch, &after);
      EXPECT_TRUE(r.ok()) << "SetAttr(size=" << size << ") -> " << r.ToString();
    }
    return attr.id;
  }
  NodeId MakeDir(std::string_view name, NodeId parent = kRootNode) {
    NodeAttr attr;
    Status s = store_->MakeDirectory(parent, name, 0755, 1000, 1000, &attr);
    EXPECT_TRUE(s.ok()) << "MakeDirectory(" << name << ") -> " << s.ToString();
    return s.ok() ? attr.id : 0;
  }
  std::unique_ptr<ImageHandle> OpenLive(NodeId image) {
    std::unique_ptr<ImageHandle> h;
    Status s = store_->OpenImage(image, kLive, true, &h);
    EXPECT_TRUE(s.ok()) << "OpenImage(live) -> " << s.ToString();
    return h;
  }
  std::unique_ptr<ImageHandle> OpenSnap(NodeId image, SnapshotId snap) {
    std::unique_ptr<ImageHandle> h;
    Status s = store_->OpenImage(image, snap, false, &h);
    EXPECT_TRUE(s.ok()) << "OpenImage(snapshot " << snap << ") -> " << s.ToString();
    return h;
  }
  Status Resize(NodeId node, uint64_t size) {
    AttrChange ch;
    ch.set_size = true;
    ch.size = size;
    NodeAttr attr;
    return store_->SetAttr(node, ch, &attr);
  }
  uint64_t SizeOf(NodeId node) {
    NodeAttr attr;
    Status s = store_->GetAttr(node, &attr);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return attr.size;
  }
  // The full content of an image view (live or snapshot), read in 1 MiB chunks.
  std::string ReadAll(NodeId image, SnapshotId snap = kLive) {
    std::unique_ptr<ImageHandle> h;
    Status s = store_->OpenImage(image, snap, false, &h);
    EXPECT_TRUE(s.ok()) << "OpenImage -> " << s.ToString();
    if (!s.ok()) return "<open failed>";
    std::string all;
    uint64_t size = h->Size();
    all.reserve(size);
    std::string chunk;
    for (uint64_t off = 0; off < size; off += MiB) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(MiB, size - off));
      s = ReadStr(h.get(), off, n, &chunk);
      EXPECT_TRUE(s.ok()) << "Read at " << off << " -> " << s.ToString();
      if (!s.ok()) return "<read failed>";
      EXPECT_EQ(chunk.size(), n) << "short read at " << off;
      all += chunk;
    }
    return all;
  }
  uint64_t StoredBytes() {
    StoreStats st;
    Status s = store_->GetStats(&st);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return st.stored_bytes;
  }
  SpaceUsage Usage(NodeId image, SnapshotId snap = kLive) {
    SpaceUsage u;
    Status s = store_->GetSpaceUsage(image, snap, &u);
    EXPECT_TRUE(s.ok()) << "GetSpaceUsage -> " << s.ToString();
    return u;
  }
  SnapshotInfo Snap(NodeId image, std::string_view name) {
    SnapshotInfo info;
    Status s = store_->CreateSnapshot(image, name, &info);
    EXPECT_TRUE(s.ok()) << "CreateSnapshot(" << name << ") -> " << s.ToString();
    return info;
  }

  uint32_t block_size_ = 64 * 1024;
  TempDir dir_;
  std::unique_ptr<Store> store_;
};

}  // namespace snapdisk::test
