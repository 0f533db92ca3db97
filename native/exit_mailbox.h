// The pages shared with JS as external ArrayBuffers (lib/hv/exit-mailbox.ts
// mirrors these offsets and asserts them at load time through `layout()`):
// per vCPU, the exit mailbox and the posted-write ring; per VM, the control
// block. Hypervisor-neutral: any backend's run loop uses the same pages.
//
// Protocol for an exit that a TypeScript device must answer:
//   vCPU thread: fill kind/address/size/data, CAS state IDLE->PENDING
//                (release), wake JS (coalesced), spin briefly, then
//                futex-wait on state; on IDLE read `data` and go on.
//   JS:          read the record, run the device, write `data` for reads,
//                CAS PENDING->IDLE (lib/hv/exit-mailbox.ts) and call
//                completeExit(i) only if the thread went to sleep.
// The answer is IDLE itself, not a DONE the vCPU would then turn into IDLE:
// that second write took the cache line back from the polling JS thread on
// every exit.
//   Stop:        store ABORTED unconditionally and wake the futex.
// ABORTED is terminal: no one ever stores over it, since every other
// transition is a CAS from a named state. So a stop that lands at any moment
// (before the thread publishes, while it waits, after JS answered) is seen
// by the thread's next mailbox step, which then leaves the run loop.
// No JS objects are created per exit; the event loop sees one task per batch.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace nodevmm {

enum MailboxState : int32_t {
  kMailboxIdle = 0,     // the vCPU owns the record
  kMailboxPending = 1,  // JS must handle it
  // 2 was DONE (JS answered); JS now answers by going back to IDLE.
  kMailboxAborted = 3,  // the vCPU is being stopped; terminal, never overwritten
};

enum ExitKind : uint32_t {
  kExitKindPio = 1,
  kExitKindMmio = 2,
  kExitKindEoi = 3,  // an EOI a userspace IOAPIC must see: address = vector, a write of size 1
};

struct alignas(64) ExitMailbox {
  std::atomic<int32_t> state;   // 0
  uint32_t kind;                // 4  ExitKind
  uint32_t is_write;            // 8
  uint32_t size;                // 12 access size in bytes (1, 2, 4, 8)
  uint64_t address;             // 16 port number or GPA
  uint64_t data;                // 24 value written, or value JS returns for a read
  std::atomic<int32_t> sleeping;// 32 the vCPU is (about to be) in futex-wait
  uint32_t vcpu_index;          // 36
  uint64_t exits_to_js;         // 40 statistics, written by the vCPU thread only
  uint64_t exits_native;        // 48
  uint64_t exits_posted;        // 56
};

static_assert(offsetof(ExitMailbox, kind) == 4, "mailbox layout");
static_assert(offsetof(ExitMailbox, address) == 16, "mailbox layout");
static_assert(offsetof(ExitMailbox, data) == 24, "mailbox layout");
static_assert(offsetof(ExitMailbox, sleeping) == 32, "mailbox layout");
static_assert(offsetof(ExitMailbox, exits_to_js) == 40, "mailbox layout");
static_assert(sizeof(ExitMailbox) == 64, "mailbox layout");

// A posted write queued by a vCPU for JS to apply later (write-only device
// registers whose effect no read depends on, e.g. a UART's THR).
struct PostedWrite {
  uint32_t kind;      // ExitKind
  uint32_t size;
  uint64_t address;
  uint64_t data;
};
static_assert(sizeof(PostedWrite) == 24, "posted write layout");

// VmControl::notify_pending: who owes whom a wakeup.
enum NotifyState : int32_t {
  kNotifyIdle = 0,         // JS waits: any exit, event or first posted write wakes it
  kNotifyOwed = 1,         // JS was woken or is running: nothing wakes it again
  kNotifyPostedLater = 2,  // JS drains the posted-write ring on its own (a timer):
                           // only exits and events wake it (Notify, not NotifyPosted)
};

// Per-VM control block shared with JS.
struct alignas(64) VmControl {
  std::atomic<int32_t> notify_pending;   // 0: NotifyState
  std::atomic<int32_t> event_count;      // events queued for takeEvents()
  std::atomic<uint64_t> notified_ns;     // 8: steady clock (ns) when a vCPU last woke JS
  uint32_t pad0[12];
  std::atomic<uint64_t> unclaimed_reads; // 64
  std::atomic<uint64_t> unclaimed_writes;// 72
  uint32_t pad1[12];
  uint8_t shadow[4096];                  // 128: register shadows written by JS
};
static_assert(offsetof(VmControl, notified_ns) == 8, "control layout");
static_assert(offsetof(VmControl, unclaimed_reads) == 64, "control layout");
static_assert(offsetof(VmControl, shadow) == 128, "control layout");

// The per-vCPU shared pages: mailbox, then the posted-write ring. JS drains
// the ring on a timer of up to 16 ms while nobody waits on the writes
// (lib/hv/exit-dispatcher.ts POSTED_LAZY_DRAIN_MS) and is woken when it is
// half full: 1024 writes cover a console printing a byte every 16 us, and
// one that prints faster costs a wakeup per 1024 writes, never a wait.
// 48 KiB per vCPU.
constexpr uint32_t kRingEntries = 2048;
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

}  // namespace nodevmm
