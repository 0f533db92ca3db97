// KVM partition (VM fd) and vCPU objects exposed to JS. What the vCPU threads
// share with JS (control block, events, routes) is the VmChannel; the
// threads themselves are vcpu_thread.h's. Each wrapper method is
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
#include "vcpu_thread.h"
#include "vm_channel.h"

namespace nodevmm {

class GuestRam;
class Vm;

// A KVM vCPU's entry into the guest: the fd, its kvm_run mapping, and the
// decode of kvm_run into a DecodedExit (kvm_vcpu_run.cc).
class KvmVcpuRun : public VcpuBackend {
 public:
  KvmVcpuRun(int fd, kvm_run* run, size_t run_size);
  ~KvmVcpuRun() override;
  DecodedExit Run() override;
  void RequestImmediateExit(bool on) override;
  int fd() const { return fd_; }

 private:
  int fd_;
  kvm_run* run_;
  size_t run_size_;
};

// A KVM vCPU: its KVM entry and the neutral thread that drives it. The
// thread is declared last, so it is stopped and joined before the fd and
// kvm_run mapping go.
class VcpuCore {
 public:
  VcpuCore(VmChannel* channel, uint32_t index, int fd, kvm_run* run, size_t run_size)
      : run_(fd, run, run_size), thread_(channel, &run_, index) {}

  bool Start(std::string* err) { return thread_.Start(err); }
  void Resume() { thread_.Resume(); }
  void Pause() { thread_.Pause(); }
  void Stop() { thread_.Stop(); }
  void Join() { thread_.Join(); }
  VcpuState state() const { return thread_.state(); }
  int fd() const { return run_.fd(); }
  uint32_t index() const { return thread_.index(); }
  VcpuShared* shared() { return thread_.shared(); }
  std::shared_ptr<VcpuShared> shared_ref() { return thread_.shared_ref(); }

 private:
  KvmVcpuRun run_;
  VcpuThread thread_;
};

class Vm : public Napi::ObjectWrap<Vm> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Vm(const Napi::CallbackInfo& info);
  ~Vm() override;

  bool aborting() const { return channel_.aborting(); }
  // Host pointer for [gpa, gpa+len) if it lies in one memory slot.
  uint8_t* HostAddress(uint64_t gpa, uint64_t len);

  void DestroyImpl(Napi::Env env);
  // Waits for memory slots being set on the thread pool; false (with the
  // first failure in *err) when one failed.
  bool SettleSlots(std::string* err);

 private:
  friend class Vcpu;
  friend class SlotWorker;
  void SlotDone(int err_no, uint32_t slot);
  Napi::Value CheckExtension(const Napi::CallbackInfo& info);
#if defined(__x86_64__)
  Napi::Value SetTssAddr(const Napi::CallbackInfo& info);
  Napi::Value SetIdentityMapAddr(const Napi::CallbackInfo& info);
  Napi::Value CreatePit2(const Napi::CallbackInfo& info);
  Napi::Value GetClock(const Napi::CallbackInfo& info);
  Napi::Value SetClock(const Napi::CallbackInfo& info);
  Napi::Value GetIrqchip(const Napi::CallbackInfo& info);
  Napi::Value SetIrqchip(const Napi::CallbackInfo& info);
  Napi::Value GetPit2(const Napi::CallbackInfo& info);
  Napi::Value SetPit2(const Napi::CallbackInfo& info);
#endif
#if defined(__aarch64__)
  // native/kvm_arm64.cc
  Napi::Value ArmPreferredTarget(const Napi::CallbackInfo& info);
  Napi::Value CreateDevice(const Napi::CallbackInfo& info);
  Napi::Value SetDeviceAttr(const Napi::CallbackInfo& info);
  Napi::Value HasDeviceAttr(const Napi::CallbackInfo& info);
  Napi::Value GetDeviceAttr(const Napi::CallbackInfo& info);
#endif
  Napi::Value CreateIrqchip(const Napi::CallbackInfo& info);
  Napi::Value EnableCap(const Napi::CallbackInfo& info);
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
  // Declared before the vCPUs: their threads use it until they are joined.
  VmChannel channel_;
  std::vector<std::shared_ptr<VcpuCore>> vcpus_;
  struct Slot {
    uint32_t slot;
    uint64_t gpa;
    uint64_t size;
    uint8_t* host;
    Napi::ObjectReference ram;
  };
  std::vector<Slot> slots_;
  std::mutex slots_mu_;
  // Slots whose KVM_SET_USER_MEMORY_REGION runs on the thread pool
  // ({ background: true }), and the first such ioctl's failure.
  std::condition_variable slots_cv_;
  int slots_in_background_ = 0;
  std::string slot_failure_;
  bool destroyed_ = false;
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
  Napi::Value GetRegList(const Napi::CallbackInfo& info);
  Napi::Value GetOneRegBytes(const Napi::CallbackInfo& info);
  Napi::Value SetOneRegBytes(const Napi::CallbackInfo& info);
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
  Napi::Value SetCpuid2(const Napi::CallbackInfo& info);
  Napi::Value GetCpuid2(const Napi::CallbackInfo& info);
  Napi::Value GetXsave(const Napi::CallbackInfo& info);
  Napi::Value SetXsave(const Napi::CallbackInfo& info);
  Napi::Value GetDebugRegs(const Napi::CallbackInfo& info);
  Napi::Value SetDebugRegs(const Napi::CallbackInfo& info);
  Napi::Value GetTscKhz(const Napi::CallbackInfo& info);
  size_t XsaveSize();
  Napi::Value Translate(const Napi::CallbackInfo& info);
  Napi::Value SetGuestDebug(const Napi::CallbackInfo& info);
#endif
  Napi::Value GetMpState(const Napi::CallbackInfo& info);
  Napi::Value SetMpState(const Napi::CallbackInfo& info);
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
#if defined(__x86_64__)
// A KVM_GET_SUPPORTED_CPUID (system fd) or KVM_GET_CPUID2 (vCPU fd) as an
// array of { function, index, flags, eax, ebx, ecx, edx }, growing the entry
// buffer from 128 to 4096 while the kernel says E2BIG.
Napi::Value CpuidEntriesIoctl(Napi::Env env, int fd, unsigned long request, const char* request_name, const char* what);
#endif

Napi::Object InitSystem(Napi::Env env, Napi::Object exports);

}  // namespace nodevmm
