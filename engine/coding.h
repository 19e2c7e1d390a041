// Byte-level encoding used by the index: big-endian fixed integers (so that
// RocksDB's bytewise order equals numeric order) and a tiny buffer writer /
// reader for record values. Decoding never reads past the input: a short or
// damaged value makes Reader::ok() false, which callers report as Corruption.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace snapdisk::coding {

inline void EncodeBE64(char* b, uint64_t v) {
  for (int i = 7; i >= 0; --i) { b[i] = static_cast<char>(v & 0xff); v >>= 8; }
}

inline void PutBE64(std::string* out, uint64_t v) {
  char b[8];
  EncodeBE64(b, v);
  out->append(b, 8);
}

inline uint64_t GetBE64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

class Writer {
 public:
  void U8(uint8_t v) { buf_.push_back(static_cast<char>(v)); }
  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void I64(int64_t v) { Raw(&v, 8); }
  void Str(std::string_view s) { U32(static_cast<uint32_t>(s.size())); buf_.append(s); }
  std::string& buffer() { return buf_; }

 private:
  void Raw(const void* p, size_t n) { buf_.append(static_cast<const char*>(p), n); }  // little-endian host
  std::string buf_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  uint8_t U8() { uint8_t v = 0; Raw(&v, 1); return v; }
  uint32_t U32() { uint32_t v = 0; Raw(&v, 4); return v; }
  uint64_t U64() { uint64_t v = 0; Raw(&v, 8); return v; }
  int64_t I64() { int64_t v = 0; Raw(&v, 8); return v; }
  std::string Str() {
    uint32_t n = U32();
    if (!ok_ || n > in_.size()) { ok_ = false; return {}; }
    std::string s(in_.substr(0, n));
    in_.remove_prefix(n);
    return s;
  }
  bool ok() const { return ok_; }
  bool done() const { return in_.empty(); }

 private:
  void Raw(void* p, size_t n) {
    if (!ok_ || in_.size() < n) { ok_ = false; return; }
    std::memcpy(p, in_.data(), n);
    in_.remove_prefix(n);
  }
  std::string_view in_;
  bool ok_ = true;
};

}  // namespace snapdisk::coding
