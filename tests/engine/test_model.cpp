// The model test: thousands of random operations run against the engine and
// against a trivially correct in-memory model (one byte string per image, a
// frozen copy per snapshot), comparing what the engine reads with the model.
//
// Replay: every run prints its seed; rerun with
//   SNAPDISK_MODEL_SEED=<seed> SNAPDISK_MODEL_OPS=<n> engine_tests --gtest_filter='*ModelTest*'
// (the 16 KiB-block variant runs SNAPDISK_MODEL_OPS/2 operations).
// The operation sequence depends only on the seed (never on engine output), so
// a failure reproduces exactly; the failure message lists the last operations.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <memory>
#include <random>
#include <set>
#include <sstream>

#include "test_util.h"

namespace snapdisk::test {
namespace {

constexpr uint64_t kMaxSize = 4 * MiB;  // keeps the model small and the run fast
constexpr size_t kMaxImages = 6;
constexpr size_t kMaxSnapshotsPerImage = 6;
constexpr uint64_t kFullCheckEvery = 250;
constexpr size_t kLogTail = 60;

uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 0);
}

class ModelTest : public ::testing::TestWithParam<uint32_t> {
 protected:
  using Bytes = std::shared_ptr<std::string>;  // shared until written (copy-on-write)
  struct SnapModel {
    std::string name;
    SnapshotId id = 0;
    Bytes data;
  };
  struct ImageModel {
    std::string name;
    NodeId parent = kRootNode;
    NodeId id = 0;
    Bytes data;
    std::vector<SnapModel> snaps;  // oldest first, as ListSnapshots
    std::unique_ptr<ImageHandle> handle;  // kept open across ops, like a running VM
  };

  void SetUp() override {
    block_size_ = GetParam();
    seed_ = EnvU64("SNAPDISK_MODEL_SEED", 20261125);
    ops_ = EnvU64("SNAPDISK_MODEL_OPS", 3000);
    if (block_size_ != 64 * 1024) ops_ = (ops_ + 1) / 2;  // the second variant runs half as long
    rng_.seed(seed_ * 1000003 + block_size_);
    Status s = Store::Open(TestOptions(block_size_), dir_.path() + "/store", &store_);
    ASSERT_TRUE(s.ok()) << s.ToString();
    NodeAttr attr;
    ASSERT_OK(store_->MakeDirectory(kRootNode, "proj", 0755, 0, 0, &attr));
    proj_ = attr.id;
  }
  void TearDown() override {
    CloseAllHandles();
    store_.reset();
  }

  // ---- randomness ----------------------------------------------------------
  uint64_t Rand(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  bool Chance(unsigned percent) { return Rand(100) < percent; }
  ImageModel& PickImage() { return images_[Rand(images_.size())]; }

  // ---- model helpers -------------------------------------------------------
  static std::string& Mut(Bytes& b) {
    if (b.use_count() > 1) b = std::make_shared<std::string>(*b);
    return *b;
  }
  std::string Describe(const ImageModel& m) const { return m.name + "#" + std::to_string(m.id); }
  void Log(const std::string& line) {
    log_.push_back("#" + std::to_string(op_) + " " + line);
    if (log_.size() > kLogTail) log_.pop_front();
  }
  ImageHandle* Live(ImageModel& m) {
    if (!m.handle) {
      Status s = store_->OpenImage(m.id, kLive, true, &m.handle);
      EXPECT_TRUE(s.ok()) << "OpenImage(" << Describe(m) << ") -> " << s.ToString();
    }
    return m.handle.get();
  }
  void CloseAllHandles() {
    for (auto& m : images_) m.handle.reset();
    pinned_.clear();
  }

  // Data for a write at image offset `off`: pattern, zeros, or pattern with
  // some 4 KiB pieces zeroed (to exercise zero elision inside one write).
  std::string MakeData(uint64_t off, size_t len, std::string* kind) {
    const uint64_t r = Rand(100);
    if (r < 15) {
      *kind = "zeros";
      return Zeros(len);
    }
    std::string d = Pattern(len, off, seed_ * 7 + op_);
    if (r < 30) {
      *kind = "mixed";
      for (uint64_t piece = off / 4096 * 4096; piece < off + len; piece += 4096) {
        if (!Chance(40)) continue;
        uint64_t b = std::max(piece, off), e = std::min(piece + 4096, off + len);
        std::fill(d.begin() + (b - off), d.begin() + (e - off), '\0');
      }
    } else {
      *kind = "pattern";
    }
    return d;
  }

  // ---- operations --------------------------------------------------------------
  void OpCreateImage() {
    if (images_.size() >= kMaxImages) return;
    ImageModel m;
    m.name = "img" + std::to_string(op_) + "_" + std::to_string(images_.size());
    m.parent = Chance(30) ? proj_ : kRootNode;
    m.data = std::make_shared<std::string>();
    NodeAttr attr;
    ASSERT_OK(store_->CreateImage(m.parent, m.name, 0644, 0, 0, &attr));
    m.id = attr.id;
    Log("create " + Describe(m));
    images_.push_back(std::move(m));
  }

  void OpWrite() {
    ImageModel& m = PickImage();
    const uint64_t size = m.data->size();
    uint64_t off = 0, len = 0;
    switch (Rand(5)) {
      case 0: off = Rand(kMaxSize / 4096) * 4096; len = (1 + Rand(48)) * 4096; break;
      case 1: off = Rand(kMaxSize); len = 1 + Rand(600); break;
      case 2: off = Rand(kMaxSize); len = 1 + Rand(200 * KiB); break;
      case 3: off = Rand(kMaxSize / block_size_) * block_size_; len = (1 + Rand(3)) * block_size_; break;
      default: off = size - Rand(std::min<uint64_t>(size, 8 * KiB) + 1); len = 1 + Rand(100 * KiB); break;
    }
    off = std::min(off, kMaxSize - 1);
    len = std::min(len, kMaxSize - off);
    std::string kind;
    std::string data = MakeData(off, len, &kind);
    Log("write " + Describe(m) + " off=" + std::to_string(off) + " len=" + std::to_string(len) +
        " " + kind);
    ImageHandle* h = Live(m);
    ASSERT_NE(h, nullptr);
    ASSERT_OK(h->Write(off, data.data(), data.size()));
    std::string& d = Mut(m.data);
    if (d.size() < off + len) d.resize(off + len, '\0');
    d.replace(off, len, data);
  }

  void OpDiscard() {
    ImageModel& m = PickImage();
    const uint64_t size = m.data->size();
    if (size == 0) return;
    uint64_t off, len;
    if (Chance(50)) {
      off = Rand(size / 4096 + 1) * 4096;
      len = (1 + Rand(64)) * 4096;
    } else {
      off = Rand(size);
      len = 1 + Rand(300 * KiB);
    }
    if (off >= size) off = size - 1;
    len = std::min(len, size - off);
    Log("discard " + Describe(m) + " off=" + std::to_string(off) + " len=" + std::to_string(len));
    ImageHandle* h = Live(m);
    ASSERT_NE(h, nullptr);
    ASSERT_OK(h->Discard(off, len));
    Mut(m.data).replace(off, len, Zeros(len));
  }

  void OpResize() {
    ImageModel& m = PickImage();
    const uint64_t size = m.data->size();
    uint64_t new_size;
    switch (Rand(4)) {
      case 0: new_size = Rand(size + 1); break;                        // shrink
      case 1: new_size = size + Rand(kMaxSize - size + 1); break;      // grow
      case 2: new_size = Rand(kMaxSize / 4096 + 1) * 4096; break;      // aligned
      default: new_size = Chance(50) ? 0 : Rand(kMaxSize + 1); break;
    }
    Log("resize " + Describe(m) + " " + std::to_string(size) + " -> " + std::to_string(new_size));
    AttrChange ch;
    ch.set_size = true;
    ch.size = new_size;
    NodeAttr attr;
    ASSERT_OK(store_->SetAttr(m.id, ch, &attr));
    EXPECT_EQ(attr.size, new_size);
    Mut(m.data).resize(new_size, '\0');
  }

  void OpSnapshot() {
    ImageModel& m = PickImage();
    if (m.snaps.size() >= kMaxSnapshotsPerImage) return OpDeleteSnapshot(m);
    SnapModel s;
    s.name = "s" + std::to_string(op_);
    Log("snapshot " + Describe(m) + " " + s.name + " size=" + std::to_string(m.data->size()));
    SnapshotInfo info;
    ASSERT_OK(store_->CreateSnapshot(m.id, s.name, &info));
    EXPECT_EQ(info.size, m.data->size());
    s.id = info.id;
    s.data = m.data;  // frozen: the live side copies before its next write
    if (!m.snaps.empty()) {
      SnapshotInfo dup;
      EXPECT_STATUS(kAlreadyExists, store_->CreateSnapshot(m.id, m.snaps[0].name, &dup));
    }
    m.snaps.push_back(std::move(s));
  }

  void OpDeleteSnapshot(ImageModel& m) {
    if (m.snaps.empty()) return;
    const size_t i = Rand(m.snaps.size());
    Log("delete-snapshot " + Describe(m) + " " + m.snaps[i].name);
    ASSERT_OK(store_->DeleteSnapshot(m.id, m.snaps[i].name));
    m.snaps.erase(m.snaps.begin() + i);
  }

  void OpRollback() {
    ImageModel& m = PickImage();
    if (m.snaps.empty()) return;
    const SnapModel& s = m.snaps[Rand(m.snaps.size())];
    Log("rollback " + Describe(m) + " to " + s.name + " size=" + std::to_string(s.data->size()));
    if (m.handle && Chance(50)) {
      EXPECT_STATUS(kBusy, store_->Rollback(m.id, s.name, false));
    }
    m.handle.reset();
    ASSERT_OK(store_->Rollback(m.id, s.name, false));
    m.data = s.data;
  }

  void OpClone() {
    if (images_.size() >= kMaxImages) return;
    ImageModel& src = PickImage();
    const bool from_snapshot = !src.snaps.empty() && Chance(60);
    const SnapModel* snap = from_snapshot ? &src.snaps[Rand(src.snaps.size())] : nullptr;
    const bool via_copy_range = Chance(30);
    ImageModel m;
    m.name = "clone" + std::to_string(op_);
    m.parent = Chance(30) ? proj_ : kRootNode;
    m.data = snap ? snap->data : src.data;
    Log(std::string(via_copy_range ? "copy-range-clone " : "clone ") + Describe(src) + "@" +
        (snap ? snap->name : "live") + " -> " + m.name +
        " size=" + std::to_string(m.data->size()));
    NodeAttr attr;
    ASSERT_OK(store_->CreateImage(m.parent, m.name, 0644, 0, 0, &attr));
    m.id = attr.id;
    const SnapshotId sid = snap ? snap->id : kLive;
    if (via_copy_range) {
      uint64_t copied = 0;
      ASSERT_OK(store_->CopyRange(src.id, sid, 0, m.id, 0, uint64_t{1} << 36, &copied));
      EXPECT_EQ(copied, m.data->size());
    } else {
      ASSERT_OK(store_->CloneImage(src.id, sid, m.id));
    }
    images_.push_back(std::move(m));
  }

  void OpCopyRange() {
    ImageModel& src = PickImage();
    ImageModel& dst = PickImage();
    const bool from_snapshot = !src.snaps.empty() && Chance(40);
    const SnapModel* snap = from_snapshot ? &src.snaps[Rand(src.snaps.size())] : nullptr;
    const std::string& sdata = snap ? *snap->data : *src.data;
    uint64_t src_off, dst_off, len;
    if (Chance(40)) {  // block-aligned on both sides: the sharing path
      src_off = Rand(sdata.size() / block_size_ + 1) * block_size_;
      dst_off = Rand(kMaxSize / block_size_) * block_size_;
      len = (1 + Rand(4)) * block_size_;
    } else {
      src_off = Rand(sdata.size() + 1000);
      dst_off = Rand(kMaxSize);
      len = 1 + Rand(300 * KiB);
    }
    len = std::min(len, kMaxSize - dst_off);
    const uint64_t n = src_off >= sdata.size() ? 0 : std::min<uint64_t>(len, sdata.size() - src_off);
    if (&src == &dst && snap == nullptr && src_off < dst_off + n && dst_off < src_off + n) return;
    const std::string piece = n ? sdata.substr(src_off, n) : std::string();
    Log("copy-range " + Describe(src) + "@" + (snap ? snap->name : "live") +
        " off=" + std::to_string(src_off) + " -> " + Describe(dst) + " off=" +
        std::to_string(dst_off) + " len=" + std::to_string(len) + " (expect " +
        std::to_string(n) + ")");
    uint64_t copied = 0;
    ASSERT_OK(store_->CopyRange(src.id, snap ? snap->id : kLive, src_off, dst.id, dst_off, len,
                                &copied));
    ASSERT_EQ(copied, n);
    if (n > 0) {
      std::string& d = Mut(dst.data);
      if (d.size() < dst_off + n) d.resize(dst_off + n, '\0');
      d.replace(dst_off, n, piece);
    }
  }

  void OpRemoveImage() {
    if (images_.size() <= 1) return;
    const size_t i = Rand(images_.size());
    ImageModel& m = images_[i];
    Log("remove " + Describe(m) + " with " + std::to_string(m.snaps.size()) + " snapshots");
    m.handle.reset();
    if (!m.snaps.empty() && Chance(30)) {
      EXPECT_STATUS(kBusy, store_->RemoveImage(m.parent, m.name, false));
    }
    ASSERT_OK(store_->RemoveImage(m.parent, m.name, true));
    images_.erase(images_.begin() + i);
  }

  void OpRenameImage() {
    ImageModel& m = PickImage();
    const NodeId new_parent = Chance(50) ? proj_ : kRootNode;
    const std::string new_name = "mv" + std::to_string(op_);
    Log("rename " + Describe(m) + " -> " + (new_parent == proj_ ? "proj/" : "") + new_name);
    ASSERT_OK(store_->Rename(m.parent, m.name, new_parent, new_name, true));
    m.parent = new_parent;
    m.name = new_name;
  }

  void OpRenameSnapshot() {
    ImageModel& m = PickImage();
    if (m.snaps.empty()) return;
    SnapModel& s = m.snaps[Rand(m.snaps.size())];
    const std::string new_name = "n" + std::to_string(op_);
    Log("rename-snapshot " + Describe(m) + " " + s.name + " -> " + new_name);
    ASSERT_OK(store_->RenameSnapshot(m.id, s.name, new_name));
    s.name = new_name;
  }

  void OpCollectGarbage() {
    Log("collect-garbage");
    ASSERT_OK(store_->CollectGarbage());
  }

  void OpReopen() {
    Log("reopen");
    CloseAllHandles();
    store_.reset();
    Status s = Store::Open(TestOptions(block_size_), dir_.path() + "/store", &store_);
    ASSERT_TRUE(s.ok()) << "reopen -> " << s.ToString();
    for (auto& m : images_) {
      NodeAttr attr;
      ASSERT_OK(store_->Lookup(m.parent, m.name, &attr));
      EXPECT_EQ(attr.id, m.id) << m.name << " changed id across reopen";
      m.id = attr.id;
    }
  }

  // GetSpaceUsage is bounded by what the view can read: referenced is at most
  // the view's non-zero 4 KiB pieces (all-zero pieces store nothing) and at
  // least those (give or take a partial last piece); unique <= referenced.
  void OpCheckSpaceUsage() {
    ImageModel& m = PickImage();
    const SnapModel* s = (!m.snaps.empty() && Chance(50)) ? &m.snaps[Rand(m.snaps.size())] : nullptr;
    const std::string& d = s ? *s->data : *m.data;
    Log("space-usage " + Describe(m) + "@" + (s ? s->name : "live"));
    SpaceUsage u;
    ASSERT_OK(store_->GetSpaceUsage(m.id, s ? s->id : kLive, &u));
    uint64_t nonzero_pieces = 0;
    for (uint64_t off = 0; off < d.size(); off += 4096) {
      const size_t n = std::min<uint64_t>(4096, d.size() - off);
      if (std::string_view(d).substr(off, n).find_first_not_of('\0') != std::string_view::npos)
        ++nonzero_pieces;
    }
    EXPECT_LE(u.unique, u.referenced);
    EXPECT_LE(u.referenced, nonzero_pieces * 4096)
        << "referenced counts more than the view's non-zero 4 KiB pieces";
    EXPECT_GE(u.referenced + 4096, nonzero_pieces * 4096) << "referenced misses stored data";
  }

  // Snapshot handles held open across operations: what they read must not
  // change, even after their snapshot is deleted, rolled back to, or its
  // image removed, and the collector must respect them.
  void OpPinSnapshot() {
    if (pinned_.size() >= 3) {
      const size_t i = Rand(pinned_.size());
      Log("close-pinned " + pinned_[i].what);
      pinned_.erase(pinned_.begin() + i);
      return;
    }
    ImageModel& m = PickImage();
    if (m.snaps.empty()) return;
    const SnapModel& s = m.snaps[Rand(m.snaps.size())];
    Pinned p;
    p.what = Describe(m) + "@" + s.name + "#" + std::to_string(s.id);
    p.data = s.data;
    Log("open-pinned " + p.what);
    ASSERT_OK(store_->OpenImage(m.id, s.id, false, &p.handle));
    pinned_.push_back(std::move(p));
  }

  void CheckPinnedWindow() {
    Pinned& p = pinned_[Rand(pinned_.size())];
    const uint64_t off = Rand(p.data->size() + 100);
    const uint64_t len = 1 + Rand(256 * KiB);
    ASSERT_EQ(p.handle->Size(), p.data->size()) << "size through pinned handle " << p.what;
    std::string got;
    ASSERT_OK(ReadStr(p.handle.get(), off, len, &got));
    const std::string want = off >= p.data->size() ? "" : p.data->substr(off, len);
    const std::string mismatch = DescribeMismatch(got, want, off);
    ASSERT_TRUE(mismatch.empty()) << "read through pinned handle " << p.what << " off=" << off
                                  << " len=" << len << ": " << mismatch;
  }

  void OpGroupSnapshot() {
    if (images_.size() < 2) return;
    const size_t a = Rand(images_.size());
    const size_t b = (a + 1 + Rand(images_.size() - 1)) % images_.size();
    ImageModel& ma = images_[a];
    ImageModel& mb = images_[b];
    if (ma.snaps.size() >= kMaxSnapshotsPerImage || mb.snaps.size() >= kMaxSnapshotsPerImage) return;
    const std::string name = "g" + std::to_string(op_);
    Log("group-snapshot " + Describe(ma) + " " + Describe(mb) + " " + name);
    std::vector<SnapshotInfo> infos;
    ASSERT_OK(store_->CreateGroupSnapshot({ma.id, mb.id}, name, &infos));
    ASSERT_EQ(infos.size(), 2u);
    ma.snaps.push_back({name, infos[0].id, ma.data});
    mb.snaps.push_back({name, infos[1].id, mb.data});
  }

  void OpWriteToSnapshotRefused() {
    ImageModel& m = PickImage();
    if (m.snaps.empty()) return;
    const SnapModel& s = m.snaps[Rand(m.snaps.size())];
    Log("write-to-snapshot " + Describe(m) + "@" + s.name + " (must be ReadOnly)");
    std::unique_ptr<ImageHandle> h;
    ASSERT_OK(store_->OpenImage(m.id, s.id, false, &h));
    EXPECT_STATUS(kReadOnly, h->Write(0, "x", 1));
  }

  // ---- checks --------------------------------------------------------------------
  // Reads [off, off+len) of a view and compares it with the model.
  void CompareWindow(ImageModel& m, const SnapModel* s, uint64_t off, uint64_t len) {
    const std::string& want_all = s ? *s->data : *m.data;
    std::unique_ptr<ImageHandle> own;
    ImageHandle* h = nullptr;
    if (s == nullptr) {
      h = Live(m);
    } else {
      ASSERT_OK(store_->OpenImage(m.id, s->id, false, &own));
      h = own.get();
    }
    ASSERT_NE(h, nullptr);
    const std::string what = Describe(m) + "@" + (s ? s->name : "live");
    ASSERT_EQ(h->Size(), want_all.size()) << "size of " << what;
    std::string got;
    ASSERT_OK(ReadStr(h, off, len, &got));
    const std::string want = off >= want_all.size() ? "" : want_all.substr(off, len);
    const std::string mismatch = DescribeMismatch(got, want, off);
    ASSERT_TRUE(mismatch.empty()) << "read " << what << " off=" << off << " len=" << len << ": "
                                  << mismatch;
  }

  void CheckRandomWindow() {
    if (!pinned_.empty() && Chance(15)) return CheckPinnedWindow();
    if (images_.empty()) return;
    ImageModel& m = PickImage();
    const SnapModel* s = (!m.snaps.empty() && Chance(35)) ? &m.snaps[Rand(m.snaps.size())] : nullptr;
    const uint64_t size = s ? s->data->size() : m.data->size();
    const uint64_t off = Rand(size + 100);
    const uint64_t len = 1 + Rand(Chance(50) ? 8 * KiB : 256 * KiB);
    CompareWindow(m, s, off, len);
  }

  void FullCheck() {
    for (NodeId dir : {kRootNode, proj_}) {
      std::vector<DirEntry> entries;
      ASSERT_OK(store_->ReadDirectory(dir, &entries));
      std::set<std::string> got, want;
      for (auto& e : entries)
        if (!(dir == kRootNode && e.name == "proj")) got.insert(e.name);
      for (auto& m : images_)
        if (m.parent == dir) want.insert(m.name);
      ASSERT_EQ(got, want) << "directory listing of " << (dir == kRootNode ? "/" : "proj");
    }
    for (auto& m : images_) {
      NodeAttr attr;
      ASSERT_OK(store_->GetAttr(m.id, &attr));
      ASSERT_EQ(attr.size, m.data->size()) << "GetAttr size of " << Describe(m);
      CompareWindow(m, nullptr, 0, m.data->size() + 1);
      if (::testing::Test::HasFailure()) return;
      std::vector<SnapshotInfo> listed;
      ASSERT_OK(store_->ListSnapshots(m.id, &listed));
      std::vector<std::string> got, want;
      for (auto& i : listed) got.push_back(i.name + ":" + std::to_string(i.id));
      for (auto& s : m.snaps) want.push_back(s.name + ":" + std::to_string(s.id));
      ASSERT_EQ(got, want) << "snapshots of " << Describe(m);
      for (auto& s : m.snaps) {
        ASSERT_EQ(listed[&s - m.snaps.data()].size, s.data->size());
        CompareWindow(m, &s, 0, s.data->size() + 1);
        if (::testing::Test::HasFailure()) return;
      }
    }
  }

  void DumpLog(const std::string& why) {
    std::ostringstream os;
    os << why << "\n  seed=" << seed_ << " block_size=" << block_size_ << " failed at op #"
       << op_ << "\n  replay: SNAPDISK_MODEL_SEED=" << seed_ << " SNAPDISK_MODEL_OPS="
       << (block_size_ == 64 * 1024 ? op_ : 2 * op_)
       << " engine_tests --gtest_filter='"
       << ::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name() << "."
       << ::testing::UnitTest::GetInstance()->current_test_info()->name() << "'"
       << "\n  last " << log_.size() << " operations (oldest first):\n";
    for (auto& l : log_) os << "    " << l << "\n";
    os << "  images now:";
    for (auto& m : images_) {
      os << " " << Describe(m) << "(size=" << m.data->size() << ", snaps=";
      for (auto& s : m.snaps) os << s.name << "#" << s.id << "/" << s.data->size() << " ";
      os << ")";
    }
    ADD_FAILURE() << os.str();
  }

  void Run() {
    SCOPED_TRACE("SNAPDISK_MODEL_SEED=" + std::to_string(seed_));
    for (int i = 0; i < 2; ++i) OpCreateImage();
    for (op_ = 1; op_ <= ops_; ++op_) {
      const uint64_t r = Rand(1000);
      const auto started = std::chrono::steady_clock::now();
      if (r < 380) OpWrite();
      else if (r < 460) OpDiscard();
      else if (r < 520) OpResize();
      else if (r < 600) OpSnapshot();
      else if (r < 650) OpDeleteSnapshot(PickImage());
      else if (r < 690) OpRollback();
      else if (r < 740) OpClone();
      else if (r < 800) OpCopyRange();
      else if (r < 825) OpRemoveImage();
      else if (r < 845) OpCreateImage();
      else if (r < 865) OpRenameImage();
      else if (r < 885) OpRenameSnapshot();
      else if (r < 920) OpCollectGarbage();
      else if (r < 925) OpReopen();  // slow (~100-300 ms): RocksDB close and open
      else if (r < 935) OpCheckSpaceUsage();
      else if (r < 945) OpWriteToSnapshotRefused();
      else if (r < 960) OpPinSnapshot();
      else if (r < 970) OpGroupSnapshot();
      else {
        // Read-heavy step: a few extra window comparisons.
        for (int k = 0; k < 3 && !HasFailure(); ++k) CheckRandomWindow();
      }
      const auto op_done = std::chrono::steady_clock::now();
      if (!HasFailure()) CheckRandomWindow();
      if (!HasFailure() && op_ % kFullCheckEvery == 0) FullCheck();
      Account(r, op_done - started, std::chrono::steady_clock::now() - op_done);
      if (HasFailure()) return DumpLog("model mismatch or engine error");
    }
    --op_;
    FullCheck();
    if (HasFailure()) return DumpLog("final full check failed");
    OpReopen();
    FullCheck();
    if (HasFailure()) return DumpLog("full check after the final reopen failed");

    CheckReport report;
    ASSERT_OK(store_->Check(&report, {}));
    EXPECT_TRUE(report.clean()) << report.checksum_errors << " checksum errors, "
                                << report.index_errors << " index errors; first: "
                                << (report.problems.empty() ? "" : report.problems[0]);

    // Everything removed and collected: no space may leak.
    CloseAllHandles();
    for (auto& m : images_) {
      for (auto& s : m.snaps) ASSERT_OK(store_->SetSnapshotProtected(m.id, s.name, false));
      ASSERT_OK(store_->RemoveImage(m.parent, m.name, true));
    }
    images_.clear();
    ASSERT_OK(store_->CollectGarbage());
    StoreStats st;
    ASSERT_OK(store_->GetStats(&st));
    EXPECT_EQ(st.images, 0u);
    EXPECT_EQ(st.snapshots, 0u);
    EXPECT_EQ(st.stored_bytes, 0u) << "space leaked after removing every image and collecting";
    PrintProfile();
  }

  // Where the time goes, per kind of operation (printed at the end of a run).
  void Account(uint64_t r, std::chrono::steady_clock::duration op,
               std::chrono::steady_clock::duration check) {
    static constexpr uint64_t kBounds[] = {380, 460, 520, 600, 650, 690, 740, 800, 825, 845,
                                           865, 885, 920, 925, 935, 945, 960, 970, 1000};
    size_t k = 0;
    while (r >= kBounds[k]) ++k;
    profile_[k].count += 1;
    profile_[k].seconds += std::chrono::duration<double>(op).count();
    check_seconds_ += std::chrono::duration<double>(check).count();
  }
  void PrintProfile() const {
    static constexpr const char* kNames[] = {
        "write", "discard", "resize", "snapshot", "delete-snapshot", "rollback",
        "clone", "copy-range", "remove", "create", "rename", "rename-snapshot",
        "collect-garbage", "reopen", "space-usage", "write-to-snapshot", "pin-snapshot",
        "group-snapshot", "extra-reads"};
    std::printf("[ model    ] %llu ops, checks %.2f s;",
                static_cast<unsigned long long>(op_), check_seconds_);
    for (size_t k = 0; k < 19; ++k)
      std::printf(" %s %llu/%.2fs", kNames[k], static_cast<unsigned long long>(profile_[k].count),
                  profile_[k].seconds);
    std::printf("\n");
  }
  struct OpProfile {
    uint64_t count = 0;
    double seconds = 0;
  };
  OpProfile profile_[19];
  double check_seconds_ = 0;

  TempDir dir_;
  std::unique_ptr<Store> store_;
  uint32_t block_size_ = 64 * 1024;
  uint64_t seed_ = 0;
  uint64_t ops_ = 0;
  uint64_t op_ = 0;
  std::mt19937_64 rng_;
  NodeId proj_ = 0;
  std::vector<ImageModel> images_;
  std::deque<std::string> log_;
  struct Pinned {
    std::string what;
    Bytes data;
    std::unique_ptr<ImageHandle> handle;
  };
  std::vector<Pinned> pinned_;  // snapshot handles held open across operations
};

TEST_P(ModelTest, RandomOperationsMatchModel) { Run(); }

INSTANTIATE_TEST_SUITE_P(BlockSizes, ModelTest, ::testing::Values(64 * 1024, 16 * 1024),
                         [](const auto& info) { return std::to_string(info.param / 1024) + "KiB"; });

}  // namespace
}  // namespace snapdisk::test
