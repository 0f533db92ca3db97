// See x86_regs_js.h.
#include "x86_regs_js.h"

#include <type_traits>

#include "common.h"

namespace nodevmm {

const char* const kX86GprNames[kX86Gprs] = {"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8",
                                            "r9",  "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags"};
const char* const kX86SegmentNames[kX86Segments] = {"cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"};
const char* const kX86ControlNames[kX86Controls] = {"cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apicBase"};

namespace {

Napi::Object SegmentToJs(Napi::Env env, const X86Segment& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("base", Big(env, s.base));
  o.Set("limit", s.limit);
  o.Set("selector", s.selector);
  o.Set("type", s.type);
  o.Set("present", s.present);
  o.Set("dpl", s.dpl);
  o.Set("db", s.db);
  o.Set("s", s.s);
  o.Set("l", s.l);
  o.Set("g", s.g);
  o.Set("avl", s.avl);
  o.Set("unusable", s.unusable);
  return o;
}

bool SegmentFromJs(Napi::Value v, X86Segment* s) {
  if (!v.IsObject()) return true;  // absent: keep current
  Napi::Object o = v.As<Napi::Object>();
  if (o.Has("base") && !GetU64(o.Get("base"), &s->base)) return false;
  auto n = [&](const char* k, auto* field) {
    if (o.Has(k)) *field = static_cast<std::remove_reference_t<decltype(*field)>>(o.Get(k).ToNumber().Int64Value());
  };
  n("limit", &s->limit);
  n("selector", &s->selector);
  n("type", &s->type);
  n("present", &s->present);
  n("dpl", &s->dpl);
  n("db", &s->db);
  n("s", &s->s);
  n("l", &s->l);
  n("g", &s->g);
  n("avl", &s->avl);
  n("unusable", &s->unusable);
  return true;
}

Napi::Object TableToJs(Napi::Env env, const X86Table& t) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("base", Big(env, t.base));
  o.Set("limit", t.limit);
  return o;
}

bool TableFromJs(Napi::Value v, X86Table* t) {
  if (!v.IsObject()) return true;
  Napi::Object o = v.As<Napi::Object>();
  if (o.Has("base") && !GetU64(o.Get("base"), &t->base)) return false;
  if (o.Has("limit")) t->limit = static_cast<uint16_t>(o.Get("limit").ToNumber().Uint32Value());
  return true;
}

}  // namespace

Napi::Object X86GprsToJs(Napi::Env env, const uint64_t (&gprs)[kX86Gprs]) {
  Napi::Object o = Napi::Object::New(env);
  for (int i = 0; i < kX86Gprs; i++) o.Set(kX86GprNames[i], Big(env, gprs[i]));
  return o;
}

bool X86GprsFromJs(Napi::Object o, uint64_t (&gprs)[kX86Gprs], bool (&given)[kX86Gprs], std::string* error) {
  for (int i = 0; i < kX86Gprs; i++) {
    given[i] = o.Has(kX86GprNames[i]);
    if (given[i] && !GetU64(o.Get(kX86GprNames[i]), &gprs[i])) {
      *error = std::string("register ") + kX86GprNames[i] + " must be a bigint or a safe integer";
      return false;
    }
  }
  return true;
}

Napi::Object X86SregsToJs(Napi::Env env, const X86Sregs& s) {
  Napi::Object o = Napi::Object::New(env);
  for (int i = 0; i < kX86Segments; i++) o.Set(kX86SegmentNames[i], SegmentToJs(env, s.segments[i]));
  o.Set("gdt", TableToJs(env, s.gdt));
  o.Set("idt", TableToJs(env, s.idt));
  for (int i = 0; i < kX86Controls; i++) o.Set(kX86ControlNames[i], Big(env, s.controls[i]));
  return o;
}

bool X86SregsFromJs(Napi::Object o, X86Sregs* s, std::string* error) {
  for (int i = 0; i < kX86Segments; i++) {
    if (!SegmentFromJs(o.Get(kX86SegmentNames[i]), &s->segments[i])) {
      *error = std::string("segment ") + kX86SegmentNames[i] + " base must be a bigint or a safe integer";
      return false;
    }
  }
  if (!TableFromJs(o.Get("gdt"), &s->gdt) || !TableFromJs(o.Get("idt"), &s->idt)) {
    *error = "gdt and idt base must be a bigint or a safe integer";
    return false;
  }
  for (int i = 0; i < kX86Controls; i++) {
    if (o.Has(kX86ControlNames[i]) && !GetU64(o.Get(kX86ControlNames[i]), &s->controls[i])) {
      *error = std::string(kX86ControlNames[i]) + " must be a bigint or a safe integer";
      return false;
    }
  }
  return true;
}

}  // namespace nodevmm
