// The I/O route table the vCPU threads consult on every port or MMIO exit:
// for each claimed range, what a thread may answer without JS. JS replaces
// the whole table (copy-on-write); a thread holds the table it looked in
// until it is done with the route. Hypervisor-neutral.
#pragma once

#include <napi.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace nodevmm {

// A claimed I/O range and how the vCPU thread answers it without JS.
struct Route {
  uint32_t kind;            // kExitKindPio or kExitKindMmio
  uint64_t start;           // inclusive
  uint64_t end;             // exclusive
  uint32_t mode;            // kRouteJs or kRouteConstant
  uint32_t posted_mask;     // bit n: writes at offset n are posted (queued, not waited for)
  uint32_t shadow_mask;     // bit n: 1-byte reads at offset n come from the shadow page
  uint32_t shadow_offset;   // where this range's shadow bytes start in the shadow page
  // bit n: a 1-byte write posted at offset n is also stored, ANDed with
  // mirror_and[n], into shadow byte n, so a shadowed read that follows it
  // sees it before JS has applied it (registers that read back what was
  // written). A subset of posted_mask & shadow_mask; wider writes at these
  // offsets are not posted.
  uint32_t mirror_mask;
  uint8_t mirror_and[32];
  uint64_t read_value;      // kRouteConstant: value returned for reads
  // An interrupt-status register pair (virtio-mmio InterruptStatus and
  // InterruptACK) answered here: 4-byte reads at isr_read return the 32-bit
  // word at the start of the shadow block ORed with the next word (bits JS
  // holds set), 4-byte writes at isr_ack clear the bits written in the first.
  // JS sets bits atomically when it raises an interrupt. Only for
  // edge-triggered lines: an ACK here never lowers a line.
  uint32_t isr_read;        // register offset, or kNoIsr
  uint32_t isr_ack;         // register offset, or kNoIsr
};
constexpr uint32_t kNoIsr = 0xffffffffu;
enum RouteMode : uint32_t { kRouteJs = 0, kRouteConstant = 1 };

using Routes = std::shared_ptr<const std::vector<Route>>;

class RouteTable {
 public:
  RouteTable();
  // Parse JS's route array (lib/hv/route-table.ts Route), check it against a
  // shadow page of `shadow_size` bytes, and swap it in. Returns false with
  // `err` set, leaving the current table, when a route is malformed.
  bool SetFromJs(Napi::Value routes, size_t shadow_size, std::string* err);
  // The route holding `address`, or null; `hold` keeps its table alive.
  const Route* Find(uint32_t kind, uint64_t address, Routes* hold) const;

 private:
  Routes routes_;
  std::mutex mu_;  // serializes writers; readers use atomic_load
};

}  // namespace nodevmm
