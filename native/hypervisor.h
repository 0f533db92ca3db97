// The seam between the policy-free run loop and a concrete hypervisor.
// A backend decodes its own exit structure into `DecodedExit`; the run loop
// (vcpu_thread.cc) routes it to native handlers or JS without knowing
// whether it came from KVM (today), WHP or arm64 KVM (later).
#pragma once

#include <cstdint>
#include <string>

namespace nodevmm {

enum class ExitType {
  kPio,            // port I/O, possibly a rep string op (count > 1)
  kMmio,
  kHlt,
  kShutdown,       // triple fault
  kSystemEvent,    // PSCI / KVM system event: shutdown, reset, crash
  kFailEntry,
  kInternalError,  // includes emulation failure
  kDebug,
  kInterrupted,    // kicked: look at the control request
  kRetry,          // EAGAIN and the like: just run again
  kIoapicEoi,      // the guest EOId a vector a userspace IOAPIC asked to see (address = vector)
  kUnknown,
};

struct DecodedExit {
  ExitType type = ExitType::kUnknown;
  uint32_t raw_reason = 0;
  // I/O
  bool is_write = false;
  uint32_t size = 0;
  uint32_t count = 1;
  uint64_t address = 0;
  uint8_t* data = nullptr;  // points into the backend's shared run structure
  // events / errors
  uint32_t subtype = 0;
  uint64_t detail[4] = {0, 0, 0, 0};
  uint32_t ndetail = 0;
};

// A vCPU as the run loop sees it.
class VcpuBackend {
 public:
  virtual ~VcpuBackend() = default;
  // Enter the guest once; returns the decoded exit. Never throws.
  virtual DecodedExit Run() = 0;
  // Ask the next/current Run() to return promptly (async-signal-safe part is
  // the caller's signal; this sets the backend's own flag).
  virtual void RequestImmediateExit(bool on) = 0;
};

}  // namespace nodevmm
