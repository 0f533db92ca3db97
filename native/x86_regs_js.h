// The x86 register state in the shapes lib/hv/x86-state.ts gives JS (KVM's
// field names), shared by the KVM and WHP vCPU handles: each converts its
// hypervisor's structs to and from these, and the JS side is written once.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace nodevmm {

struct X86Segment {
  uint64_t base = 0;
  uint32_t limit = 0;
  uint16_t selector = 0;
  uint8_t type = 0, present = 0, dpl = 0, db = 0, s = 0, l = 0, g = 0, avl = 0, unusable = 0;
};

struct X86Table {
  uint64_t base = 0;
  uint16_t limit = 0;
};

// rax..r15, rip, rflags (struct kvm_regs order).
constexpr int kX86Gprs = 18;
extern const char* const kX86GprNames[kX86Gprs];

// cs, ds, es, fs, gs, ss, tr, ldt and cr0, cr2, cr3, cr4, cr8, efer, apicBase (struct kvm_sregs order).
constexpr int kX86Segments = 8;
constexpr int kX86Controls = 7;
extern const char* const kX86SegmentNames[kX86Segments];
extern const char* const kX86ControlNames[kX86Controls];

struct X86Sregs {
  X86Segment segments[kX86Segments];
  X86Table gdt, idt;
  uint64_t controls[kX86Controls] = {};
};

Napi::Object X86GprsToJs(Napi::Env env, const uint64_t (&gprs)[kX86Gprs]);
// Overlays the registers JS gave (`given[i]` set for each); false with `error`
// naming the register whose value is not a bigint or safe integer.
bool X86GprsFromJs(Napi::Object o, uint64_t (&gprs)[kX86Gprs], bool (&given)[kX86Gprs], std::string* error);

Napi::Object X86SregsToJs(Napi::Env env, const X86Sregs& s);
// Overlays the fields JS gave on `s` (a partial object keeps the rest); false
// with `error` naming the field whose value is not a bigint or safe integer.
bool X86SregsFromJs(Napi::Object o, X86Sregs* s, std::string* error);

}  // namespace nodevmm
