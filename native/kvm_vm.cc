// The KVM VM fd: memory slots, interrupt controllers, irqfd/ioeventfd, vCPU
// creation, and the JS entry points of its VmChannel (routes, control block,
// events, notification), which the vCPU threads share with JS.
#include "kvm_vm.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "common.h"
#include "deferred_close.h"
#include "guest_ram.h"

namespace nodevmm {

namespace {
// Live VMs per process, so the environment cleanup hook can stop vCPU
// threads and unmap RAM when Node exits or a worker terminates.
std::mutex g_live_mu;
std::set<Vm*> g_live;
}  // namespace

Napi::Function Vm::Init(Napi::Env env) {
  return DefineClass(env, "Vm",
                     {
                         InstanceMethod("checkExtension", &Vm::CheckExtension),
#if defined(__x86_64__)
                         InstanceMethod("setTssAddr", &Vm::SetTssAddr),
                         InstanceMethod("setIdentityMapAddr", &Vm::SetIdentityMapAddr),
                         InstanceMethod("createPit2", &Vm::CreatePit2),
                         InstanceMethod("getClock", &Vm::GetClock),
                         InstanceMethod("setClock", &Vm::SetClock),
                         InstanceMethod("getIrqchip", &Vm::GetIrqchip),
                         InstanceMethod("setIrqchip", &Vm::SetIrqchip),
                         InstanceMethod("getPit2", &Vm::GetPit2),
                         InstanceMethod("setPit2", &Vm::SetPit2),
#endif
#if defined(__aarch64__)
                         InstanceMethod("armPreferredTarget", &Vm::ArmPreferredTarget),
                         InstanceMethod("createDevice", &Vm::CreateDevice),
                         InstanceMethod("setDeviceAttr", &Vm::SetDeviceAttr),
                         InstanceMethod("hasDeviceAttr", &Vm::HasDeviceAttr),
                         InstanceMethod("getDeviceAttr", &Vm::GetDeviceAttr),
#endif
                         InstanceMethod("createIrqchip", &Vm::CreateIrqchip),
                         InstanceMethod("enableCap", &Vm::EnableCap),
                         InstanceMethod("irqLine", &Vm::IrqLine),
                         InstanceMethod("setGsiRouting", &Vm::SetGsiRouting),
                         InstanceMethod("signalMsi", &Vm::SignalMsi),
                         InstanceMethod("irqfd", &Vm::Irqfd),
                         InstanceMethod("ioeventfd", &Vm::Ioeventfd),
                         InstanceMethod("setUserMemoryRegion", &Vm::SetUserMemoryRegion),
                         InstanceMethod("createVcpu", &Vm::CreateVcpu),
                         InstanceMethod("setRoutes", &Vm::SetRoutes),
                         InstanceMethod("controlBuffer", &Vm::ControlBuffer),
                         InstanceMethod("setNotify", &Vm::SetNotify),
                         InstanceMethod("takeEvents", &Vm::TakeEvents),
                         InstanceMethod("ref", &Vm::Ref),
                         InstanceMethod("unref", &Vm::Unref),
                         InstanceMethod("destroy", &Vm::Destroy),
                         InstanceAccessor("fd", &Vm::GetFd, nullptr),
                     });
}

Vm::Vm(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Vm>(info) {
  Napi::Env env = info.Env();
  std::string err;
  int err_no = 0;
  int sys = KvmSystemFd(&err, &err_no);
  if (sys < 0) {
    ThrowErrno(env, err_no, "open", nullptr, err);
    return;
  }
  unsigned long type = 0;
  if (info.Length() > 0 && info[0].IsNumber()) type = info[0].As<Napi::Number>().Uint32Value();
  int fd;
  do {
    fd = ioctl(sys, KVM_CREATE_VM, type);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    ThrowErrno(env, errno, "ioctl", "KVM_CREATE_VM", "create vm");
    return;
  }
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  if (ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_IMMEDIATE_EXIT) <= 0) {
    close(fd);
    ThrowErrno(env, ENOSYS, "ioctl", "KVM_CHECK_EXTENSION", "this kernel's KVM lacks KVM_CAP_IMMEDIATE_EXIT (needs Linux 4.11+); check");
    return;
  }
  fd_ = fd;
  InstallKickHandler();
  std::lock_guard<std::mutex> lock(g_live_mu);
  g_live.insert(this);
}

Vm::~Vm() {
  {
    std::lock_guard<std::mutex> lock(g_live_mu);
    g_live.erase(this);
  }
  // GC of an undestroyed VM: stop threads without touching JS.
  if (!destroyed_) {
    channel_.StartAborting();
    std::string slot_err;
    SettleSlots(&slot_err);  // a slot worker uses this object and the fd
    for (auto& v : vcpus_) v->Stop();
    for (auto& v : vcpus_) v->Join();
    vcpus_.clear();
    CloseLater(fd_);
    fd_ = -1;
    channel_.Abandon();
  }
}

bool Vm::CheckAlive(Napi::Env env) {
  if (destroyed_ || fd_ < 0) {
    ThrowUsage(env, "the vm was destroyed");
    return false;
  }
  return true;
}

#define VM_IOCTL(req, arg, what)                                     \
  do {                                                               \
    if (ioctl(fd_, req, arg) < 0) return ThrowErrno(env, errno, "ioctl", #req, what); \
  } while (0)

Napi::Value Vm::CheckExtension(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  int r = ioctl(fd_, KVM_CHECK_EXTENSION, info[0].ToNumber().Int32Value());
  return Napi::Number::New(env, r < 0 ? 0 : r);
}

#if defined(__x86_64__)
Napi::Value Vm::SetTssAddr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  uint64_t addr;
  if (!GetU64(info[0], &addr)) return ThrowUsage(env, "tss address must be an integer");
  VM_IOCTL(KVM_SET_TSS_ADDR, static_cast<unsigned long>(addr), "set tss address");
  return env.Undefined();
}

Napi::Value Vm::SetIdentityMapAddr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  uint64_t addr;
  if (!GetU64(info[0], &addr)) return ThrowUsage(env, "identity map address must be an integer");
  VM_IOCTL(KVM_SET_IDENTITY_MAP_ADDR, &addr, "set identity map address");
  return env.Undefined();
}

#endif

// enableCap(cap, args?: number[]): KVM_ENABLE_CAP on the VM fd with up to four args
// (KVM_CAP_SPLIT_IRQCHIP takes the number of IOAPIC pins as args[0]).
Napi::Value Vm::EnableCap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  if (!info[0].IsNumber()) return ThrowUsage(env, "capability must be a number");
  kvm_enable_cap c{};
  c.cap = info[0].As<Napi::Number>().Uint32Value();
  if (info.Length() > 1 && info[1].IsArray()) {
    Napi::Array a = info[1].As<Napi::Array>();
    if (a.Length() > 4) return ThrowUsage(env, "KVM_ENABLE_CAP takes at most 4 args");
    for (uint32_t i = 0; i < a.Length(); i++) {
      uint64_t v = 0;
      if (!GetU64(a.Get(i), &v)) return ThrowUsage(env, "capability args must be integers");
      c.args[i] = v;
    }
  }
  VM_IOCTL(KVM_ENABLE_CAP, &c, "enable capability");
  return env.Undefined();
}

Napi::Value Vm::CreateIrqchip(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  VM_IOCTL(KVM_CREATE_IRQCHIP, 0, "create in-kernel irqchip");
  return env.Undefined();
}

#if defined(__x86_64__)
Napi::Value Vm::CreatePit2(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  kvm_pit_config cfg{};
  cfg.flags = info.Length() > 0 ? info[0].ToNumber().Uint32Value() : 0;
  VM_IOCTL(KVM_CREATE_PIT2, &cfg, "create in-kernel pit");
  return env.Undefined();
}

// getClock() -> kvmclock nanoseconds (KVM_GET_CLOCK).
Napi::Value Vm::GetClock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  kvm_clock_data c{};
  VM_IOCTL(KVM_GET_CLOCK, &c, "get kvm clock");
  return Napi::BigInt::New(env, static_cast<uint64_t>(c.clock));
}

// setClock(ns): makes the guest's kvmclock read `ns` now (KVM_SET_CLOCK).
Napi::Value Vm::SetClock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  uint64_t ns = 0;
  if (!GetU64(info[0], &ns)) return ThrowUsage(env, "clock must be a bigint");
  kvm_clock_data c{};
  c.clock = ns;
  VM_IOCTL(KVM_SET_CLOCK, &c, "set kvm clock");
  return env.Undefined();
}

// getIrqchip(chipId) -> struct kvm_irqchip as raw bytes (chip 0 PIC master,
// 1 PIC slave, 2 IOAPIC); setIrqchip(bytes) puts one back (its chip_id
// field says which).
Napi::Value Vm::GetIrqchip(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  kvm_irqchip c{};
  c.chip_id = info[0].ToNumber().Uint32Value();
  VM_IOCTL(KVM_GET_IRQCHIP, &c, "get irqchip state");
  return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(&c), sizeof c);
}

Napi::Value Vm::SetIrqchip(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  kvm_irqchip c{};
  if (!info[0].IsTypedArray() || info[0].As<Napi::Uint8Array>().ByteLength() != sizeof c) {
    return ThrowUsage(env, "irqchip state must be a " + std::to_string(sizeof c) + "-byte Uint8Array");
  }
  std::memcpy(&c, info[0].As<Napi::Uint8Array>().Data(), sizeof c);
  VM_IOCTL(KVM_SET_IRQCHIP, &c, "set irqchip state");
  return env.Undefined();
}

// getPit2() / setPit2(bytes): struct kvm_pit_state2 as raw bytes.
Napi::Value Vm::GetPit2(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  kvm_pit_state2 p{};
  VM_IOCTL(KVM_GET_PIT2, &p, "get pit state");
  return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(&p), sizeof p);
}

Napi::Value Vm::SetPit2(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  kvm_pit_state2 p{};
  if (!info[0].IsTypedArray() || info[0].As<Napi::Uint8Array>().ByteLength() != sizeof p) {
    return ThrowUsage(env, "pit state must be a " + std::to_string(sizeof p) + "-byte Uint8Array");
  }
  std::memcpy(&p, info[0].As<Napi::Uint8Array>().Data(), sizeof p);
  VM_IOCTL(KVM_SET_PIT2, &p, "set pit state");
  return env.Undefined();
}

#endif

// irqLine(irq, level): hot path for level changes of legacy lines.
Napi::Value Vm::IrqLine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  kvm_irq_level l{};
  l.irq = info[0].As<Napi::Number>().Uint32Value();
  l.level = info[1].ToBoolean() ? 1 : 0;
  VM_IOCTL(KVM_IRQ_LINE, &l, "set irq line");
  return env.Undefined();
}

// setGsiRouting([{ gsi, type: 'irqchip', irqchip, pin } | { gsi, type: 'msi', addressLo, addressHi, data }])
Napi::Value Vm::SetGsiRouting(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  if (!info[0].IsArray()) return ThrowUsage(env, "gsi routing must be an array");
  Napi::Array arr = info[0].As<Napi::Array>();
  uint32_t n = arr.Length();
  std::vector<uint8_t> buf(sizeof(kvm_irq_routing) + n * sizeof(kvm_irq_routing_entry));
  auto* r = reinterpret_cast<kvm_irq_routing*>(buf.data());
  r->nr = n;
  for (uint32_t i = 0; i < n; i++) {
    Napi::Object e = arr.Get(i).As<Napi::Object>();
    kvm_irq_routing_entry& d = r->entries[i];
    d.gsi = e.Get("gsi").ToNumber().Uint32Value();
    std::string type = e.Get("type").ToString().Utf8Value();
    if (type == "irqchip") {
      d.type = KVM_IRQ_ROUTING_IRQCHIP;
      d.u.irqchip.irqchip = e.Get("irqchip").ToNumber().Uint32Value();
      d.u.irqchip.pin = e.Get("pin").ToNumber().Uint32Value();
    } else if (type == "msi") {
      d.type = KVM_IRQ_ROUTING_MSI;
      d.u.msi.address_lo = e.Get("addressLo").ToNumber().Uint32Value();
      d.u.msi.address_hi = e.Get("addressHi").ToNumber().Uint32Value();
      d.u.msi.data = e.Get("data").ToNumber().Uint32Value();
    } else {
      return ThrowUsage(env, "gsi routing entry type must be 'irqchip' or 'msi'");
    }
  }
  VM_IOCTL(KVM_SET_GSI_ROUTING, r, "set gsi routing");
  return env.Undefined();
}

Napi::Value Vm::SignalMsi(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  kvm_msi m{};
  uint64_t addr = 0;
  if (!GetU64(info[0], &addr)) return ThrowUsage(env, "msi address must be an integer");
  m.address_lo = static_cast<uint32_t>(addr);
  m.address_hi = static_cast<uint32_t>(addr >> 32);
  m.data = info[1].ToNumber().Uint32Value();
  int r = ioctl(fd_, KVM_SIGNAL_MSI, &m);
  if (r < 0) return ThrowErrno(env, errno, "ioctl", "KVM_SIGNAL_MSI", "signal msi");
  return Napi::Number::New(env, r);
}

// irqfd(fd, gsi, { resampleFd?, deassign? })
Napi::Value Vm::Irqfd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  kvm_irqfd f{};
  f.fd = info[0].ToNumber().Uint32Value();
  f.gsi = info[1].ToNumber().Uint32Value();
  if (info.Length() > 2 && info[2].IsObject()) {
    Napi::Object o = info[2].As<Napi::Object>();
    if (o.Get("deassign").ToBoolean()) f.flags |= KVM_IRQFD_FLAG_DEASSIGN;
    if (o.Get("resampleFd").IsNumber()) {
      f.flags |= KVM_IRQFD_FLAG_RESAMPLE;
      f.resamplefd = o.Get("resampleFd").ToNumber().Uint32Value();
    }
  }
  VM_IOCTL(KVM_IRQFD, &f, "assign irqfd");
  return env.Undefined();
}

// ioeventfd(fd, address, length, { pio?, datamatch?, deassign? })
Napi::Value Vm::Ioeventfd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  kvm_ioeventfd e{};
  e.fd = info[0].ToNumber().Int32Value();
  uint64_t eaddr = 0;
  if (!GetU64(info[1], &eaddr)) return ThrowUsage(env, "ioeventfd address must be an integer");
  e.addr = eaddr;
  e.len = info[2].ToNumber().Uint32Value();
  if (info.Length() > 3 && info[3].IsObject()) {
    Napi::Object o = info[3].As<Napi::Object>();
    if (o.Get("pio").ToBoolean()) e.flags |= KVM_IOEVENTFD_FLAG_PIO;
    if (o.Get("deassign").ToBoolean()) e.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
    Napi::Value dm = o.Get("datamatch");
    if (!dm.IsUndefined()) {
      uint64_t m = 0;
      if (!GetU64(dm, &m)) return ThrowUsage(env, "datamatch must be an integer");
      e.datamatch = m;
      e.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    }
  }
  VM_IOCTL(KVM_IOEVENTFD, &e, "assign ioeventfd");
  return env.Undefined();
}

// One KVM_SET_USER_MEMORY_REGION on the thread pool. Creating a slot makes
// KVM wait for an SRCU grace period (~4.6 ms on KVM-PVM); the JS thread
// builds the rest of the machine meanwhile. The worker holds no JS object:
// destroy and the Vm's finalizer wait for Execute (SettleSlots), and the
// slot's GuestRam stays referenced from slots_ until then; only OnOK, which
// settles the Promise, may run after the VM is gone (it touches no Vm).
class SlotWorker : public Napi::AsyncWorker {
 public:
  SlotWorker(Napi::Env env, Vm* vm, int fd, kvm_userspace_memory_region r)
      : Napi::AsyncWorker(env, "nodevmm:memorySlot"), vm_(vm), fd_(fd), r_(r), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int r;
    do r = ioctl(fd_, KVM_SET_USER_MEMORY_REGION, &r_);
    while (r < 0 && errno == EINTR);
    err_ = r < 0 ? errno : 0;
    vm_->SlotDone(err_, r_.slot);
  }
  void OnOK() override {
    if (err_) deferred_.Reject(ErrnoError(Env(), err_, "ioctl", "KVM_SET_USER_MEMORY_REGION", "set user memory region").Value());
    else deferred_.Resolve(Env().Undefined());
  }

 private:
  Vm* vm_;
  int fd_;
  kvm_userspace_memory_region r_;
  int err_ = 0;
  Napi::Promise::Deferred deferred_;
};

void Vm::SlotDone(int err_no, uint32_t slot) {
  std::lock_guard<std::mutex> lock(slots_mu_);
  if (err_no && slot_failure_.empty()) {
    slot_failure_ = "memory slot " + std::to_string(slot) + " could not be set (KVM_SET_USER_MEMORY_REGION: " + strerror(err_no) + ")";
  }
  slots_in_background_--;
  slots_cv_.notify_all();
}

bool Vm::SettleSlots(std::string* err) {
  std::unique_lock<std::mutex> lock(slots_mu_);
  slots_cv_.wait(lock, [&] { return slots_in_background_ == 0; });
  if (slot_failure_.empty()) return true;
  *err = slot_failure_;
  return false;
}

// setUserMemoryRegion(slot, gpa, ram: GuestRam | null, offset, size, { readonly?, logDirty?, background? })
// size 0 deletes the slot. With `background` (a new slot, before any vCPU
// started) the ioctl runs on the thread pool and a Promise is returned;
// every other call, and a vCPU's start, waits for those first.
Napi::Value Vm::SetUserMemoryRegion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  uint64_t gpa = 0, offset = 0, size = 0;
  uint32_t slot = info[0].ToNumber().Uint32Value();
  if (!GetU64(info[1], &gpa) || !GetU64(info[3], &offset) || !GetU64(info[4], &size)) return ThrowUsage(env, "gpa, offset and size must be integers");
  if ((gpa & 0xfff) || (offset & 0xfff) || (size & 0xfff)) return ThrowUsage(env, "memory slot gpa, offset and size must be 4 KiB aligned");
  kvm_userspace_memory_region r{};
  r.slot = slot;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  uint8_t* host = nullptr;
  Napi::Object ram_obj;
  if (size != 0) {
    if (!info[2].IsObject()) return ThrowUsage(env, "guest ram object required");
    ram_obj = info[2].As<Napi::Object>();
    GuestRam* ram = GuestRam::FromValue(env, ram_obj);
    if (!ram) return ThrowUsage(env, "memory slot needs a GuestRam object");
    if (ram->released()) return ThrowUsage(env, "guest ram was released");
    if (offset > ram->size() || size > ram->size() - offset) return ThrowUsage(env, "memory slot extends past the end of its guest ram");
    host = ram->host() + offset;
    r.userspace_addr = reinterpret_cast<uint64_t>(host);
  }
  bool background = false;
  if (info.Length() > 5 && info[5].IsObject()) {
    Napi::Object o = info[5].As<Napi::Object>();
    if (o.Get("readonly").ToBoolean()) r.flags |= KVM_MEM_READONLY;
    if (o.Get("logDirty").ToBoolean()) r.flags |= KVM_MEM_LOG_DIRTY_PAGES;
    background = o.Get("background").ToBoolean();
  }
  bool started = false;
  for (auto& v : vcpus_) started = started || v->state() != VcpuState::kCreated;
  {
    std::lock_guard<std::mutex> lock(slots_mu_);
    for (const Slot& s : slots_) {
      if (s.slot == slot) background = false;  // a change to a slot: in order, here
    }
  }
  if (!background || size == 0 || started) {
    std::string err;
    if (!SettleSlots(&err)) return ThrowUsage(env, err);
    // SAFETY: userspace_addr points into a live GuestRam mapping that the slot
    // entry below keeps referenced until the slot is deleted or the VM dies.
    VM_IOCTL(KVM_SET_USER_MEMORY_REGION, &r, "set user memory region");
    std::lock_guard<std::mutex> lock(slots_mu_);
    slots_.erase(std::remove_if(slots_.begin(), slots_.end(), [&](const Slot& s) { return s.slot == slot; }), slots_.end());
    if (size != 0) slots_.push_back(Slot{slot, gpa, size, host, Napi::Persistent(ram_obj)});
    return env.Undefined();
  }
  // SAFETY: as above; the slot entry is made before the ioctl runs, and
  // destroy waits for the worker (SettleSlots) before the RAM can go.
  auto* w = new SlotWorker(env, this, fd_, r);
  {
    std::lock_guard<std::mutex> lock(slots_mu_);
    slots_.push_back(Slot{slot, gpa, size, host, Napi::Persistent(ram_obj)});
    slots_in_background_++;
  }
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

uint8_t* Vm::HostAddress(uint64_t gpa, uint64_t len) {
  std::lock_guard<std::mutex> lock(slots_mu_);
  for (const Slot& s : slots_) {
    if (gpa >= s.gpa && len <= s.size && gpa - s.gpa <= s.size - len) return s.host + (gpa - s.gpa);
  }
  return nullptr;
}

Napi::Value Vm::CreateVcpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  uint32_t index = info[0].ToNumber().Uint32Value();
  for (auto& v : vcpus_)
    if (v->index() == index) return ThrowUsage(env, "vcpu " + std::to_string(index) + " already exists");
  int vfd = ioctl(fd_, KVM_CREATE_VCPU, static_cast<unsigned long>(index));
  if (vfd < 0) return ThrowErrno(env, errno, "ioctl", "KVM_CREATE_VCPU", "create vcpu " + std::to_string(index));
  fcntl(vfd, F_SETFD, FD_CLOEXEC);
  size_t run_size = KvmRunMmapSize();
  // SAFETY: the kvm_run area of a vCPU fd is mapped at offset 0 with the size
  // KVM_GET_VCPU_MMAP_SIZE reports; it lives until we munmap it.
  void* run = mmap(nullptr, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vfd, 0);
  if (run == MAP_FAILED) {
    int err = errno;
    close(vfd);
    return ThrowErrno(env, err, "mmap", nullptr, "map kvm_run of vcpu " + std::to_string(index));
  }
  auto core = std::make_shared<VcpuCore>(&channel_, index, vfd, static_cast<kvm_run*>(run), run_size);
  vcpus_.push_back(core);
  Napi::Object obj = Vcpu::constructor->New({});
  Vcpu::Unwrap(obj)->Attach(this, Value(), core);
  return obj;
}

// setRoutes([{ kind: 1|2, start, end, mode, postedMask, shadowMask, shadowOffset, readValue, mirrors? }])
Napi::Value Vm::SetRoutes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  std::string err;
  if (!channel_.SetRoutes(info[0], &err)) return ThrowUsage(env, err);
  return env.Undefined();
}

Napi::Value Vm::ControlBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  return channel_.ControlBuffer(env);
}

// setNotify(fn): fn() is called (coalesced) whenever exits, posted writes
// or events wait for JS.
Napi::Value Vm::SetNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  if (!info[0].IsFunction()) return ThrowUsage(env, "notify must be a function");
  std::string err;
  if (!channel_.SetNotify(env, info[0].As<Napi::Function>(), &err)) return ThrowUsage(env, err);
  return env.Undefined();
}

Napi::Value Vm::TakeEvents(const Napi::CallbackInfo& info) { return channel_.TakeEvents(info.Env()); }

Napi::Value Vm::Ref(const Napi::CallbackInfo& info) {
  if (!destroyed_) channel_.Ref(info.Env());
  return info.Env().Undefined();
}

Napi::Value Vm::Unref(const Napi::CallbackInfo& info) {
  if (!destroyed_) channel_.Unref(info.Env());
  return info.Env().Undefined();
}

void Vm::DestroyImpl(Napi::Env env) {
  if (destroyed_) return;
  destroyed_ = true;
  channel_.StartAborting();
  // A slot still being set on the thread pool uses the fd and the RAM.
  std::string slot_err;
  SettleSlots(&slot_err);
  for (auto& v : vcpus_) v->Stop();
  for (auto& v : vcpus_) v->Join();
  // The vCPU fds close here, at once (each only drops a reference on the VM);
  // the VM fd is the last reference, and its close destroys the VM.
  vcpus_.clear();
  {
    std::lock_guard<std::mutex> lock(slots_mu_);
    slots_.clear();
  }
  CloseLater(fd_);
  fd_ = -1;
  channel_.Close(env);
}

Napi::Value Vm::Destroy(const Napi::CallbackInfo& info) {
  DestroyImpl(info.Env());
  return info.Env().Undefined();
}

Napi::Value Vm::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

// Environment teardown: stop every vCPU thread before V8 goes away.
void DestroyAllVms(Napi::Env env) {
  std::vector<Vm*> live;
  {
    std::lock_guard<std::mutex> lock(g_live_mu);
    live.assign(g_live.begin(), g_live.end());
  }
  for (Vm* vm : live) vm->DestroyImpl(env);
  JoinAllClosers();
}

}  // namespace nodevmm
