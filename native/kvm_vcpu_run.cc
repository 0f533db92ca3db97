// The KVM side of a vCPU's run loop: its fd and kvm_run mapping, one
// KVM_RUN, and the decode of kvm_run into the backend-neutral DecodedExit
// (hypervisor.h) the thread in vcpu_thread.cc works on.
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "kvm_vm.h"

namespace nodevmm {

namespace {
// The first (at most 4) data words of a system-event or internal-error exit.
template <typename Word>
void CopyDetail(DecodedExit* x, const Word* data, uint32_t n) {
  x->ndetail = n > 4 ? 4 : n;
  for (uint32_t i = 0; i < x->ndetail; i++) x->detail[i] = data[i];
}
}  // namespace

KvmVcpuRun::KvmVcpuRun(int fd, kvm_run* run, size_t run_size) : fd_(fd), run_(run), run_size_(run_size) {}

KvmVcpuRun::~KvmVcpuRun() {
  if (run_) munmap(run_, run_size_);
  if (fd_ >= 0) close(fd_);
}

void KvmVcpuRun::RequestImmediateExit(bool on) {
  // SAFETY: run_ is the live kvm_run mapping of this vCPU.
  __atomic_store_n(&run_->immediate_exit, on ? 1 : 0, __ATOMIC_RELEASE);
}

DecodedExit KvmVcpuRun::Run() {
  DecodedExit x;
  int r = ioctl(fd_, KVM_RUN, 0);
  if (r < 0) {
    if (errno == EINTR) {
      RequestImmediateExit(false);
      x.type = ExitType::kInterrupted;
    } else if (errno == EAGAIN) {
      x.type = ExitType::kRetry;
    } else {
      x.type = ExitType::kInternalError;
      x.subtype = 0xffff;  // host-side run failure, detail[0] = errno
      x.detail[0] = static_cast<uint64_t>(errno);
      x.ndetail = 1;
    }
    return x;
  }
  x.raw_reason = run_->exit_reason;
  switch (run_->exit_reason) {
    case KVM_EXIT_IO:
      x.type = ExitType::kPio;
      x.is_write = run_->io.direction == KVM_EXIT_IO_OUT;
      x.size = run_->io.size;
      x.count = run_->io.count;
      x.address = run_->io.port;
      // SAFETY: data_offset lies inside the kvm_run mapping (KVM ABI).
      x.data = reinterpret_cast<uint8_t*>(run_) + run_->io.data_offset;
      break;
    case KVM_EXIT_MMIO:
      x.type = ExitType::kMmio;
      x.is_write = run_->mmio.is_write;
      x.size = run_->mmio.len;
      x.address = run_->mmio.phys_addr;
      x.data = run_->mmio.data;
      break;
    case KVM_EXIT_HLT:
      x.type = ExitType::kHlt;
      break;
    case KVM_EXIT_SHUTDOWN:
      x.type = ExitType::kShutdown;
      break;
    case KVM_EXIT_SYSTEM_EVENT:
      x.type = ExitType::kSystemEvent;
      x.subtype = run_->system_event.type;
      CopyDetail(&x, run_->system_event.data, run_->system_event.ndata);
      break;
    case KVM_EXIT_FAIL_ENTRY:
      x.type = ExitType::kFailEntry;
      x.detail[0] = run_->fail_entry.hardware_entry_failure_reason;
      x.detail[1] = run_->fail_entry.cpu;
      x.ndetail = 2;
      break;
    case KVM_EXIT_INTERNAL_ERROR:
      x.type = ExitType::kInternalError;
      x.subtype = run_->internal.suberror;
      CopyDetail(&x, run_->internal.data, run_->internal.ndata);
      break;
    case KVM_EXIT_DEBUG:
      x.type = ExitType::kDebug;
#if defined(__x86_64__)
      x.detail[0] = run_->debug.arch.exception;
      x.detail[1] = run_->debug.arch.pc;
      x.detail[2] = run_->debug.arch.dr6;
      x.detail[3] = run_->debug.arch.dr7;
      x.ndetail = 4;
#elif defined(__aarch64__)
      x.detail[0] = run_->debug.arch.hsr;
      x.detail[1] = run_->debug.arch.far;
      x.ndetail = 2;
#endif
      break;
    case KVM_EXIT_INTR:
      RequestImmediateExit(false);
      x.type = ExitType::kInterrupted;
      break;
#if defined(__x86_64__)
    case KVM_EXIT_IOAPIC_EOI:
      // Split irqchip: the in-kernel LAPIC saw an EOI for a vector that a
      // level-triggered route of the userspace IOAPIC targets.
      x.type = ExitType::kIoapicEoi;
      x.address = run_->eoi.vector;
      break;
#endif
    case KVM_EXIT_IRQ_WINDOW_OPEN:
      x.type = ExitType::kRetry;
      break;
    default:
      x.type = ExitType::kUnknown;
      break;
  }
  return x;
}

}  // namespace nodevmm
