// The WHP side of a vCPU's run loop: one WHvRunVirtualProcessor and the
// decode of its exit context into the neutral DecodedExit (hypervisor.h).
// Port and MMIO exits go through WinHvEmulation, which decodes and retires
// the instruction and calls back once per access; each access goes through
// the same IoHandler (routes, shadows, posted writes, the JS mailbox) as a
// KVM exit. CPUID and MSR exits the hypervisor asked for, HLT and APIC EOIs
// are answered here. Windows only; never executed on this project's CI
// (no Windows hypervisor there: docs/windows.md).
#if defined(_WIN32)

#include <cstring>

#include "whp_vm.h"

namespace nodevmm {

namespace {
constexpr uint64_t kRflagsIf = 1ull << 9;
// KVM_INTERNAL_ERROR_EMULATION: the stop description names the instruction.
constexpr uint32_t kSuberrorEmulation = 1;
constexpr uint32_t kSuberrorRunFailed = 0xffff;
// How long a vCPU halted with interrupts enabled waits before entering the
// guest again when nobody wakes it. WHP's own LAPIC (timer, IPIs) delivers on
// the next entry, so this bounds the latency of an interrupt JS did not request.
constexpr DWORD kHaltIdleMs = 1;

DecodedExit Typed(ExitType t) {
  DecodedExit x;
  x.type = t;
  return x;
}
}  // namespace

WhpVcpuRun::WhpVcpuRun(WhpShared* shared, uint32_t index) : shared_(shared), index_(index) {}

WhpVcpuRun::~WhpVcpuRun() {
  const WhpApi& api = Whp();
  if (emulator_) api.WHvEmulatorDestroyEmulator(emulator_);
  if (created_) api.WHvDeleteVirtualProcessor(shared_->handle, index_);
}

bool WhpVcpuRun::Init(std::string* err) {
  const WhpApi& api = Whp();
  HRESULT hr = api.WHvCreateVirtualProcessor(shared_->handle, index_, 0);
  if (FAILED(hr)) {
    *err = HresultMessage("WHvCreateVirtualProcessor", hr);
    return false;
  }
  created_ = true;
  WHV_EMULATOR_CALLBACKS cb;
  ZeroMemory(&cb, sizeof cb);
  cb.Size = sizeof cb;
  cb.WHvEmulatorIoPortCallback = &WhpVcpuRun::IoPortCallback;
  cb.WHvEmulatorMemoryCallback = &WhpVcpuRun::MemoryCallback;
  cb.WHvEmulatorGetVirtualProcessorRegisters = &WhpVcpuRun::GetRegistersCallback;
  cb.WHvEmulatorSetVirtualProcessorRegisters = &WhpVcpuRun::SetRegistersCallback;
  cb.WHvEmulatorTranslateGvaPage = &WhpVcpuRun::TranslateGvaCallback;
  hr = api.WHvEmulatorCreateEmulator(&cb, &emulator_);
  if (FAILED(hr)) {
    *err = HresultMessage("WHvEmulatorCreateEmulator", hr);
    return false;
  }
  return true;
}

void WhpVcpuRun::RequestImmediateExit(bool on) {
  if (!on) {
    cancel_.store(0, std::memory_order_release);
    return;
  }
  cancel_.store(1, std::memory_order_release);
  Wake();
  // A run in progress returns WHvRunVpExitReasonCanceled; one not yet
  // entered returns at once (the cancel is pending until the next run), and
  // Run() checks cancel_ first anyway.
  if (created_) Whp().WHvCancelRunVirtualProcessor(shared_->handle, index_, 0);
}

void WhpVcpuRun::Wake() {
  wake_.fetch_add(1, std::memory_order_acq_rel);
  WakeByAddressAll(reinterpret_cast<PVOID>(&wake_));
}

DecodedExit WhpVcpuRun::Run() {
  if (cancel_.exchange(0, std::memory_order_acq_rel)) return Typed(ExitType::kInterrupted);
  const WhpApi& api = Whp();
  WHV_RUN_VP_EXIT_CONTEXT ctx;
  ZeroMemory(&ctx, sizeof ctx);
  HRESULT hr = api.WHvRunVirtualProcessor(shared_->handle, index_, &ctx, sizeof ctx);
  DecodedExit x;
  if (FAILED(hr)) {
    x.type = ExitType::kInternalError;
    x.subtype = kSuberrorRunFailed;
    x.detail[0] = static_cast<uint32_t>(hr);
    x.ndetail = 1;
    return x;
  }
  switch (ctx.ExitReason) {
    case WHvRunVpExitReasonX64IoPortAccess:
    case WHvRunVpExitReasonMemoryAccess:
      x = Emulate(ctx);
      break;
    case WHvRunVpExitReasonX64Halt:
      x = Halt(ctx);
      break;
    case WHvRunVpExitReasonX64ApicEoi:
      // A level-triggered interrupt was EOI'd: the userspace IOAPIC clears
      // its Remote IRR (the run loop hands it to JS, mailbox kind 3, before
      // this vCPU runs on).
      x.type = ExitType::kIoapicEoi;
      x.address = ctx.ApicEoi.InterruptVector;
      break;
    case WHvRunVpExitReasonX64Cpuid:
      x = Cpuid(ctx);
      break;
    case WHvRunVpExitReasonX64MsrAccess:
      x = Msr(ctx);
      break;
    case WHvRunVpExitReasonCanceled:
      cancel_.store(0, std::memory_order_release);
      x.type = ExitType::kInterrupted;
      break;
    case WHvRunVpExitReasonX64InterruptWindow:
      x.type = ExitType::kRetry;
      break;
    case WHvRunVpExitReasonUnrecoverableException:
      // A triple fault: what KVM reports as KVM_EXIT_SHUTDOWN.
      x.type = ExitType::kShutdown;
      break;
    case WHvRunVpExitReasonInvalidVpRegisterValue:
      x.type = ExitType::kFailEntry;
      x.detail[0] = ctx.VpContext.Rip;
      x.ndetail = 1;
      break;
    case WHvRunVpExitReasonException:
      // Only the exceptions TypeScript put in the exit bitmap come here.
      x.type = ctx.VpException.ExceptionType == 1 || ctx.VpException.ExceptionType == 3 ? ExitType::kDebug : ExitType::kInternalError;
      x.subtype = ctx.VpException.ExceptionType;
      x.detail[0] = ctx.VpException.ExceptionType;
      x.detail[1] = ctx.VpException.ErrorCode;
      x.detail[2] = ctx.VpException.ExceptionParameter;
      x.detail[3] = ctx.VpContext.Rip;
      x.ndetail = 4;
      break;
    default:
      x.type = ExitType::kUnknown;
      x.detail[0] = ctx.VpContext.Rip;
      x.ndetail = 1;
      break;
  }
  x.raw_reason = static_cast<uint32_t>(ctx.ExitReason);
  return x;
}

bool WhpVcpuRun::Io(ExitType type, bool is_write, uint32_t size, uint64_t address, uint8_t* data) {
  if (!io_) return false;
  DecodedExit x;
  x.type = type;
  x.is_write = is_write;
  x.size = size;
  x.count = 1;
  x.address = address;
  x.data = data;
  if (io_->HandleIo(x)) return true;
  aborted_ = true;
  return false;
}

DecodedExit WhpVcpuRun::Emulate(const WHV_RUN_VP_EXIT_CONTEXT& ctx) {
  const WhpApi& api = Whp();
  WHV_EMULATOR_STATUS st;
  st.AsUINT32 = 0;
  aborted_ = false;
  HRESULT hr = ctx.ExitReason == WHvRunVpExitReasonX64IoPortAccess
                   ? api.WHvEmulatorTryIoEmulation(emulator_, this, &ctx.VpContext, &ctx.IoPortAccess, &st)
                   : api.WHvEmulatorTryMmioEmulation(emulator_, this, &ctx.VpContext, &ctx.MemoryAccess, &st);
  // A stop arrived while an access waited on JS: leave; the instruction is
  // not retired, and the vCPU never runs again.
  if (aborted_) return Typed(ExitType::kInterrupted);
  if (SUCCEEDED(hr) && st.EmulationSuccessful) return Typed(ExitType::kRetry);
  DecodedExit x;
  x.type = ExitType::kInternalError;
  x.subtype = kSuberrorEmulation;
  x.detail[0] = st.AsUINT32;
  x.detail[1] = static_cast<uint32_t>(hr);
  x.detail[2] = ctx.ExitReason == WHvRunVpExitReasonMemoryAccess ? ctx.MemoryAccess.Gpa : ctx.IoPortAccess.PortNumber;
  x.detail[3] = ctx.VpContext.Rip;
  x.ndetail = 4;
  return x;
}

DecodedExit WhpVcpuRun::Halt(const WHV_RUN_VP_EXIT_CONTEXT& ctx) {
  // Interrupts off: nothing but an NMI or INIT can wake it. Report it, as
  // KVM without an in-kernel LAPIC does (tiny guests end this way).
  if (!(ctx.VpContext.Rflags & kRflagsIf)) return Typed(ExitType::kHlt);
  // Interrupts on: idle until JS requests an interrupt for this vCPU, a
  // pause or stop kicks it, or kHaltIdleMs passes; then enter again.
  int32_t seen = wake_.load(std::memory_order_acquire);
  if (!cancel_.load(std::memory_order_acquire)) WaitOnAddress(reinterpret_cast<volatile VOID*>(&wake_), &seen, sizeof seen, kHaltIdleMs);
  return Typed(ExitType::kRetry);
}

bool WhpVcpuRun::SkipInstruction(const WHV_RUN_VP_EXIT_CONTEXT& ctx, const WHV_REGISTER_NAME* extra, const WHV_REGISTER_VALUE* values, uint32_t n) {
  WHV_REGISTER_NAME names[5];
  WHV_REGISTER_VALUE vals[5];
  ZeroMemory(vals, sizeof vals);
  names[0] = WHvX64RegisterRip;
  vals[0].Reg64 = ctx.VpContext.Rip + ctx.VpContext.InstructionLength;
  for (uint32_t i = 0; i < n && i < 4; i++) {
    names[i + 1] = extra[i];
    vals[i + 1] = values[i];
  }
  return SUCCEEDED(Whp().WHvSetVirtualProcessorRegisters(shared_->handle, index_, names, n + 1, vals));
}

DecodedExit WhpVcpuRun::Cpuid(const WHV_RUN_VP_EXIT_CONTEXT& ctx) {
  const WHV_X64_CPUID_ACCESS_CONTEXT& c = ctx.CpuidAccess;
  uint32_t fn = static_cast<uint32_t>(c.Rax), sub = static_cast<uint32_t>(c.Rcx);
  uint64_t r[4] = {c.DefaultResultRax, c.DefaultResultRbx, c.DefaultResultRcx, c.DefaultResultRdx};
  // Written only before the vCPUs start (partition construction).
  for (const WhpCpuidOverride& o : shared_->cpuid) {
    if (o.function == fn && (o.index == 0xffffffffu || o.index == sub)) {
      r[0] = o.eax;
      r[1] = o.ebx;
      r[2] = o.ecx;
      r[3] = o.edx;
      break;
    }
  }
  const WHV_REGISTER_NAME names[4] = {WHvX64RegisterRax, WHvX64RegisterRbx, WHvX64RegisterRcx, WHvX64RegisterRdx};
  WHV_REGISTER_VALUE vals[4];
  ZeroMemory(vals, sizeof vals);
  for (int i = 0; i < 4; i++) vals[i].Reg64 = r[i];
  if (SkipInstruction(ctx, names, vals, 4)) return Typed(ExitType::kRetry);
  DecodedExit x = Typed(ExitType::kInternalError);
  x.subtype = kSuberrorRunFailed;
  x.detail[0] = ctx.VpContext.Rip;
  x.ndetail = 1;
  return x;
}

DecodedExit WhpVcpuRun::Msr(const WHV_RUN_VP_EXIT_CONTEXT& ctx) {
  // MSRs the hypervisor does not implement: reads give 0 and writes are
  // dropped (QEMU's WHPX does the same), both counted (msrCounts()).
  WHV_REGISTER_NAME names[2] = {WHvX64RegisterRax, WHvX64RegisterRdx};
  WHV_REGISTER_VALUE vals[2];
  ZeroMemory(vals, sizeof vals);
  bool ok;
  if (ctx.MsrAccess.AccessInfo.IsWrite) {
    shared_->msr_writes_ignored.fetch_add(1, std::memory_order_relaxed);
    ok = SkipInstruction(ctx, names, vals, 0);
  } else {
    shared_->msr_reads_ignored.fetch_add(1, std::memory_order_relaxed);
    ok = SkipInstruction(ctx, names, vals, 2);
  }
  if (ok) return Typed(ExitType::kRetry);
  DecodedExit x = Typed(ExitType::kInternalError);
  x.subtype = kSuberrorRunFailed;
  x.detail[0] = ctx.VpContext.Rip;
  x.ndetail = 1;
  return x;
}

// --- WinHvEmulation callbacks, on the vCPU thread inside Emulate() ---

HRESULT CALLBACK WhpVcpuRun::IoPortCallback(VOID* ctx, WHV_EMULATOR_IO_ACCESS_INFO* io) {
  auto* self = static_cast<WhpVcpuRun*>(ctx);
  uint32_t size = io->AccessSize;
  if (size != 1 && size != 2 && size != 4) return E_INVALIDARG;
  uint8_t data[8] = {0};
  std::memcpy(data, &io->Data, sizeof io->Data);
  bool write = io->Direction == 1;
  if (!self->Io(ExitType::kPio, write, size, io->Port, data)) return E_ABORT;
  if (!write) {
    uint32_t v = 0;
    std::memcpy(&v, data, size);
    io->Data = v;
  }
  return S_OK;
}

HRESULT CALLBACK WhpVcpuRun::MemoryCallback(VOID* ctx, WHV_EMULATOR_MEMORY_ACCESS_INFO* ma) {
  auto* self = static_cast<WhpVcpuRun*>(ctx);
  uint32_t size = ma->AccessSize;
  if (size == 0 || size > sizeof ma->Data) return E_INVALIDARG;
  bool write = ma->Direction == 1;
  uint64_t gpa = ma->GpaAddress;
  // The emulator reads and writes RAM operands through here too (a movs
  // between RAM and MMIO): RAM is copied, the rest is MMIO. A write to
  // read-only RAM is MMIO, as a KVM read-only slot makes it.
  {
    std::lock_guard<std::mutex> lock(self->shared_->slots_mu);
    for (const WhpSlot& s : self->shared_->slots) {
      if (gpa < s.gpa || gpa - s.gpa >= s.size || s.size - (gpa - s.gpa) < size) continue;
      if (write && s.readonly) break;
      uint8_t* host = s.host + (gpa - s.gpa);
      if (write) std::memcpy(host, ma->Data, size);
      else std::memcpy(ma->Data, host, size);
      return S_OK;
    }
  }
  uint8_t data[8] = {0};
  std::memcpy(data, ma->Data, size);
  if (!self->Io(ExitType::kMmio, write, size, gpa, data)) return E_ABORT;
  if (!write) std::memcpy(ma->Data, data, size);
  return S_OK;
}

HRESULT CALLBACK WhpVcpuRun::GetRegistersCallback(VOID* ctx, const WHV_REGISTER_NAME* names, UINT32 count, WHV_REGISTER_VALUE* values) {
  auto* self = static_cast<WhpVcpuRun*>(ctx);
  return Whp().WHvGetVirtualProcessorRegisters(self->shared_->handle, self->index_, names, count, values);
}

HRESULT CALLBACK WhpVcpuRun::SetRegistersCallback(VOID* ctx, const WHV_REGISTER_NAME* names, UINT32 count, const WHV_REGISTER_VALUE* values) {
  auto* self = static_cast<WhpVcpuRun*>(ctx);
  return Whp().WHvSetVirtualProcessorRegisters(self->shared_->handle, self->index_, names, count, values);
}

HRESULT CALLBACK WhpVcpuRun::TranslateGvaCallback(VOID* ctx, WHV_GUEST_VIRTUAL_ADDRESS gva, WHV_TRANSLATE_GVA_FLAGS flags, WHV_TRANSLATE_GVA_RESULT_CODE* result, WHV_GUEST_PHYSICAL_ADDRESS* gpa) {
  auto* self = static_cast<WhpVcpuRun*>(ctx);
  WHV_TRANSLATE_GVA_RESULT r;
  ZeroMemory(&r, sizeof r);
  HRESULT hr = Whp().WHvTranslateGva(self->shared_->handle, self->index_, gva, flags, &r, gpa);
  if (SUCCEEDED(hr)) *result = r.ResultCode;
  return hr;
}

}  // namespace nodevmm

#endif  // _WIN32
