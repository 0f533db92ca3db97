// JS handle for a KVM vCPU: register state get/set (KVM_GET/SET_*), CPUID,
// and the thread controls. Register ioctls are refused while the vCPU's
// thread is inside KVM_RUN: KVM would block them until the guest exits.
#include <linux/futex.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common.h"
#include "kvm_vm.h"
#include "x86_regs_js.h"

namespace nodevmm {

Napi::FunctionReference* Vcpu::constructor = nullptr;

Napi::Function Vcpu::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "Vcpu",
                                 {
#if defined(__aarch64__)
                                     InstanceMethod("armVcpuInit", &Vcpu::ArmVcpuInit),
                                     InstanceMethod("getOneReg", &Vcpu::GetOneReg),
                                     InstanceMethod("setOneReg", &Vcpu::SetOneReg),
                                     InstanceMethod("getRegList", &Vcpu::GetRegList),
                                     InstanceMethod("getOneRegBytes", &Vcpu::GetOneRegBytes),
                                     InstanceMethod("setOneRegBytes", &Vcpu::SetOneRegBytes),
#endif
#if defined(__x86_64__)
                                     InstanceMethod("getRegs", &Vcpu::GetRegs),
                                     InstanceMethod("setRegs", &Vcpu::SetRegs),
                                     InstanceMethod("getSregs", &Vcpu::GetSregs),
                                     InstanceMethod("setSregs", &Vcpu::SetSregs),
                                     InstanceMethod("getFpu", &Vcpu::GetFpu),
                                     InstanceMethod("setFpu", &Vcpu::SetFpu),
                                     InstanceMethod("getMsrs", &Vcpu::GetMsrs),
                                     InstanceMethod("setMsrs", &Vcpu::SetMsrs),
                                     InstanceMethod("getLapic", &Vcpu::GetLapic),
                                     InstanceMethod("setLapic", &Vcpu::SetLapic),
                                     InstanceMethod("getXcrs", &Vcpu::GetXcrs),
                                     InstanceMethod("setXcrs", &Vcpu::SetXcrs),
                                     InstanceMethod("getVcpuEvents", &Vcpu::GetVcpuEvents),
                                     InstanceMethod("setVcpuEvents", &Vcpu::SetVcpuEvents),
                                     InstanceMethod("setCpuid2", &Vcpu::SetCpuid2),
                                     InstanceMethod("getCpuid2", &Vcpu::GetCpuid2),
                                     InstanceMethod("getXsave", &Vcpu::GetXsave),
                                     InstanceMethod("setXsave", &Vcpu::SetXsave),
                                     InstanceMethod("getDebugRegs", &Vcpu::GetDebugRegs),
                                     InstanceMethod("setDebugRegs", &Vcpu::SetDebugRegs),
                                     InstanceMethod("getTscKhz", &Vcpu::GetTscKhz),
                                     InstanceMethod("translate", &Vcpu::Translate),
                                     InstanceMethod("setGuestDebug", &Vcpu::SetGuestDebug),
#endif
                                     InstanceMethod("getMpState", &Vcpu::GetMpState),
                                     InstanceMethod("setMpState", &Vcpu::SetMpState),
                                     InstanceMethod("sharedBuffer", &Vcpu::SharedBuffer),
                                     InstanceMethod("start", &Vcpu::Start),
                                     InstanceMethod("resume", &Vcpu::Resume),
                                     InstanceMethod("pause", &Vcpu::Pause),
                                     InstanceMethod("stop", &Vcpu::Stop),
                                     InstanceMethod("completeExit", &Vcpu::CompleteExit),
                                     InstanceAccessor("state", &Vcpu::GetState, nullptr),
                                 });
  constructor = new Napi::FunctionReference(Napi::Persistent(f));
  return f;
}

Vcpu::Vcpu(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Vcpu>(info) {}

void Vcpu::Attach(Vm* vm, Napi::Object vm_obj, std::shared_ptr<VcpuCore> core) {
  vm_ = vm;
  vm_ref_ = Napi::Persistent(vm_obj);
  core_ = core;
}

bool Vcpu::Usable(Napi::Env env, bool need_stopped) {
  auto core = core_.lock();
  if (!core || !vm_ || vm_->aborting()) {
    ThrowUsage(env, "the vcpu's vm was destroyed");
    return false;
  }
  if (need_stopped && core->state() == VcpuState::kRunning) {
    Napi::Error e = Napi::Error::New(env, "vcpu " + std::to_string(core->index()) + " is running: pause it before reading or writing its registers");
    e.Set("code", "ERR_VCPU_RUNNING");
    e.ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

#define CORE_FD() (core_.lock()->fd())
#define VCPU_IOCTL(req, arg, what)                                                 \
  do {                                                                             \
    if (ioctl(CORE_FD(), req, arg) < 0) return ThrowErrno(env, errno, "ioctl", #req, what); \
  } while (0)

#if defined(__x86_64__)
namespace {
__u64* RegSlot(kvm_regs& r, int i) {
  __u64* f[] = {&r.rax, &r.rbx, &r.rcx, &r.rdx, &r.rsi, &r.rdi, &r.rsp, &r.rbp, &r.r8,
                &r.r9,  &r.r10, &r.r11, &r.r12, &r.r13, &r.r14, &r.r15, &r.rip, &r.rflags};
  return f[i];
}

kvm_segment* SegmentSlot(kvm_sregs& s, int i) {
  kvm_segment* f[] = {&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss, &s.tr, &s.ldt};
  return f[i];
}

__u64* ControlSlot(kvm_sregs& s, int i) {
  __u64* f[] = {&s.cr0, &s.cr2, &s.cr3, &s.cr4, &s.cr8, &s.efer, &s.apic_base};
  return f[i];
}

X86Sregs FromKvm(kvm_sregs& k) {
  X86Sregs s;
  for (int i = 0; i < kX86Segments; i++) {
    const kvm_segment& g = *SegmentSlot(k, i);
    s.segments[i] = {g.base, g.limit, g.selector, g.type, g.present, g.dpl, g.db, g.s, g.l, g.g, g.avl, g.unusable};
  }
  s.gdt = {k.gdt.base, k.gdt.limit};
  s.idt = {k.idt.base, k.idt.limit};
  for (int i = 0; i < kX86Controls; i++) s.controls[i] = *ControlSlot(k, i);
  return s;
}

void ToKvm(const X86Sregs& s, kvm_sregs* k) {
  for (int i = 0; i < kX86Segments; i++) {
    const X86Segment& x = s.segments[i];
    kvm_segment& g = *SegmentSlot(*k, i);
    g.base = x.base;
    g.limit = x.limit;
    g.selector = x.selector;
    g.type = x.type;
    g.present = x.present;
    g.dpl = x.dpl;
    g.db = x.db;
    g.s = x.s;
    g.l = x.l;
    g.g = x.g;
    g.avl = x.avl;
    g.unusable = x.unusable;
  }
  k->gdt.base = s.gdt.base;
  k->gdt.limit = s.gdt.limit;
  k->idt.base = s.idt.base;
  k->idt.limit = s.idt.limit;
  for (int i = 0; i < kX86Controls; i++) *ControlSlot(*k, i) = s.controls[i];
}

Napi::Buffer<uint8_t> CopyOut(Napi::Env env, const void* p, size_t n) { return Napi::Buffer<uint8_t>::Copy(env, static_cast<const uint8_t*>(p), n); }

bool CopyIn(Napi::Value v, void* p, size_t n) {
  if (!v.IsTypedArray() && !v.IsBuffer()) return false;
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  if (a.ByteLength() != n) return false;
  std::memcpy(p, a.Data(), n);
  return true;
}
}  // namespace

Napi::Value Vcpu::GetRegs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_regs r{};
  VCPU_IOCTL(KVM_GET_REGS, &r, "get registers");
  uint64_t gprs[kX86Gprs];
  for (int i = 0; i < kX86Gprs; i++) gprs[i] = *RegSlot(r, i);
  return X86GprsToJs(env, gprs);
}

// setRegs(partial): fields not given keep their current values.
Napi::Value Vcpu::SetRegs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  if (!info[0].IsObject()) return ThrowUsage(env, "registers must be an object");
  kvm_regs r{};
  VCPU_IOCTL(KVM_GET_REGS, &r, "get registers");
  uint64_t gprs[kX86Gprs];
  bool given[kX86Gprs];
  for (int i = 0; i < kX86Gprs; i++) gprs[i] = *RegSlot(r, i);
  std::string error;
  if (!X86GprsFromJs(info[0].As<Napi::Object>(), gprs, given, &error)) return ThrowUsage(env, error);
  for (int i = 0; i < kX86Gprs; i++) *RegSlot(r, i) = gprs[i];
  VCPU_IOCTL(KVM_SET_REGS, &r, "set registers");
  return env.Undefined();
}

Napi::Value Vcpu::GetSregs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_sregs s{};
  VCPU_IOCTL(KVM_GET_SREGS, &s, "get special registers");
  return X86SregsToJs(env, FromKvm(s));
}

// setSregs(partial): read all, overlay what JS gave, write all.
Napi::Value Vcpu::SetSregs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  if (!info[0].IsObject()) return ThrowUsage(env, "special registers must be an object");
  kvm_sregs s{};
  VCPU_IOCTL(KVM_GET_SREGS, &s, "get special registers");
  X86Sregs x = FromKvm(s);
  std::string error;
  if (!X86SregsFromJs(info[0].As<Napi::Object>(), &x, &error)) return ThrowUsage(env, error);
  ToKvm(x, &s);
  VCPU_IOCTL(KVM_SET_SREGS, &s, "set special registers");
  return env.Undefined();
}

// FPU state as its raw struct kvm_fpu bytes (416 bytes); lib/hv decodes it.
Napi::Value Vcpu::GetFpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_fpu f{};
  VCPU_IOCTL(KVM_GET_FPU, &f, "get fpu");
  return CopyOut(env, &f, sizeof f);
}

Napi::Value Vcpu::SetFpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_fpu f{};
  if (!CopyIn(info[0], &f, sizeof f)) return ThrowUsage(env, "fpu state must be a " + std::to_string(sizeof f) + "-byte Uint8Array");
  VCPU_IOCTL(KVM_SET_FPU, &f, "set fpu");
  return env.Undefined();
}

// getMsrs([index...]) -> [{index, value}] for the MSRs KVM returned.
Napi::Value Vcpu::GetMsrs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  if (!info[0].IsArray()) return ThrowUsage(env, "msr indices must be an array");
  Napi::Array a = info[0].As<Napi::Array>();
  uint32_t n = a.Length();
  std::vector<uint8_t> buf(sizeof(kvm_msrs) + n * sizeof(kvm_msr_entry));
  auto* m = reinterpret_cast<kvm_msrs*>(buf.data());
  m->nmsrs = n;
  for (uint32_t i = 0; i < n; i++) m->entries[i].index = a.Get(i).ToNumber().Uint32Value();
  int got = ioctl(CORE_FD(), KVM_GET_MSRS, m);
  if (got < 0) return ThrowErrno(env, errno, "ioctl", "KVM_GET_MSRS", "get msrs");
  Napi::Array out = Napi::Array::New(env, got);
  for (int i = 0; i < got; i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", m->entries[i].index);
    o.Set("value", Big(env, m->entries[i].data));
    out.Set(i, o);
  }
  return out;
}

// setMsrs([{index, value}]) -> number of MSRs KVM accepted (it stops at the first it refuses).
Napi::Value Vcpu::SetMsrs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  if (!info[0].IsArray()) return ThrowUsage(env, "msrs must be an array");
  Napi::Array a = info[0].As<Napi::Array>();
  uint32_t n = a.Length();
  std::vector<uint8_t> buf(sizeof(kvm_msrs) + n * sizeof(kvm_msr_entry));
  auto* m = reinterpret_cast<kvm_msrs*>(buf.data());
  m->nmsrs = n;
  for (uint32_t i = 0; i < n; i++) {
    Napi::Object o = a.Get(i).As<Napi::Object>();
    m->entries[i].index = o.Get("index").ToNumber().Uint32Value();
    uint64_t v;
    if (!GetU64(o.Get("value"), &v)) return ThrowUsage(env, "msr value must be a bigint or safe integer");
    m->entries[i].data = v;
  }
  int set = ioctl(CORE_FD(), KVM_SET_MSRS, m);
  if (set < 0) return ThrowErrno(env, errno, "ioctl", "KVM_SET_MSRS", "set msrs");
  return Napi::Number::New(env, set);
}

Napi::Value Vcpu::GetLapic(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_lapic_state l{};
  VCPU_IOCTL(KVM_GET_LAPIC, &l, "get local apic");
  return CopyOut(env, &l, sizeof l);
}

Napi::Value Vcpu::SetLapic(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_lapic_state l{};
  if (!CopyIn(info[0], &l, sizeof l)) return ThrowUsage(env, "lapic state must be a 1024-byte Uint8Array");
  VCPU_IOCTL(KVM_SET_LAPIC, &l, "set local apic");
  return env.Undefined();
}

Napi::Value Vcpu::GetXcrs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_xcrs x{};
  VCPU_IOCTL(KVM_GET_XCRS, &x, "get xcrs");
  Napi::Array out = Napi::Array::New(env, x.nr_xcrs);
  for (uint32_t i = 0; i < x.nr_xcrs; i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("xcr", x.xcrs[i].xcr);
    o.Set("value", Big(env, x.xcrs[i].value));
    out.Set(i, o);
  }
  return out;
}

Napi::Value Vcpu::SetXcrs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  if (!info[0].IsArray()) return ThrowUsage(env, "xcrs must be an array");
  Napi::Array a = info[0].As<Napi::Array>();
  kvm_xcrs x{};
  x.nr_xcrs = std::min<uint32_t>(a.Length(), KVM_MAX_XCRS);
  for (uint32_t i = 0; i < x.nr_xcrs; i++) {
    Napi::Object o = a.Get(i).As<Napi::Object>();
    x.xcrs[i].xcr = o.Get("xcr").ToNumber().Uint32Value();
    uint64_t v;
    if (!GetU64(o.Get("value"), &v)) return ThrowUsage(env, "xcr value must be a bigint or safe integer");
    x.xcrs[i].value = v;
  }
  VCPU_IOCTL(KVM_SET_XCRS, &x, "set xcrs");
  return env.Undefined();
}

Napi::Value Vcpu::GetVcpuEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_vcpu_events e{};
  VCPU_IOCTL(KVM_GET_VCPU_EVENTS, &e, "get vcpu events");
  return CopyOut(env, &e, sizeof e);
}

Napi::Value Vcpu::SetVcpuEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_vcpu_events e{};
  if (!CopyIn(info[0], &e, sizeof e)) return ThrowUsage(env, "vcpu events must be a " + std::to_string(sizeof e) + "-byte Uint8Array");
  VCPU_IOCTL(KVM_SET_VCPU_EVENTS, &e, "set vcpu events");
  return env.Undefined();
}

// setCpuid2([{function, index, flags, eax, ebx, ecx, edx}])
Napi::Value Vcpu::SetCpuid2(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  if (!info[0].IsArray()) return ThrowUsage(env, "cpuid entries must be an array");
  Napi::Array a = info[0].As<Napi::Array>();
  uint32_t n = a.Length();
  std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2));
  auto* c = reinterpret_cast<kvm_cpuid2*>(buf.data());
  c->nent = n;
  for (uint32_t i = 0; i < n; i++) {
    Napi::Object o = a.Get(i).As<Napi::Object>();
    kvm_cpuid_entry2& e = c->entries[i];
    e.function = o.Get("function").ToNumber().Uint32Value();
    e.index = o.Get("index").ToNumber().Uint32Value();
    e.flags = o.Get("flags").ToNumber().Uint32Value();
    e.eax = o.Get("eax").ToNumber().Uint32Value();
    e.ebx = o.Get("ebx").ToNumber().Uint32Value();
    e.ecx = o.Get("ecx").ToNumber().Uint32Value();
    e.edx = o.Get("edx").ToNumber().Uint32Value();
  }
  VCPU_IOCTL(KVM_SET_CPUID2, c, "set cpuid");
  return env.Undefined();
}

// getCpuid2() -> the entries this vCPU was given (KVM_GET_CPUID2).
Napi::Value Vcpu::GetCpuid2(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  return CpuidEntriesIoctl(env, CORE_FD(), KVM_GET_CPUID2, "KVM_GET_CPUID2", "get cpuid");
}

// The XSAVE area's size for this VM: KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)
// when the kernel has it (AMX and other large states make it exceed the
// 4 KiB struct kvm_xsave), else sizeof(struct kvm_xsave).
size_t Vcpu::XsaveSize() {
  int n = ioctl(vm_->fd_, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
  return n > static_cast<int>(sizeof(kvm_xsave)) ? static_cast<size_t>(n) : sizeof(kvm_xsave);
}

// getXsave() -> the raw XSAVE area (KVM_GET_XSAVE2 when available, else KVM_GET_XSAVE).
Napi::Value Vcpu::GetXsave(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  size_t n = XsaveSize();
  std::vector<uint8_t> buf(n);
  bool v2 = ioctl(vm_->fd_, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2) > 0;
  if (v2) {
    VCPU_IOCTL(KVM_GET_XSAVE2, buf.data(), "get xsave");
  } else {
    VCPU_IOCTL(KVM_GET_XSAVE, buf.data(), "get xsave");
  }
  return CopyOut(env, buf.data(), n);
}

// setXsave(bytes): exactly the size getXsave returns on this VM; KVM_SET_XSAVE reads that many.
Napi::Value Vcpu::SetXsave(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  size_t n = XsaveSize();
  std::vector<uint8_t> buf(n);
  if (!CopyIn(info[0], buf.data(), n)) return ThrowUsage(env, "xsave state must be a " + std::to_string(n) + "-byte Uint8Array on this host");
  VCPU_IOCTL(KVM_SET_XSAVE, buf.data(), "set xsave");
  return env.Undefined();
}

// struct kvm_debugregs as raw bytes (DR0-3, DR6, DR7, flags).
Napi::Value Vcpu::GetDebugRegs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_debugregs d{};
  VCPU_IOCTL(KVM_GET_DEBUGREGS, &d, "get debug registers");
  return CopyOut(env, &d, sizeof d);
}

Napi::Value Vcpu::SetDebugRegs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_debugregs d{};
  if (!CopyIn(info[0], &d, sizeof d)) return ThrowUsage(env, "debug registers must be a " + std::to_string(sizeof d) + "-byte Uint8Array");
  VCPU_IOCTL(KVM_SET_DEBUGREGS, &d, "set debug registers");
  return env.Undefined();
}

// getTscKhz() -> the guest TSC frequency in kHz (KVM_GET_TSC_KHZ), 0 when KVM cannot say.
Napi::Value Vcpu::GetTscKhz(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  int khz = ioctl(CORE_FD(), KVM_GET_TSC_KHZ, 0);
  return Napi::Number::New(env, khz < 0 ? 0 : khz);
}

// translate(linearAddress) -> { gpa, valid, writeable, usermode }
Napi::Value Vcpu::Translate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_translation t{};
  uint64_t la;
  if (!GetU64(info[0], &la)) return ThrowUsage(env, "linear address must be a bigint or safe integer");
  t.linear_address = la;
  VCPU_IOCTL(KVM_TRANSLATE, &t, "translate address");
  Napi::Object o = Napi::Object::New(env);
  o.Set("gpa", Big(env, t.physical_address));
  o.Set("valid", t.valid != 0);
  o.Set("writeable", t.writeable != 0);
  o.Set("usermode", t.usermode != 0);
  return o;
}

// setGuestDebug({ enable, singlestep, swBreakpoints })
Napi::Value Vcpu::SetGuestDebug(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_guest_debug d{};
  if (info[0].IsObject()) {
    Napi::Object o = info[0].As<Napi::Object>();
    if (o.Get("enable").ToBoolean()) d.control |= KVM_GUESTDBG_ENABLE;
    if (o.Get("singlestep").ToBoolean()) d.control |= KVM_GUESTDBG_SINGLESTEP;
    if (o.Get("swBreakpoints").ToBoolean()) d.control |= KVM_GUESTDBG_USE_SW_BP;
  }
  VCPU_IOCTL(KVM_SET_GUEST_DEBUG, &d, "set guest debug");
  return env.Undefined();
}

#endif  // __x86_64__

// KVM_GET/SET_MP_STATE: x86 (INIT/SIPI states) and arm64 (RUNNABLE, STOPPED: PSCI power state).
Napi::Value Vcpu::GetMpState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_mp_state m{};
  VCPU_IOCTL(KVM_GET_MP_STATE, &m, "get mp state");
  return Napi::Number::New(env, m.mp_state);
}

Napi::Value Vcpu::SetMpState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_mp_state m{};
  m.mp_state = info[0].ToNumber().Uint32Value();
  VCPU_IOCTL(KVM_SET_MP_STATE, &m, "set mp state");
  return env.Undefined();
}

// The shared page (mailbox + posted ring) as an ArrayBuffer; it keeps the
// page alive by itself, so JS can never see it freed.
Napi::Value Vcpu::SharedBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto core = core_.lock();
  if (!core) return ThrowUsage(env, "the vcpu's vm was destroyed");
  auto* hold = new std::shared_ptr<VcpuShared>(core->shared_ref());
  return Napi::ArrayBuffer::New(
      env, core->shared(), sizeof(VcpuShared), [](Napi::Env, void*, std::shared_ptr<VcpuShared>* h) { delete h; }, hold);
}

Napi::Value Vcpu::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, false)) return env.Undefined();
  std::string err;
  // The guest runs only once its memory slots are set.
  if (!vm_->SettleSlots(&err)) return ThrowUsage(env, err);
  if (!core_.lock()->Start(&err)) return ThrowUsage(env, err);
  return env.Undefined();
}

Napi::Value Vcpu::Resume(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, false)) return env.Undefined();
  core_.lock()->Resume();
  return env.Undefined();
}

Napi::Value Vcpu::Pause(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, false)) return env.Undefined();
  core_.lock()->Pause();
  return env.Undefined();
}

Napi::Value Vcpu::Stop(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto core = core_.lock();
  if (core) {
    core->Stop();
    core->Join();
  }
  return env.Undefined();
}

// completeExit(): JS answered the mailbox (PENDING -> IDLE, its own CAS in
// lib/hv/exit-mailbox.ts) and saw the vCPU asleep: wake it. Only a wake, no
// state change: by the time this runs the vCPU may have woken on its own, run
// on and published its next exit, which a CAS from PENDING here would take as
// answered without JS ever seeing it. A wake the vCPU does not need is
// harmless (it looks at the state and sleeps again).
Napi::Value Vcpu::CompleteExit(const Napi::CallbackInfo& info) {
  auto core = core_.lock();
  if (!core) return info.Env().Undefined();
  ExitMailbox& mb = core->shared()->mailbox;
  if (mb.sleeping.load(std::memory_order_seq_cst)) {
    syscall(SYS_futex, reinterpret_cast<int32_t*>(&mb.state), FUTEX_WAKE, 1, nullptr, nullptr, 0);
  }
  return info.Env().Undefined();
}

Napi::Value Vcpu::GetState(const Napi::CallbackInfo& info) {
  auto core = core_.lock();
  const char* s = "destroyed";
  if (core) {
    switch (core->state()) {
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
