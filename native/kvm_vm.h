// KVM partition (VM fd) and vCPU objects exposed to JS. Each wrapper method is
// named after the ioctl it issues (KVM_SET_USER_MEMORY_REGION ->
// setUserMemoryRegion). Decisions (addresses, which devices, when to pause)
// are made in TypeScript; this file only carries them out.
#pragma once

#include "kvm_headers.h"
#include <napi.h>
#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "exit_mailbox.h"
#include "hypervisor.h"

namespace nodevmm {

class GuestRam;
class Vm;

// A claimed I/O range and how the vCPU thread answers it without JS.
struct Route {
  uint32_t kind;            // kExitKindPio or kExitKindMmio
  uint64_t start;           // inclusive
  uint64_t end;             // exclusive
  uint32_t mode;            // kRouteJs or kRouteConstant
  uint32_t posted_mask;     // bit n: writes at offset n are posted (queued, not waited for)
  uint32_t shadow_mask;     // bit n: 1-byte reads at offset n come from the shadow page
  uint32_t shadow_offset;   // where this range's shadow bytes start in the shadow page
  uint64_t read_value;      // kRouteConstant: value returned for reads
  // An interrupt-status register pair (virtio-mmio InterruptStatus and
  // InterruptACK) answered here: 4-byte reads at isr_read return the 32-bit
  // word at the start of the shadow block, 4-byte writes at isr_ack clear the
  // bits written. JS sets bits atomically when it raises an interrupt. Only
  // for edge-triggered lines: an ACK here never lowers a line.
  uint32_t isr_read;        // register offset, or kNoIsr
  uint32_t isr_ack;         // register offset, or kNoIsr
};
constexpr uint32_t kNoIsr = 0xffffffffu;
enum RouteMode : uint32_t { kRouteJs = 0, kRouteConstant = 1 };

// Per-VM control block shared with JS (lib/hv/exit-mailbox.ts mirrors it).
struct alignas(64) VmControl {
  std::atomic<int32_t> notify_pending;   // 0: a JS wakeup is owed when set 0->1
  std::atomic<int32_t> event_count;      // events queued for takeEvents()
  uint32_t pad0[14];
  std::atomic<uint64_t> unclaimed_reads; // 64
  std::atomic<uint64_t> unclaimed_writes;// 72
  uint32_t pad1[12];
  uint8_t shadow[4096];                  // 128: register shadows written by JS
};
static_assert(offsetof(VmControl, unclaimed_reads) == 64, "control layout");
static_assert(offsetof(VmControl, shadow) == 128, "control layout");

// The per-vCPU shared page: mailbox, then the posted-write ring.
constexpr uint32_t kRingEntries = 256;
struct alignas(64) VcpuShared {
  ExitMailbox mailbox;                 // 0
  std::atomic<uint32_t> ring_head;     // 64, written by the vCPU
  uint32_t pad0[15];
  std::atomic<uint32_t> ring_tail;     // 128, written by JS
  uint32_t pad1[15];
  PostedWrite ring[kRingEntries];      // 192
};
static_assert(offsetof(VcpuShared, ring_head) == 64, "vcpu shared layout");
static_assert(offsetof(VcpuShared, ring_tail) == 128, "vcpu shared layout");
static_assert(offsetof(VcpuShared, ring) == 192, "vcpu shared layout");

enum class VcpuState { kCreated, kPaused, kRunning, kExited, kJoined };
enum VcpuRequest : int32_t { kRequestNone = 0, kRequestPause = 1, kRequestStop = 2 };

// Events the vCPU threads report to JS, drained by takeEvents().
struct VcpuEvent {
  uint32_t vcpu;
  std::string type;  // "paused", "exited"
  DecodedExit exit;  // for "exited"
  std::string reason;
};

class VcpuCore : public VcpuBackend {
 public:
  VcpuCore(Vm* vm, uint32_t index, int fd, kvm_run* run, size_t run_size);
  ~VcpuCore() override;

  DecodedExit Run() override;
  void RequestImmediateExit(bool on) override;

  bool Start(std::string* err);
  void Resume();
  void Pause();
  void Stop();
  void Join();
  VcpuState state() const { return state_.load(); }
  bool in_guest_or_starting() const;

  int fd() const { return fd_; }
  uint32_t index() const { return index_; }
  VcpuShared* shared() { return shared_.get(); }
  std::shared_ptr<VcpuShared> shared_ref() { return shared_; }

 private:
  void ThreadMain();
  bool HandleIo(const DecodedExit& exit);
  bool DispatchToJs(uint32_t kind, bool is_write, uint32_t size, uint64_t address, uint8_t* data);
  bool PostWrite(uint32_t kind, uint32_t size, uint64_t address, uint64_t value);
  void Kick();

  Vm* vm_;
  uint32_t index_;
  int fd_;
  kvm_run* run_;
  size_t run_size_;
  std::shared_ptr<VcpuShared> shared_;
  std::thread thread_;
  pthread_t tid_{};
  // Guards tid_/thread_alive_ so a kick never targets a finished thread.
  std::mutex kick_mu_;
  bool thread_alive_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<VcpuState> state_{VcpuState::kCreated};
  std::atomic<int32_t> request_{kRequestNone};
  bool resume_requested_ = false;
  bool started_ = false;
};

class Vm : public Napi::ObjectWrap<Vm> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Vm(const Napi::CallbackInfo& info);
  ~Vm() override;

  // Called from vCPU threads.
  void Notify();
  void PostEvent(VcpuEvent ev);
  const Route* FindRoute(uint32_t kind, uint64_t address, std::shared_ptr<const std::vector<Route>>* hold);
  VmControl* control() { return control_.get(); }
  bool aborting() const { return aborting_.load(); }
  // Host pointer for [gpa, gpa+len) if it lies in one memory slot.
  uint8_t* HostAddress(uint64_t gpa, uint64_t len);

  void DestroyImpl(Napi::Env env);

 private:
  friend class Vcpu;
  Napi::Value CheckExtension(const Napi::CallbackInfo& info);
#if defined(__x86_64__)
  Napi::Value SetTssAddr(const Napi::CallbackInfo& info);
  Napi::Value SetIdentityMapAddr(const Napi::CallbackInfo& info);
  Napi::Value CreatePit2(const Napi::CallbackInfo& info);
  Napi::Value GetClock(const Napi::CallbackInfo& info);
  Napi::Value SetClock(const Napi::CallbackInfo& info);
#endif
#if defined(__aarch64__)
  // native/kvm_arm64.cc
  Napi::Value ArmPreferredTarget(const Napi::CallbackInfo& info);
  Napi::Value CreateDevice(const Napi::CallbackInfo& info);
  Napi::Value SetDeviceAttr(const Napi::CallbackInfo& info);
  Napi::Value HasDeviceAttr(const Napi::CallbackInfo& info);
#endif
  Napi::Value CreateIrqchip(const Napi::CallbackInfo& info);
  Napi::Value IrqLine(const Napi::CallbackInfo& info);
  Napi::Value SetGsiRouting(const Napi::CallbackInfo& info);
  Napi::Value SignalMsi(const Napi::CallbackInfo& info);
  Napi::Value Irqfd(const Napi::CallbackInfo& info);
  Napi::Value Ioeventfd(const Napi::CallbackInfo& info);
  Napi::Value SetUserMemoryRegion(const Napi::CallbackInfo& info);
  Napi::Value CreateVcpu(const Napi::CallbackInfo& info);
  Napi::Value SetRoutes(const Napi::CallbackInfo& info);
  Napi::Value ControlBuffer(const Napi::CallbackInfo& info);
  Napi::Value SetNotify(const Napi::CallbackInfo& info);
  Napi::Value TakeEvents(const Napi::CallbackInfo& info);
  Napi::Value Ref(const Napi::CallbackInfo& info);
  Napi::Value Unref(const Napi::CallbackInfo& info);
  Napi::Value Destroy(const Napi::CallbackInfo& info);
  Napi::Value GetFd(const Napi::CallbackInfo& info);
  bool CheckAlive(Napi::Env env);

  int fd_ = -1;
  std::shared_ptr<VmControl> control_;
  std::vector<std::shared_ptr<VcpuCore>> vcpus_;
  std::shared_ptr<const std::vector<Route>> routes_;
  std::mutex routes_mu_;
  struct Slot {
    uint32_t slot;
    uint64_t gpa;
    uint64_t size;
    uint8_t* host;
    Napi::ObjectReference ram;
  };
  std::vector<Slot> slots_;
  std::mutex slots_mu_;
  std::mutex events_mu_;
  std::vector<VcpuEvent> events_;
  Napi::ThreadSafeFunction tsfn_;
  bool has_tsfn_ = false;
  std::atomic<bool> aborting_{false};
  bool destroyed_ = false;
  Napi::Reference<Napi::ArrayBuffer> control_ab_;
};

// JS handle for one vCPU; register access is only allowed while its thread
// is not inside KVM_RUN (created, paused or exited).
class Vcpu : public Napi::ObjectWrap<Vcpu> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::FunctionReference* constructor;
  explicit Vcpu(const Napi::CallbackInfo& info);
  void Attach(Vm* vm, Napi::Object vm_obj, std::shared_ptr<VcpuCore> core);

 private:
  bool Usable(Napi::Env env, bool need_stopped);
#if defined(__aarch64__)
  // native/kvm_arm64.cc
  Napi::Value ArmVcpuInit(const Napi::CallbackInfo& info);
  Napi::Value GetOneReg(const Napi::CallbackInfo& info);
  Napi::Value SetOneReg(const Napi::CallbackInfo& info);
#endif
#if defined(__x86_64__)
  Napi::Value GetRegs(const Napi::CallbackInfo& info);
  Napi::Value SetRegs(const Napi::CallbackInfo& info);
  Napi::Value GetSregs(const Napi::CallbackInfo& info);
  Napi::Value SetSregs(const Napi::CallbackInfo& info);
  Napi::Value GetFpu(const Napi::CallbackInfo& info);
  Napi::Value SetFpu(const Napi::CallbackInfo& info);
  Napi::Value GetMsrs(const Napi::CallbackInfo& info);
  Napi::Value SetMsrs(const Napi::CallbackInfo& info);
  Napi::Value GetLapic(const Napi::CallbackInfo& info);
  Napi::Value SetLapic(const Napi::CallbackInfo& info);
  Napi::Value GetXcrs(const Napi::CallbackInfo& info);
  Napi::Value SetXcrs(const Napi::CallbackInfo& info);
  Napi::Value GetVcpuEvents(const Napi::CallbackInfo& info);
  Napi::Value SetVcpuEvents(const Napi::CallbackInfo& info);
  Napi::Value GetMpState(const Napi::CallbackInfo& info);
  Napi::Value SetMpState(const Napi::CallbackInfo& info);
  Napi::Value SetCpuid2(const Napi::CallbackInfo& info);
  Napi::Value Translate(const Napi::CallbackInfo& info);
  Napi::Value SetGuestDebug(const Napi::CallbackInfo& info);
#endif
  Napi::Value SharedBuffer(const Napi::CallbackInfo& info);
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Resume(const Napi::CallbackInfo& info);
  Napi::Value Pause(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value CompleteExit(const Napi::CallbackInfo& info);
  Napi::Value GetState(const Napi::CallbackInfo& info);

  Vm* vm_ = nullptr;
  Napi::ObjectReference vm_ref_;
  std::weak_ptr<VcpuCore> core_;
};

// /dev/kvm, opened once per process on first use.
int KvmSystemFd(std::string* err, int* err_no);
size_t KvmRunMmapSize();
// The kick signal; its handler does nothing but interrupt KVM_RUN.
int KickSignal();
void InstallKickHandler();

Napi::Object InitSystem(Napi::Env env, Napi::Object exports);

}  // namespace nodevmm
