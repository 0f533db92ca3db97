#include "route_table.h"

#include <algorithm>

#include "common.h"

namespace nodevmm {

RouteTable::RouteTable() : routes_(std::make_shared<const std::vector<Route>>()) {}

// [{ kind: 1|2, start, end, mode, postedMask, shadowMask, shadowOffset, readValue, isrRead?, isrAck?,
//    mirrors?: [{ offset, mask }] }]
bool RouteTable::SetFromJs(Napi::Value value, size_t shadow_size, std::string* err) {
  if (!value.IsArray()) {
    *err = "routes must be an array";
    return false;
  }
  Napi::Array arr = value.As<Napi::Array>();
  auto table = std::make_shared<std::vector<Route>>();
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Object o = arr.Get(i).As<Napi::Object>();
    Route r{};
    r.kind = o.Get("kind").ToNumber().Uint32Value();
    if (!GetU64(o.Get("start"), &r.start) || !GetU64(o.Get("end"), &r.end) || r.end <= r.start) {
      *err = "route start/end invalid";
      return false;
    }
    r.mode = o.Get("mode").ToNumber().Uint32Value();
    r.posted_mask = o.Get("postedMask").ToNumber().Uint32Value();
    r.shadow_mask = o.Get("shadowMask").ToNumber().Uint32Value();
    r.shadow_offset = o.Get("shadowOffset").ToNumber().Uint32Value();
    r.isr_read = kNoIsr;
    r.isr_ack = kNoIsr;
    if (o.Get("isrRead").IsNumber() && o.Get("isrAck").IsNumber()) {
      r.isr_read = o.Get("isrRead").ToNumber().Uint32Value();
      r.isr_ack = o.Get("isrAck").ToNumber().Uint32Value();
      if ((r.isr_read & 3) || (r.isr_ack & 3) || r.isr_read >= r.end - r.start || r.isr_ack >= r.end - r.start) {
        *err = "route interrupt-status registers must be 4-byte aligned offsets inside the range";
        return false;
      }
    }
    if (o.Get("mirrors").IsArray()) {
      Napi::Array mirrors = o.Get("mirrors").As<Napi::Array>();
      for (uint32_t m = 0; m < mirrors.Length(); m++) {
        if (!mirrors.Get(m).IsObject()) {
          *err = "route mirrors must be { offset, mask } objects";
          return false;
        }
        Napi::Object mo = mirrors.Get(m).As<Napi::Object>();
        uint32_t off = mo.Get("offset").ToNumber().Uint32Value();
        uint32_t mask = mo.Get("mask").ToNumber().Uint32Value();
        if (off >= 31 || mask > 0xff || !(r.posted_mask & r.shadow_mask & (1u << off))) {
          *err = "a route mirror must be a posted and shadowed offset below 31 with a byte mask";
          return false;
        }
        r.mirror_mask |= 1u << off;
        r.mirror_and[off] = static_cast<uint8_t>(mask);
      }
    }
    bool uses_shadow = r.shadow_mask || r.posted_mask || r.isr_read != kNoIsr;
    if (uses_shadow && (r.shadow_offset + 32 > shadow_size || (r.shadow_offset & 31))) {
      *err = "route shadow block must be a 32-byte aligned block inside the shadow page";
      return false;
    }
    if (!GetU64(o.Get("readValue"), &r.read_value)) r.read_value = ~0ull;
    table->push_back(r);
  }
  std::sort(table->begin(), table->end(), [](const Route& a, const Route& b) { return a.kind != b.kind ? a.kind < b.kind : a.start < b.start; });
  for (size_t i = 1; i < table->size(); i++) {
    const Route& a = (*table)[i - 1];
    const Route& b = (*table)[i];
    if (a.kind == b.kind && b.start < a.end) {
      *err = "routes overlap";
      return false;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::atomic_store(&routes_, Routes(table));
  return true;
}

const Route* RouteTable::Find(uint32_t kind, uint64_t address, Routes* hold) const {
  *hold = std::atomic_load(&routes_);
  const std::vector<Route>& t = **hold;
  size_t lo = 0, hi = t.size();
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    const Route& r = t[mid];
    if (r.kind < kind || (r.kind == kind && r.end <= address)) lo = mid + 1;
    else hi = mid;
  }
  if (lo < t.size() && t[lo].kind == kind && t[lo].start <= address && address < t[lo].end) return &t[lo];
  return nullptr;
}

}  // namespace nodevmm
