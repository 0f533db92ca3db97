// A Windows Hypervisor Platform partition and its vCPUs, exposed to JS as
// WhpPartition and WhpVcpu. What the vCPU threads share with JS (control
// block, events, routes) is the same VmChannel as KVM's, and the threads are
// the same vcpu_thread.h; only the guest entry (WhpVcpuRun: one
// WHvRunVirtualProcessor and the exit decode, with WinHvEmulation for port
// and MMIO instructions) and the register calls are WHP's. Decisions
// (processor count, which exits, addresses, interrupt routing) are made in
// TypeScript (lib/hv/whp-partition.ts). Windows only.
#pragma once

#if defined(_WIN32)

#include <napi.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "hypervisor.h"
#include "vcpu_thread.h"
#include "vm_channel.h"
#include "whp_api.h"

namespace nodevmm {

class WhpPartition;

// Guest RAM as the emulator's memory callback needs it: host pointer for a
// GPA range, or null (MMIO). Slots change only while no vCPU runs.
struct WhpSlot {
  uint64_t gpa;
  uint64_t size;
  uint8_t* host;
  bool readonly;
};

// A CPUID answer the partition gives instead of WHP's default (TypeScript's
// list; index 0xffffffff matches any subleaf).
struct WhpCpuidOverride {
  uint32_t function, index, eax, ebx, ecx, edx;
};

// What every vCPU of one partition shares: the handle, RAM slots, CPUID
// overrides, and counters of the MSR accesses answered natively.
struct WhpShared {
  WHV_PARTITION_HANDLE handle = nullptr;
  std::mutex slots_mu;
  std::vector<WhpSlot> slots;
  std::vector<WhpCpuidOverride> cpuid;
  std::atomic<uint64_t> msr_reads_ignored{0};
  std::atomic<uint64_t> msr_writes_ignored{0};
};

// One vCPU's entry into the guest (whp_vcpu_run.cc).
class WhpVcpuRun : public VcpuBackend {
 public:
  WhpVcpuRun(WhpShared* shared, uint32_t index);
  ~WhpVcpuRun() override;
  bool Init(std::string* err);
  DecodedExit Run() override;
  void RequestImmediateExit(bool on) override;
  void SetIoHandler(IoHandler* handler) override { io_ = handler; }
  // Wake a vCPU idling in HLT (an interrupt was requested for it).
  void Wake();

  // WinHvEmulation callbacks (context = this).
  static HRESULT CALLBACK IoPortCallback(VOID* ctx, WHV_EMULATOR_IO_ACCESS_INFO* io);
  static HRESULT CALLBACK MemoryCallback(VOID* ctx, WHV_EMULATOR_MEMORY_ACCESS_INFO* ma);
  static HRESULT CALLBACK GetRegistersCallback(VOID* ctx, const WHV_REGISTER_NAME* names, UINT32 count, WHV_REGISTER_VALUE* values);
  static HRESULT CALLBACK SetRegistersCallback(VOID* ctx, const WHV_REGISTER_NAME* names, UINT32 count, const WHV_REGISTER_VALUE* values);
  static HRESULT CALLBACK TranslateGvaCallback(VOID* ctx, WHV_GUEST_VIRTUAL_ADDRESS gva, WHV_TRANSLATE_GVA_FLAGS flags, WHV_TRANSLATE_GVA_RESULT_CODE* result, WHV_GUEST_PHYSICAL_ADDRESS* gpa);

 private:
  bool Io(ExitType type, bool is_write, uint32_t size, uint64_t address, uint8_t* data);
  DecodedExit Emulate(const WHV_RUN_VP_EXIT_CONTEXT& ctx);
  DecodedExit Halt(const WHV_RUN_VP_EXIT_CONTEXT& ctx);
  DecodedExit Cpuid(const WHV_RUN_VP_EXIT_CONTEXT& ctx);
  DecodedExit Msr(const WHV_RUN_VP_EXIT_CONTEXT& ctx);
  bool SkipInstruction(const WHV_RUN_VP_EXIT_CONTEXT& ctx, const WHV_REGISTER_NAME* extra, const WHV_REGISTER_VALUE* values, uint32_t n);

  WhpShared* shared_;
  uint32_t index_;
  bool created_ = false;
  WHV_EMULATOR_HANDLE emulator_ = nullptr;
  IoHandler* io_ = nullptr;
  std::atomic<int32_t> cancel_{0};
  // Bumped by Wake(); a vCPU idle in HLT sleeps until it changes.
  std::atomic<int32_t> wake_{0};
  bool aborted_ = false;  // the IoHandler said stop while the emulator ran
};

// A WHP vCPU: its guest entry and the neutral thread that drives it; the
// thread is declared last, so it is stopped and joined before the entry goes.
class WhpVcpuCore {
 public:
  WhpVcpuCore(VmChannel* channel, WhpShared* shared, uint32_t index) : run_(shared, index), thread_(channel, &run_, index) {}
  bool Init(std::string* err) { return run_.Init(err); }
  WhpVcpuRun& run() { return run_; }
  VcpuThread& thread() { return thread_; }

 private:
  WhpVcpuRun run_;
  VcpuThread thread_;
};

class WhpPartition : public Napi::ObjectWrap<WhpPartition> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit WhpPartition(const Napi::CallbackInfo& info);
  ~WhpPartition() override;
  void DestroyImpl(Napi::Env env);

 private:
  friend class WhpVcpu;
  Napi::Value MapGpaRange(const Napi::CallbackInfo& info);
  Napi::Value CreateVcpu(const Napi::CallbackInfo& info);
  Napi::Value RequestInterrupt(const Napi::CallbackInfo& info);
  Napi::Value MsrCounts(const Napi::CallbackInfo& info);
  Napi::Value SetRoutes(const Napi::CallbackInfo& info);
  Napi::Value ControlBuffer(const Napi::CallbackInfo& info);
  Napi::Value SetNotify(const Napi::CallbackInfo& info);
  Napi::Value TakeEvents(const Napi::CallbackInfo& info);
  Napi::Value Ref(const Napi::CallbackInfo& info);
  Napi::Value Unref(const Napi::CallbackInfo& info);
  Napi::Value Destroy(const Napi::CallbackInfo& info);
  bool CheckAlive(Napi::Env env);
  void StopThreads();

  std::unique_ptr<WhpShared> shared_;
  // Declared before the vCPUs: their threads use it until they are joined.
  VmChannel channel_;
  std::vector<std::shared_ptr<WhpVcpuCore>> vcpus_;
  std::vector<Napi::ObjectReference> rams_;
  uint32_t processor_count_ = 0;
  bool destroyed_ = false;
};

// JS handle for one vCPU; registers only while its thread is not in the guest.
class WhpVcpu : public Napi::ObjectWrap<WhpVcpu> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::FunctionReference* constructor;
  explicit WhpVcpu(const Napi::CallbackInfo& info);
  void Attach(WhpPartition* p, Napi::Object p_obj, std::shared_ptr<WhpVcpuCore> core, uint32_t index);

 private:
  bool Usable(Napi::Env env, bool need_stopped);
  Napi::Value GetRegs(const Napi::CallbackInfo& info);
  Napi::Value SetRegs(const Napi::CallbackInfo& info);
  Napi::Value GetSregs(const Napi::CallbackInfo& info);
  Napi::Value SetSregs(const Napi::CallbackInfo& info);
  Napi::Value GetMsrs(const Napi::CallbackInfo& info);
  Napi::Value SetMsrs(const Napi::CallbackInfo& info);
  Napi::Value GetLapic(const Napi::CallbackInfo& info);
  Napi::Value Translate(const Napi::CallbackInfo& info);
  Napi::Value SharedBuffer(const Napi::CallbackInfo& info);
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Resume(const Napi::CallbackInfo& info);
  Napi::Value Pause(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value CompleteExit(const Napi::CallbackInfo& info);
  Napi::Value GetState(const Napi::CallbackInfo& info);

  WhpPartition* partition_ = nullptr;
  Napi::ObjectReference partition_ref_;
  std::weak_ptr<WhpVcpuCore> core_;
  uint32_t index_ = 0;
};

Napi::Object InitWhp(Napi::Env env, Napi::Object exports);

}  // namespace nodevmm

#endif  // _WIN32
