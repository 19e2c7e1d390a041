// Value encodings of the index records (see records.h and docs/format.md).
#include "records.h"

#include "coding.h"

namespace snapdisk::engine {

using coding::Reader;
using coding::Writer;

namespace {
constexpr uint64_t kMagic = 0x31304b5344504e53ull;  // "SNPDSK01" little-endian

Status Damaged(std::string_view what) {
  return Status::Corruption(std::string("damaged ") + std::string(what) + " record in the index");
}
}  // namespace

std::string FormatRecord::Encode() const {
  Writer w;
  w.U64(kMagic);
  w.U32(version);
  w.U32(block_size);
  return std::move(w.buffer());
}

Status FormatRecord::Decode(std::string_view v, FormatRecord* out) {
  Reader r(v);
  uint64_t magic = r.U64();
  out->version = r.U32();
  out->block_size = r.U32();
  if (!r.ok() || magic != kMagic) return Status::Corruption("not a snapdisk store (bad format record)");
  if (out->version < 1 || out->version > kFormatVersion)
    return Status::Corruption("store format version " + std::to_string(out->version) +
                              " is not supported by this build (supports " +
                              std::to_string(kFormatVersion) + ")");
  return Status::OK();
}

std::string Counters::Encode() const {
  Writer w;
  w.U64(next_node);
  w.U64(next_snapshot);
  return std::move(w.buffer());
}

Status Counters::Decode(std::string_view v, Counters* out) {
  Reader r(v);
  out->next_node = r.U64();
  out->next_snapshot = r.U64();
  return r.ok() ? Status::OK() : Damaged("counters");
}

std::string NodeRecord::Encode() const {
  Writer w;
  w.U64(id);
  w.U64(parent);
  w.Str(name);
  w.U8(static_cast<uint8_t>(kind));
  w.U32(mode);
  w.U32(uid);
  w.U32(gid);
  for (const Timestamp* t : {&atime, &mtime, &ctime}) {
    w.I64(t->sec);
    w.U32(t->nsec);
  }
  w.U8(linked ? 1 : 0);
  w.U32(static_cast<uint32_t>(xattrs.size()));
  for (const auto& [k, v] : xattrs) {
    w.Str(k);
    w.Str(v);
  }
  w.U64(size);
  w.U64(live_gen);
  w.U32(static_cast<uint32_t>(epochs.size()));
  for (const Epoch& e : epochs) {
    w.U64(e.start_gen);
    w.U64(e.base_image);
    w.U64(e.base_gen);
    w.U64(e.base_limit);
  }
  w.U8(is_clone ? 1 : 0);
  w.U64(origin_image);
  w.Str(origin_image_name);
  w.Str(origin_snapshot_name);
  return std::move(w.buffer());
}

Status NodeRecord::Decode(std::string_view v, NodeRecord* out) {
  Reader r(v);
  out->id = r.U64();
  out->parent = r.U64();
  out->name = r.Str();
  out->kind = static_cast<NodeKind>(r.U8());
  out->mode = r.U32();
  out->uid = r.U32();
  out->gid = r.U32();
  for (Timestamp* t : {&out->atime, &out->mtime, &out->ctime}) {
    t->sec = r.I64();
    t->nsec = r.U32();
  }
  out->linked = r.U8() != 0;
  uint32_t n = r.U32();
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    std::string k = r.Str();
    out->xattrs[k] = r.Str();
  }
  out->size = r.U64();
  out->live_gen = r.U64();
  uint32_t ne = r.U32();
  for (uint32_t i = 0; i < ne && r.ok(); ++i) {
    Epoch e;
    e.start_gen = r.U64();
    e.base_image = r.U64();
    e.base_gen = r.U64();
    e.base_limit = r.U64();
    out->epochs.push_back(e);
  }
  out->is_clone = r.U8() != 0;
  out->origin_image = r.U64();
  out->origin_image_name = r.Str();
  out->origin_snapshot_name = r.Str();
  if (!r.ok() || !r.done()) return Damaged("node");
  if (out->kind != NodeKind::kDirectory && out->kind != NodeKind::kImage) return Damaged("node");
  if (out->kind == NodeKind::kImage && out->epochs.empty()) return Damaged("image");
  return Status::OK();
}

std::string EncodeSnapshot(const SnapshotInfo& s) {
  Writer w;
  w.U64(s.id);
  w.U64(s.image);
  w.Str(s.name);
  w.U64(s.generation);
  w.I64(s.created_ns);
  w.U64(s.size);
  w.Str(s.description);
  w.U32(static_cast<uint32_t>(s.properties.size()));
  for (const auto& [k, v] : s.properties) {
    w.Str(k);
    w.Str(v);
  }
  w.U8(s.is_protected ? 1 : 0);
  w.U8(s.hidden ? 1 : 0);
  if (s.has_owner) {  // appended last: older records simply end before it
    w.U32(s.mode);
    w.U32(s.uid);
    w.U32(s.gid);
  }
  return std::move(w.buffer());
}

Status DecodeSnapshot(std::string_view v, SnapshotInfo* out) {
  Reader r(v);
  out->id = r.U64();
  out->image = r.U64();
  out->name = r.Str();
  out->generation = r.U64();
  out->created_ns = r.I64();
  out->size = r.U64();
  out->description = r.Str();
  uint32_t n = r.U32();
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    std::string k = r.Str();
    out->properties[k] = r.Str();
  }
  out->is_protected = r.U8() != 0;
  out->hidden = r.U8() != 0;
  out->has_owner = r.ok() && !r.done();
  if (out->has_owner) {
    out->mode = r.U32();
    out->uid = r.U32();
    out->gid = r.U32();
  }
  if (!r.ok() || !r.done()) return Damaged("snapshot");
  return Status::OK();
}

std::string VersionRecord::Encode() const {
  Writer w;
  w.U64(slot);
  w.U64(present);
  w.U64(data);
  for (uint32_t c : crc) w.U32(c);
  if (logged()) {
    w.U64(unit_mask);
    for (uint64_t u : units) w.U64(u);
  }
  return std::move(w.buffer());
}

Status VersionRecord::Decode(std::string_view v, uint32_t pieces, VersionRecord* out) {
  Reader r(v);
  out->slot = r.U64();
  out->present = r.U64();
  out->data = r.U64();
  out->crc.resize(pieces);
  for (uint32_t i = 0; i < pieces; ++i) out->crc[i] = r.U32();
  out->ClearUnits();
  if (out->logged()) {
    const uint64_t has = r.U64();
    if (!r.ok() || (pieces < 64 && has >> pieces) || (out->data & ~has) != 0) return Damaged("block version");
    out->unit_mask = has;
    for (int n = std::popcount(has); n > 0; --n) {
      out->units.push_back(r.U64());
      if (out->units.back() >= kLogSlot) return Damaged("block version");
    }
  }
  if (!r.ok() || !r.done() || (out->data & ~out->present) != 0) return Damaged("block version");
  return Status::OK();
}

}  // namespace snapdisk::engine
