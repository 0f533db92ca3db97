// JS handle for a WHP vCPU: the x86 state lib/hv uses (KVM's shapes, from
// lib/hv/x86-state.ts, converted to and from WHV_REGISTER_VALUEs), the local
// APIC page, GVA translation, and the thread controls. Register calls are
// refused while the vCPU's thread is in the guest. Windows only.
#if defined(_WIN32)

#include <cstring>
#include <vector>

#include "common.h"
#include "wait_word.h"
#include "whp_vm.h"
#include "x86_regs_js.h"

namespace nodevmm {

Napi::FunctionReference* WhpVcpu::constructor = nullptr;

namespace {

const WHV_REGISTER_NAME kRegs[] = {WHvX64RegisterRax, WHvX64RegisterRbx, WHvX64RegisterRcx, WHvX64RegisterRdx, WHvX64RegisterRsi, WHvX64RegisterRdi,
                                   WHvX64RegisterRsp, WHvX64RegisterRbp, WHvX64RegisterR8,  WHvX64RegisterR9,  WHvX64RegisterR10, WHvX64RegisterR11,
                                   WHvX64RegisterR12, WHvX64RegisterR13, WHvX64RegisterR14, WHvX64RegisterR15, WHvX64RegisterRip, WHvX64RegisterRflags};
constexpr uint32_t kNumRegs = sizeof(kRegs) / sizeof(kRegs[0]);
static_assert(kNumRegs == kX86Gprs, "kRegs follows kX86GprNames");

const WHV_REGISTER_NAME kSegs[] = {WHvX64RegisterCs, WHvX64RegisterDs, WHvX64RegisterEs, WHvX64RegisterFs,
                                   WHvX64RegisterGs, WHvX64RegisterSs, WHvX64RegisterTr, WHvX64RegisterLdtr};
const WHV_REGISTER_NAME kCtls[] = {WHvX64RegisterCr0, WHvX64RegisterCr2, WHvX64RegisterCr3, WHvX64RegisterCr4,
                                   WHvX64RegisterCr8, WHvX64RegisterEfer, WHvX64RegisterApicBase};
// Sregs as one register list: 8 segments, gdt, idt, 7 control registers.
constexpr uint32_t kNumSregs = kX86Segments + 2 + kX86Controls;

// The MSRs WHP exposes as registers, by index (others are refused, as KVM
// refuses an MSR it does not know).
bool MsrRegister(uint32_t msr, WHV_REGISTER_NAME* out) {
  struct M {
    uint32_t msr;
    WHV_REGISTER_NAME reg;
  };
  static const M table[] = {
      {0x10, WHvX64RegisterTsc},          {0x1b, WHvX64RegisterApicBase},           {0xfe, WHvX64RegisterMsrMtrrCap},
      {0x174, WHvX64RegisterSysenterCs},  {0x175, WHvX64RegisterSysenterEsp},       {0x176, WHvX64RegisterSysenterEip},
      {0x277, WHvX64RegisterPat},         {0x2ff, WHvX64RegisterMsrMtrrDefType},    {0x250, WHvX64RegisterMsrMtrrFix64k00000},
      {0x258, WHvX64RegisterMsrMtrrFix16k80000}, {0x259, WHvX64RegisterMsrMtrrFix16kA0000},
      {0xc0000080, WHvX64RegisterEfer},   {0xc0000081, WHvX64RegisterStar},         {0xc0000082, WHvX64RegisterLstar},
      {0xc0000083, WHvX64RegisterCstar},  {0xc0000084, WHvX64RegisterSfmask},       {0xc0000102, WHvX64RegisterKernelGsBase},
      {0xc0000103, WHvX64RegisterTscAux},
  };
  for (const M& m : table) {
    if (m.msr == msr) {
      *out = m.reg;
      return true;
    }
  }
  // Variable-range MTRRs: base/mask pairs from 0x200; fixed 4K ranges from 0x268.
  if (msr >= 0x200 && msr < 0x210) {
    uint32_t n = (msr - 0x200) / 2;
    *out = static_cast<WHV_REGISTER_NAME>((msr & 1 ? WHvX64RegisterMsrMtrrPhysMask0 : WHvX64RegisterMsrMtrrPhysBase0) + n);
    return true;
  }
  if (msr >= 0x268 && msr <= 0x26f) {
    *out = static_cast<WHV_REGISTER_NAME>(WHvX64RegisterMsrMtrrFix4kC0000 + (msr - 0x268));
    return true;
  }
  return false;
}

X86Segment FromWhp(const WHV_X64_SEGMENT_REGISTER& w) {
  X86Segment s;
  s.base = w.Base;
  s.limit = w.Limit;
  s.selector = w.Selector;
  s.type = static_cast<uint8_t>(w.SegmentType);
  s.present = static_cast<uint8_t>(w.Present);
  s.dpl = static_cast<uint8_t>(w.DescriptorPrivilegeLevel);
  s.db = static_cast<uint8_t>(w.Default);
  s.s = static_cast<uint8_t>(w.NonSystemSegment);
  s.l = static_cast<uint8_t>(w.Long);
  s.g = static_cast<uint8_t>(w.Granularity);
  s.avl = static_cast<uint8_t>(w.Available);
  // WHP has no "unusable" bit: a segment that is not present is unusable.
  s.unusable = w.Present ? 0 : 1;
  return s;
}

void ToWhp(const X86Segment& s, WHV_X64_SEGMENT_REGISTER* w) {
  w->Base = s.base;
  w->Limit = s.limit;
  w->Selector = s.selector;
  w->SegmentType = s.type & 0xf;
  w->NonSystemSegment = s.s & 1;
  w->DescriptorPrivilegeLevel = s.dpl & 3;
  w->Present = (s.unusable ? 0 : s.present) & 1;
  w->Available = s.avl & 1;
  w->Long = s.l & 1;
  w->Default = s.db & 1;
  w->Granularity = s.g & 1;
}

void SregNames(WHV_REGISTER_NAME* names) {
  for (int i = 0; i < 8; i++) names[i] = kSegs[i];
  names[8] = WHvX64RegisterGdtr;
  names[9] = WHvX64RegisterIdtr;
  for (int i = 0; i < 7; i++) names[10 + i] = kCtls[i];
}

// The sregs register list (SregNames' order) as the shared shape, and back.
X86Sregs FromWhp(const WHV_REGISTER_VALUE* v) {
  X86Sregs s;
  for (int i = 0; i < kX86Segments; i++) s.segments[i] = FromWhp(v[i].Segment);
  s.gdt = {v[8].Table.Base, v[8].Table.Limit};
  s.idt = {v[9].Table.Base, v[9].Table.Limit};
  for (int i = 0; i < kX86Controls; i++) s.controls[i] = v[10 + i].Reg64;
  return s;
}

void ToWhp(const X86Sregs& s, WHV_REGISTER_VALUE* v) {
  for (int i = 0; i < kX86Segments; i++) ToWhp(s.segments[i], &v[i].Segment);
  v[8].Table.Base = s.gdt.base;
  v[8].Table.Limit = s.gdt.limit;
  v[9].Table.Base = s.idt.base;
  v[9].Table.Limit = s.idt.limit;
  for (int i = 0; i < kX86Controls; i++) v[10 + i].Reg64 = s.controls[i];
}

}  // namespace

Napi::Function WhpVcpu::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "WhpVcpu",
                                 {
                                     InstanceMethod("getRegs", &WhpVcpu::GetRegs),
                                     InstanceMethod("setRegs", &WhpVcpu::SetRegs),
                                     InstanceMethod("getSregs", &WhpVcpu::GetSregs),
                                     InstanceMethod("setSregs", &WhpVcpu::SetSregs),
                                     InstanceMethod("getMsrs", &WhpVcpu::GetMsrs),
                                     InstanceMethod("setMsrs", &WhpVcpu::SetMsrs),
                                     InstanceMethod("getLapic", &WhpVcpu::GetLapic),
                                     InstanceMethod("translate", &WhpVcpu::Translate),
                                     InstanceMethod("sharedBuffer", &WhpVcpu::SharedBuffer),
                                     InstanceMethod("start", &WhpVcpu::Start),
                                     InstanceMethod("resume", &WhpVcpu::Resume),
                                     InstanceMethod("pause", &WhpVcpu::Pause),
                                     InstanceMethod("stop", &WhpVcpu::Stop),
                                     InstanceMethod("completeExit", &WhpVcpu::CompleteExit),
                                     InstanceAccessor("state", &WhpVcpu::GetState, nullptr),
                                 });
  constructor = new Napi::FunctionReference(Napi::Persistent(f));
  return f;
}

WhpVcpu::WhpVcpu(const Napi::CallbackInfo& info) : Napi::ObjectWrap<WhpVcpu>(info) {}

void WhpVcpu::Attach(WhpPartition* p, Napi::Object p_obj, std::shared_ptr<WhpVcpuCore> core, uint32_t index) {
  partition_ = p;
  partition_ref_ = Napi::Persistent(p_obj);
  core_ = core;
  index_ = index;
}

bool WhpVcpu::Usable(Napi::Env env, bool need_stopped) {
  auto core = core_.lock();
  if (!core || !partition_ || partition_->destroyed_) {
    ThrowUsage(env, "the vcpu's partition was destroyed");
    return false;
  }
  if (need_stopped && core->thread().state() == VcpuState::kRunning) {
    Napi::Error e = Napi::Error::New(env, "vcpu " + std::to_string(index_) + " is running: pause it before reading or writing its registers");
    e.Set("code", "ERR_VCPU_RUNNING");
    e.ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

#define WHP_REGS(fn, names, n, values, what)                                                                       \
  do {                                                                                                             \
    HRESULT hr_ = Whp().fn(partition_->shared_->handle, index_, names, n, values);                                 \
    if (FAILED(hr_)) {                                                                                             \
      Napi::Error e_ = Napi::Error::New(env, std::string(what) + " of vcpu " + std::to_string(index_) + ": " + HresultMessage(#fn, hr_)); \
      e_.Set("code", "ERR_WHP");                                                                                   \
      e_.ThrowAsJavaScriptException();                                                                             \
      return env.Undefined();                                                                                      \
    }                                                                                                              \
  } while (0)

Napi::Value WhpVcpu::GetRegs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  WHV_REGISTER_VALUE v[kNumRegs];
  ZeroMemory(v, sizeof v);
  WHP_REGS(WHvGetVirtualProcessorRegisters, kRegs, kNumRegs, v, "get registers");
  uint64_t gprs[kX86Gprs];
  for (uint32_t i = 0; i < kNumRegs; i++) gprs[i] = v[i].Reg64;
  return X86GprsToJs(env, gprs);
}

// setRegs(partial): only the registers JS gave are written.
Napi::Value WhpVcpu::SetRegs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  if (!info[0].IsObject()) return ThrowUsage(env, "setRegs needs an object");
  uint64_t gprs[kX86Gprs] = {};
  bool given[kX86Gprs];
  std::string error;
  if (!X86GprsFromJs(info[0].As<Napi::Object>(), gprs, given, &error)) return ThrowUsage(env, error);
  WHV_REGISTER_NAME names[kNumRegs];
  WHV_REGISTER_VALUE v[kNumRegs];
  ZeroMemory(v, sizeof v);
  uint32_t n = 0;
  for (uint32_t i = 0; i < kNumRegs; i++) {
    if (!given[i]) continue;
    names[n] = kRegs[i];
    v[n++].Reg64 = gprs[i];
  }
  if (n) WHP_REGS(WHvSetVirtualProcessorRegisters, names, n, v, "set registers");
  return env.Undefined();
}

Napi::Value WhpVcpu::GetSregs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  WHV_REGISTER_NAME names[kNumSregs];
  WHV_REGISTER_VALUE v[kNumSregs];
  ZeroMemory(v, sizeof v);
  SregNames(names);
  WHP_REGS(WHvGetVirtualProcessorRegisters, names, kNumSregs, v, "get special registers");
  return X86SregsToJs(env, FromWhp(v));
}

// setSregs(partial): read all, overlay what JS gave, write all.
Napi::Value WhpVcpu::SetSregs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  if (!info[0].IsObject()) return ThrowUsage(env, "setSregs needs an object");
  WHV_REGISTER_NAME names[kNumSregs];
  WHV_REGISTER_VALUE v[kNumSregs];
  ZeroMemory(v, sizeof v);
  SregNames(names);
  WHP_REGS(WHvGetVirtualProcessorRegisters, names, kNumSregs, v, "get special registers");
  X86Sregs x = FromWhp(v);
  std::string error;
  if (!X86SregsFromJs(info[0].As<Napi::Object>(), &x, &error)) return ThrowUsage(env, error);
  ToWhp(x, v);
  WHP_REGS(WHvSetVirtualProcessorRegisters, names, kNumSregs, v, "set special registers");
  return env.Undefined();
}

// getMsrs(indices) -> [{ index, value }] for the MSRs WHP exposes as
// registers; an unknown index throws.
Napi::Value WhpVcpu::GetMsrs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  if (!info[0].IsArray()) return ThrowUsage(env, "getMsrs needs an array of indices");
  Napi::Array a = info[0].As<Napi::Array>();
  std::vector<WHV_REGISTER_NAME> names;
  std::vector<uint32_t> idx;
  for (uint32_t i = 0; i < a.Length(); i++) {
    uint32_t m = a.Get(i).ToNumber().Uint32Value();
    WHV_REGISTER_NAME r;
    if (!MsrRegister(m, &r)) return ThrowUsage(env, "msr " + std::to_string(m) + " is not one WHP exposes");
    names.push_back(r);
    idx.push_back(m);
  }
  std::vector<WHV_REGISTER_VALUE> v(names.size());
  if (!names.empty()) WHP_REGS(WHvGetVirtualProcessorRegisters, names.data(), static_cast<UINT32>(names.size()), v.data(), "get msrs");
  Napi::Array out = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); i++) {
    Napi::Object e = Napi::Object::New(env);
    e.Set("index", idx[i]);
    e.Set("value", Big(env, v[i].Reg64));
    out.Set(static_cast<uint32_t>(i), e);
  }
  return out;
}

// setMsrs([{ index, value }]) -> how many were set, in order (KVM_SET_MSRS's
// answer): stops at the first MSR WHP does not expose.
Napi::Value WhpVcpu::SetMsrs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  if (!info[0].IsArray()) return ThrowUsage(env, "setMsrs needs an array");
  Napi::Array a = info[0].As<Napi::Array>();
  std::vector<WHV_REGISTER_NAME> names;
  std::vector<WHV_REGISTER_VALUE> vals;
  for (uint32_t i = 0; i < a.Length(); i++) {
    if (!a.Get(i).IsObject()) break;
    Napi::Object e = a.Get(i).As<Napi::Object>();
    WHV_REGISTER_NAME r;
    uint64_t value = 0;
    if (!MsrRegister(e.Get("index").ToNumber().Uint32Value(), &r) || !GetU64(e.Get("value"), &value)) break;
    WHV_REGISTER_VALUE v;
    ZeroMemory(&v, sizeof v);
    v.Reg64 = value;
    names.push_back(r);
    vals.push_back(v);
  }
  if (!names.empty()) WHP_REGS(WHvSetVirtualProcessorRegisters, names.data(), static_cast<UINT32>(names.size()), vals.data(), "set msrs");
  return Napi::Number::New(env, static_cast<double>(names.size()));
}

// getLapic() -> the first 1 KiB of the xAPIC register page (KVM_GET_LAPIC's
// layout: register n at offset n * 16).
Napi::Value WhpVcpu::GetLapic(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  std::vector<uint8_t> page(4096);
  UINT32 written = 0;
  HRESULT hr = Whp().WHvGetVirtualProcessorInterruptControllerState2(partition_->shared_->handle, index_, page.data(), static_cast<UINT32>(page.size()), &written);
  if (FAILED(hr)) {
    Napi::Error e = Napi::Error::New(env, "get local apic of vcpu " + std::to_string(index_) + ": " + HresultMessage("WHvGetVirtualProcessorInterruptControllerState2", hr));
    e.Set("code", "ERR_WHP");
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array out = Napi::Uint8Array::New(env, 1024);
  std::memcpy(out.Data(), page.data(), 1024);
  return out;
}

// translate(gva) -> { gpa, valid, writeable, usermode } like KVM_TRANSLATE.
Napi::Value WhpVcpu::Translate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  uint64_t gva = 0;
  if (!GetU64(info[0], &gva)) return ThrowUsage(env, "translate needs an address");
  WHV_TRANSLATE_GVA_RESULT r;
  ZeroMemory(&r, sizeof r);
  WHV_GUEST_PHYSICAL_ADDRESS gpa = 0;
  HRESULT hr = Whp().WHvTranslateGva(partition_->shared_->handle, index_, gva, WHvTranslateGvaFlagValidateRead, &r, &gpa);
  Napi::Object o = Napi::Object::New(env);
  bool ok = SUCCEEDED(hr) && r.ResultCode == WHvTranslateGvaResultSuccess;
  o.Set("gpa", Big(env, ok ? gpa : 0));
  o.Set("valid", ok);
  o.Set("writeable", false);
  o.Set("usermode", false);
  return o;
}

Napi::Value WhpVcpu::SharedBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto core = core_.lock();
  if (!core) return ThrowUsage(env, "the vcpu's partition was destroyed");
  auto* hold = new std::shared_ptr<VcpuShared>(core->thread().shared_ref());
  return Napi::ArrayBuffer::New(
      env, core->thread().shared(), sizeof(VcpuShared), [](Napi::Env, void*, std::shared_ptr<VcpuShared>* h) { delete h; }, hold);
}

Napi::Value WhpVcpu::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, false)) return env.Undefined();
  std::string err;
  if (!core_.lock()->thread().Start(&err)) return ThrowUsage(env, err);
  return env.Undefined();
}

Napi::Value WhpVcpu::Resume(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, false)) return env.Undefined();
  core_.lock()->thread().Resume();
  return env.Undefined();
}

Napi::Value WhpVcpu::Pause(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, false)) return env.Undefined();
  core_.lock()->thread().Pause();
  return env.Undefined();
}

Napi::Value WhpVcpu::Stop(const Napi::CallbackInfo& info) {
  auto core = core_.lock();
  if (core) {
    core->thread().Stop();
    core->thread().Join();
  }
  return info.Env().Undefined();
}

// completeExit(): as KVM's Vcpu::CompleteExit (kvm_vcpu.cc): a wake only, JS moved the state itself.
Napi::Value WhpVcpu::CompleteExit(const Napi::CallbackInfo& info) {
  auto core = core_.lock();
  if (!core) return info.Env().Undefined();
  ExitMailbox& mb = core->thread().shared()->mailbox;
  if (mb.sleeping.load(std::memory_order_seq_cst)) WakeAll(&mb.state);
  return info.Env().Undefined();
}

Napi::Value WhpVcpu::GetState(const Napi::CallbackInfo& info) {
  auto core = core_.lock();
  const char* s = "destroyed";
  if (core) {
    switch (core->thread().state()) {
      case VcpuState::kCreated: s = "created"; break;
      case VcpuState::kPaused: s = "paused"; break;
      case VcpuState::kRunning: s = "running"; break;
      case VcpuState::kExited: s = "exited"; break;
      case VcpuState::kJoined: s = "joined"; break;
    }
  }
  return Napi::String::New(info.Env(), s);
}

}  // namespace nodevmm

#endif  // _WIN32
