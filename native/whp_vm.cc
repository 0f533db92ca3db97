// The WHP partition (whp_vm.h): created, configured and set up in one step
// from the options TypeScript chose, guest RAM mapped with WHvMapGpaRange
// straight from the GuestRam pages JS sees, vCPUs, interrupt requests, and
// the JS entry points of its VmChannel. Windows only; compiled, linked and
// loaded under Wine in CI, never run against a hypervisor there.
#if defined(_WIN32)

#include "whp_vm.h"

#include <intrin.h>

#include <set>

#include "common.h"
#include "guest_ram.h"
#include "wait_word.h"

namespace nodevmm {

namespace {
std::mutex g_live_mu;
std::set<WhpPartition*> g_live;

// A usage error naming the WHP call and its HRESULT.
Napi::Value ThrowHresult(Napi::Env env, const char* call, HRESULT hr, const std::string& what) {
  Napi::Error e = Napi::Error::New(env, what + ": " + HresultMessage(call, hr));
  e.Set("code", "ERR_WHP");
  e.Set("hresult", Napi::Number::New(env, static_cast<double>(static_cast<uint32_t>(hr))));
  e.Set("call", call);
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

uint32_t U32(Napi::Object o, const char* k, uint32_t dflt) {
  Napi::Value v = o.Get(k);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : dflt;
}

HRESULT SetProperty(WHV_PARTITION_HANDLE h, WHV_PARTITION_PROPERTY_CODE code, const void* buf, UINT32 size) {
  return Whp().WHvSetPartitionProperty(h, code, buf, size);
}
}  // namespace

Napi::Function WhpPartition::Init(Napi::Env env) {
  return DefineClass(env, "WhpPartition",
                     {
                         InstanceMethod("mapGpaRange", &WhpPartition::MapGpaRange),
                         InstanceMethod("createVcpu", &WhpPartition::CreateVcpu),
                         InstanceMethod("requestInterrupt", &WhpPartition::RequestInterrupt),
                         InstanceMethod("msrCounts", &WhpPartition::MsrCounts),
                         InstanceMethod("setRoutes", &WhpPartition::SetRoutes),
                         InstanceMethod("controlBuffer", &WhpPartition::ControlBuffer),
                         InstanceMethod("setNotify", &WhpPartition::SetNotify),
                         InstanceMethod("takeEvents", &WhpPartition::TakeEvents),
                         InstanceMethod("ref", &WhpPartition::Ref),
                         InstanceMethod("unref", &WhpPartition::Unref),
                         InstanceMethod("destroy", &WhpPartition::Destroy),
                     });
}

// new WhpPartition({ processorCount, apic: 0|1|2 (WHV_X64_LOCAL_APIC_EMULATION_MODE),
//   msrExits?, exceptionBitmap?, cpuidOverrides?: [{function, index, eax, ebx, ecx, edx}] })
// WHvCreatePartition, the properties, WHvSetupPartition.
WhpPartition::WhpPartition(const Napi::CallbackInfo& info) : Napi::ObjectWrap<WhpPartition>(info), shared_(new WhpShared) {
  Napi::Env env = info.Env();
  const WhpApi& api = Whp();
  if (!api.ok) {
    Napi::Error e = Napi::Error::New(env, api.error);
    e.Set("code", "ERR_WHP_UNAVAILABLE");
    e.ThrowAsJavaScriptException();
    return;
  }
  if (info.Length() < 1 || !info[0].IsObject()) {
    ThrowUsage(env, "WhpPartition needs an options object");
    return;
  }
  Napi::Object o = info[0].As<Napi::Object>();
  processor_count_ = U32(o, "processorCount", 0);
  if (processor_count_ == 0) {
    ThrowUsage(env, "processorCount must be a positive integer");
    return;
  }
  std::vector<UINT32> cpuid_exits;
  if (o.Get("cpuidOverrides").IsArray()) {
    Napi::Array a = o.Get("cpuidOverrides").As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      if (!a.Get(i).IsObject()) continue;
      Napi::Object e = a.Get(i).As<Napi::Object>();
      WhpCpuidOverride c{U32(e, "function", 0), U32(e, "index", 0xffffffffu), U32(e, "eax", 0), U32(e, "ebx", 0), U32(e, "ecx", 0), U32(e, "edx", 0)};
      shared_->cpuid.push_back(c);
      bool listed = false;
      for (UINT32 f : cpuid_exits) listed |= f == c.function;
      if (!listed) cpuid_exits.push_back(c.function);
    }
  }
  uint64_t exception_bitmap = 0;
  if (o.Has("exceptionBitmap") && !GetU64(o.Get("exceptionBitmap"), &exception_bitmap)) {
    ThrowUsage(env, "exceptionBitmap must be an integer");
    return;
  }
  WHV_PARTITION_HANDLE h = nullptr;
  HRESULT hr = api.WHvCreatePartition(&h);
  if (FAILED(hr)) {
    ThrowHresult(env, "WHvCreatePartition", hr, "create partition");
    return;
  }
  const char* call = "";
  WHV_PARTITION_PROPERTY p;
  ZeroMemory(&p, sizeof p);
  p.ProcessorCount = processor_count_;
  hr = SetProperty(h, WHvPartitionPropertyCodeProcessorCount, &p, sizeof p);
  call = "WHvSetPartitionProperty(ProcessorCount)";
  if (SUCCEEDED(hr)) {
    ZeroMemory(&p, sizeof p);
    p.LocalApicEmulationMode = static_cast<WHV_X64_LOCAL_APIC_EMULATION_MODE>(U32(o, "apic", WHvX64LocalApicEmulationModeXApic));
    hr = SetProperty(h, WHvPartitionPropertyCodeLocalApicEmulationMode, &p, sizeof p);
    call = "WHvSetPartitionProperty(LocalApicEmulationMode)";
  }
  if (SUCCEEDED(hr)) {
    ZeroMemory(&p, sizeof p);
    p.ExtendedVmExits.X64CpuidExit = cpuid_exits.empty() ? 0 : 1;
    p.ExtendedVmExits.X64MsrExit = o.Get("msrExits").ToBoolean() ? 1 : 0;
    p.ExtendedVmExits.ExceptionExit = exception_bitmap ? 1 : 0;
    hr = SetProperty(h, WHvPartitionPropertyCodeExtendedVmExits, &p, sizeof p);
    call = "WHvSetPartitionProperty(ExtendedVmExits)";
  }
  if (SUCCEEDED(hr) && !cpuid_exits.empty()) {
    hr = SetProperty(h, WHvPartitionPropertyCodeCpuidExitList, cpuid_exits.data(), static_cast<UINT32>(cpuid_exits.size() * sizeof(UINT32)));
    call = "WHvSetPartitionProperty(CpuidExitList)";
  }
  if (SUCCEEDED(hr) && exception_bitmap) {
    ZeroMemory(&p, sizeof p);
    p.ExceptionExitBitmap = exception_bitmap;
    hr = SetProperty(h, WHvPartitionPropertyCodeExceptionExitBitmap, &p, sizeof p);
    call = "WHvSetPartitionProperty(ExceptionExitBitmap)";
  }
  if (SUCCEEDED(hr)) {
    hr = api.WHvSetupPartition(h);
    call = "WHvSetupPartition";
  }
  if (FAILED(hr)) {
    api.WHvDeletePartition(h);
    ThrowHresult(env, call, hr, "set up partition");
    return;
  }
  shared_->handle = h;
  std::lock_guard<std::mutex> lock(g_live_mu);
  g_live.insert(this);
}

WhpPartition::~WhpPartition() {
  {
    std::lock_guard<std::mutex> lock(g_live_mu);
    g_live.erase(this);
  }
  // GC of an undestroyed partition: stop threads without touching JS.
  if (!destroyed_ && shared_->handle) {
    StopThreads();
    Whp().WHvDeletePartition(shared_->handle);
    shared_->handle = nullptr;
    channel_.Abandon();
  }
}

void WhpPartition::StopThreads() {
  channel_.StartAborting();
  for (auto& v : vcpus_) v->thread().Stop();
  for (auto& v : vcpus_) v->thread().Join();
  // The vCPUs' destructors delete their emulators and virtual processors.
  vcpus_.clear();
}

void WhpPartition::DestroyImpl(Napi::Env env) {
  if (destroyed_) return;
  destroyed_ = true;
  StopThreads();
  channel_.Close(env);
  // Deleting the partition unmaps every GPA range; the RAM itself is the
  // core's to release afterwards (lib/hv/partition-core.ts destroy order).
  if (shared_->handle) Whp().WHvDeletePartition(shared_->handle);
  shared_->handle = nullptr;
  {
    std::lock_guard<std::mutex> lock(shared_->slots_mu);
    shared_->slots.clear();
  }
  rams_.clear();
}

bool WhpPartition::CheckAlive(Napi::Env env) {
  if (destroyed_ || !shared_->handle) {
    ThrowUsage(env, "the partition was destroyed");
    return false;
  }
  return true;
}

// mapGpaRange(gpa, ram, readonly): the GuestRam's pages at `gpa`, all of them.
Napi::Value WhpPartition::MapGpaRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  uint64_t gpa = 0;
  if (!GetU64(info[0], &gpa) || (gpa & 0xfff)) return ThrowUsage(env, "gpa must be a page-aligned integer");
  GuestRam* ram = GuestRam::FromValue(env, info[1]);
  if (!ram || ram->released()) return ThrowUsage(env, "mapGpaRange needs a live GuestRam");
  bool readonly = info.Length() > 2 && info[2].ToBoolean();
  for (const WhpSlot& s : shared_->slots) {
    if (gpa < s.gpa + s.size && s.gpa < gpa + ram->size()) return ThrowUsage(env, "guest ram overlaps a mapped range");
  }
  auto flags = static_cast<WHV_MAP_GPA_RANGE_FLAGS>(WHvMapGpaRangeFlagRead | WHvMapGpaRangeFlagExecute | (readonly ? 0 : WHvMapGpaRangeFlagWrite));
  HRESULT hr = Whp().WHvMapGpaRange(shared_->handle, ram->host(), gpa, ram->size(), flags);
  if (FAILED(hr)) return ThrowHresult(env, "WHvMapGpaRange", hr, "map guest ram");
  {
    std::lock_guard<std::mutex> lock(shared_->slots_mu);
    shared_->slots.push_back({gpa, ram->size(), ram->host(), readonly});
  }
  rams_.push_back(Napi::Persistent(info[1].As<Napi::Object>()));
  return env.Undefined();
}

Napi::Value WhpPartition::CreateVcpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  uint32_t index = info[0].ToNumber().Uint32Value();
  if (index >= processor_count_) return ThrowUsage(env, "vcpu index " + std::to_string(index) + " is not below the partition's processor count " + std::to_string(processor_count_));
  for (auto& v : vcpus_) {
    if (v->thread().index() == index) return ThrowUsage(env, "vcpu " + std::to_string(index) + " exists");
  }
  auto core = std::make_shared<WhpVcpuCore>(&channel_, shared_.get(), index);
  std::string err;
  if (!core->Init(&err)) {
    Napi::Error e = Napi::Error::New(env, "create vcpu " + std::to_string(index) + ": " + err);
    e.Set("code", "ERR_WHP");
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  vcpus_.push_back(core);
  Napi::Object obj = WhpVcpu::constructor->New({});
  WhpVcpu::Unwrap(obj)->Attach(this, info.This().As<Napi::Object>(), core, index);
  return obj;
}

// requestInterrupt({ type, destinationMode, triggerMode, destination, vector }):
// WHV_INTERRUPT_CONTROL as the userspace IOAPIC/PIC decided it.
Napi::Value WhpPartition::RequestInterrupt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  if (info.Length() < 1 || !info[0].IsObject()) return ThrowUsage(env, "requestInterrupt needs an object");
  Napi::Object o = info[0].As<Napi::Object>();
  WHV_INTERRUPT_CONTROL c;
  ZeroMemory(&c, sizeof c);
  c.Type = U32(o, "type", WHvX64InterruptTypeFixed);
  c.DestinationMode = U32(o, "destinationMode", WHvX64InterruptDestinationModePhysical);
  c.TriggerMode = U32(o, "triggerMode", WHvX64InterruptTriggerModeEdge);
  c.Destination = U32(o, "destination", 0);
  c.Vector = U32(o, "vector", 0);
  HRESULT hr = Whp().WHvRequestInterrupt(shared_->handle, &c, sizeof c);
  if (FAILED(hr)) return ThrowHresult(env, "WHvRequestInterrupt", hr, "request interrupt");
  // A vCPU idling in HLT enters the guest again at once to take it.
  for (auto& v : vcpus_) v->run().Wake();
  return env.Undefined();
}

Napi::Value WhpPartition::MsrCounts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("readsIgnored", Big(env, shared_->msr_reads_ignored.load()));
  o.Set("writesIgnored", Big(env, shared_->msr_writes_ignored.load()));
  return o;
}

Napi::Value WhpPartition::SetRoutes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string err;
  if (!channel_.SetRoutes(info[0], &err)) return ThrowUsage(env, err);
  return env.Undefined();
}

Napi::Value WhpPartition::ControlBuffer(const Napi::CallbackInfo& info) { return channel_.ControlBuffer(info.Env()); }

Napi::Value WhpPartition::SetNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction()) return ThrowUsage(env, "setNotify needs a function");
  std::string err;
  if (!channel_.SetNotify(env, info[0].As<Napi::Function>(), &err)) return ThrowUsage(env, err);
  return env.Undefined();
}

Napi::Value WhpPartition::TakeEvents(const Napi::CallbackInfo& info) { return channel_.TakeEvents(info.Env()); }

Napi::Value WhpPartition::Ref(const Napi::CallbackInfo& info) {
  channel_.Ref(info.Env());
  return info.Env().Undefined();
}

Napi::Value WhpPartition::Unref(const Napi::CallbackInfo& info) {
  channel_.Unref(info.Env());
  return info.Env().Undefined();
}

Napi::Value WhpPartition::Destroy(const Napi::CallbackInfo& info) {
  DestroyImpl(info.Env());
  return info.Env().Undefined();
}

// The environment cleanup hook (addon.cc): stop every vCPU thread first.
void DestroyAllVms(Napi::Env env) {
  std::vector<WhpPartition*> live;
  {
    std::lock_guard<std::mutex> lock(g_live_mu);
    live.assign(g_live.begin(), g_live.end());
  }
  for (WhpPartition* p : live) p->DestroyImpl(env);
}

namespace {

// probe() -> { ok } | { ok: false, code, message }; never throws.
Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const WhpApi& api = Whp();
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", api.ok);
  if (!api.ok) {
    o.Set("code", "ERR_WHP_UNAVAILABLE");
    o.Set("message", api.error);
  }
  return o;
}

// hostCpuid(leaf, subleaf) -> { eax, ebx, ecx, edx }: the host processor's
// answer (WHP passes most leaves through), for TypeScript's CPUID policy.
Napi::Value HostCpuid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int regs[4] = {0, 0, 0, 0};
  __cpuidex(regs, static_cast<int>(info[0].ToNumber().Uint32Value()), static_cast<int>(info.Length() > 1 ? info[1].ToNumber().Uint32Value() : 0));
  Napi::Object o = Napi::Object::New(env);
  o.Set("eax", static_cast<uint32_t>(regs[0]));
  o.Set("ebx", static_cast<uint32_t>(regs[1]));
  o.Set("ecx", static_cast<uint32_t>(regs[2]));
  o.Set("edx", static_cast<uint32_t>(regs[3]));
  return o;
}

}  // namespace

Napi::Object InitWhp(Napi::Env env, Napi::Object exports) {
  exports.Set("probe", Napi::Function::New(env, Probe, "probe"));
  exports.Set("hostCpuid", Napi::Function::New(env, HostCpuid, "hostCpuid"));
  exports.Set("WhpPartition", WhpPartition::Init(env));
  exports.Set("WhpVcpu", WhpVcpu::Init(env));
  return exports;
}

}  // namespace nodevmm

#endif  // _WIN32
