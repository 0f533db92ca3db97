// The vCPU thread (vcpu_thread.h): enters the guest through its backend and
// answers hot exits here (unclaimed ports, constant ranges, register
// shadows, posted writes); only exits a TypeScript device must see go
// through the mailbox.
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif
#if !defined(_WIN32)
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#endif

#include <cstdio>
#include <cstring>

#include "vcpu_thread.h"
#include "wait_word.h"  // on Windows also <windows.h> (VirtualAlloc)

namespace nodevmm {

namespace {
// How long a vCPU spins for JS's answer before sleeping (~40 us of pause
// here): long enough to cover a busy event loop's handler, short enough not
// to burn a core. The window adapts (VcpuThread::spin_): halved after a wait
// that ended asleep, doubled after an answer that came while spinning. When
// every core is busy, spinning for an answer that does not come keeps the JS
// thread off the core it needs.
constexpr int kSpinIterations = 4000;
constexpr int kMinSpinIterations = 64;
inline void CpuRelax() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#endif
}

// Atomic accesses to the control page's shadow bytes and status words, which
// JS writes with Atomics: GCC/Clang builtins, or MSVC's intrinsics (on x64 a
// volatile load plus a compiler barrier is an acquire load).
inline uint8_t LoadAcquire(const uint8_t* p) {
#if defined(_MSC_VER) && !defined(__clang__)
  uint8_t v = *static_cast<const volatile uint8_t*>(p);
  _ReadWriteBarrier();
  return v;
#else
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#endif
}
inline void StoreRelease(uint8_t* p, uint8_t v) {
#if defined(_MSC_VER) && !defined(__clang__)
  _ReadWriteBarrier();
  *static_cast<volatile uint8_t*>(p) = v;
#else
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
#endif
}
inline uint32_t LoadAcquire(const uint32_t* p) {
#if defined(_MSC_VER) && !defined(__clang__)
  uint32_t v = *static_cast<const volatile uint32_t*>(p);
  _ReadWriteBarrier();
  return v;
#else
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#endif
}
inline void FetchAnd(uint32_t* p, uint32_t mask) {
#if defined(_MSC_VER) && !defined(__clang__)
  _InterlockedAnd(reinterpret_cast<volatile long*>(p), static_cast<long>(mask));
#else
  __atomic_fetch_and(p, mask, __ATOMIC_ACQ_REL);
#endif
}

// The shared pages (mailbox and posted-write ring, ~48 KiB) straight from the
// OS, zeroed, and given back to it when the last holder lets go: from malloc,
// blocks of this size stayed in the allocator's heap after free (300 snapshot
// restores grew the process by 17 MiB). Falls back to the heap if the OS
// refuses.
std::shared_ptr<VcpuShared> NewVcpuShared() {
#if defined(_WIN32)
  void* p = VirtualAlloc(nullptr, sizeof(VcpuShared), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
  if (p) return std::shared_ptr<VcpuShared>(static_cast<VcpuShared*>(p), [](VcpuShared* s) { VirtualFree(s, 0, MEM_RELEASE); });
#else
  void* p = mmap(nullptr, sizeof(VcpuShared), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p != MAP_FAILED) return std::shared_ptr<VcpuShared>(static_cast<VcpuShared*>(p), [](VcpuShared* s) { munmap(s, sizeof(VcpuShared)); });
#endif
  auto heap = std::make_shared<VcpuShared>();
  std::memset(static_cast<void*>(heap.get()), 0, sizeof(VcpuShared));
  return heap;
}
}  // namespace

VcpuThread::VcpuThread(VmChannel* channel, VcpuBackend* backend, uint32_t index)
    : channel_(channel), backend_(backend), index_(index), shared_(NewVcpuShared()) {
  shared_->mailbox.vcpu_index = index;
  backend_->SetIoHandler(this);
}

VcpuThread::~VcpuThread() {
  Stop();
  Join();
}

bool VcpuThread::Start(std::string* err) {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_) {
    *err = "vcpu already started";
    return false;
  }
  started_ = true;
  state_ = VcpuState::kPaused;
  std::atomic<bool> ready{false};
  std::mutex rmu;
  std::condition_variable rcv;
  thread_ = std::thread([this, &ready, &rmu, &rcv] {
    {
      std::lock_guard<std::mutex> k(kick_mu_);
#if !defined(_WIN32)
      tid_ = pthread_self();
#endif
      thread_alive_ = true;
    }
#if !defined(_WIN32)
    char name[16];
    snprintf(name, sizeof name, "nodevmm-vcpu%u", index_);
    pthread_setname_np(pthread_self(), name);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, KickSignal());
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
#endif
    {
      // Notify under the lock: rmu and rcv live on Start()'s stack, which
      // may unwind as soon as the waiter can see `ready`.
      std::lock_guard<std::mutex> l(rmu);
      ready = true;
      rcv.notify_all();
    }
    ThreadMain();
    // After this, Kick() must not signal: the pthread_t may be reused by a
    // thread of another VM once this one is joined.
    std::lock_guard<std::mutex> k(kick_mu_);
    thread_alive_ = false;
  });
  // Barrier: a kick sent right after start() must find the thread ready.
  std::unique_lock<std::mutex> l(rmu);
  rcv.wait(l, [&] { return ready.load(); });
  return true;
}

void VcpuThread::Kick() {
  backend_->RequestImmediateExit(true);
  std::atomic_thread_fence(std::memory_order_release);
#if !defined(_WIN32)
  // KVM: immediate_exit only covers a KVM_RUN not yet entered; the signal
  // interrupts one in progress. (WHP's cancel covers both.)
  std::lock_guard<std::mutex> k(kick_mu_);
  if (thread_alive_) pthread_kill(tid_, KickSignal());
#endif
}

void VcpuThread::Resume() {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ == VcpuState::kExited || state_ == VcpuState::kJoined) return;
  request_ = kRequestNone;
  resume_requested_ = true;
  cv_.notify_all();
}

void VcpuThread::Pause() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == VcpuState::kPaused) {
      // Not in the guest (or a resume not yet picked up): cancel it and
      // answer at once, so every pause gets exactly one "paused" event.
      resume_requested_ = false;
    } else {
      if (state_ == VcpuState::kRunning && request_ != kRequestStop) request_ = kRequestPause;
      if (state_ != VcpuState::kRunning) return;  // exited/joined: nothing to pause
      goto kick;
    }
  }
  {
    VcpuEvent ev;
    ev.vcpu = index_;
    ev.type = "paused";
    channel_->PostEvent(std::move(ev));
  }
  return;
kick:
  Kick();
}

void VcpuThread::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    request_ = kRequestStop;
    cv_.notify_all();
  }
  // ABORTED is terminal: every later transition of the vCPU thread
  // (IDLE->PENDING) and of JS (PENDING->IDLE, the answer) is a CAS that
  // fails on it. Whatever the thread is doing (in KVM_RUN, between its
  // return and publishing an exit, spinning or asleep waiting for JS, in a
  // rep string loop), its next mailbox step sees ABORTED and it leaves.
  ExitMailbox& mb = shared_->mailbox;
  mb.state.exchange(kMailboxAborted, std::memory_order_seq_cst);
  WakeAll(&mb.state);
  // In the guest (or about to enter it): the backend's kick.
  if (started_) Kick();
}

void VcpuThread::Join() {
  if (thread_.joinable()) thread_.join();
  if (started_) state_ = VcpuState::kJoined;
}

void VcpuThread::ThreadMain() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return request_ == kRequestStop || resume_requested_; });
      if (request_ == kRequestStop) break;
      resume_requested_ = false;
      state_ = VcpuState::kRunning;
    }
    bool exited = false;
    // An I/O exit answered but not yet finished by KVM: the instruction
    // completes (RIP moves on, an IN's value lands in RAX) only on the next
    // KVM_RUN (Documentation/virt/kvm/api.rst, kvm_run.immediate_exit).
    bool io_unfinished = false;
    for (;;) {
      int32_t req = request_.load(std::memory_order_acquire);
      if (req != kRequestNone) {
        // Finish it without running guest code, so the registers a paused
        // vCPU shows (a snapshot saves) are consistent. A string instruction
        // may exit again for its next element: answer that one too.
        while (req == kRequestPause && io_unfinished) {
          backend_->RequestImmediateExit(true);
          DecodedExit x = backend_->Run();
          io_unfinished = (x.type == ExitType::kPio || x.type == ExitType::kMmio) && HandleIo(x);
        }
        backend_->RequestImmediateExit(false);
        break;
      }
      DecodedExit x = backend_->Run();
      io_unfinished = false;
      if (x.type == ExitType::kPio || x.type == ExitType::kMmio) {
        if (!HandleIo(x)) break;  // aborted while waiting for JS
        io_unfinished = true;
        continue;
      }
      if (x.type == ExitType::kIoapicEoi) {
        // Answered before the guest runs on, so a level line still asserted
        // is re-delivered by the IOAPIC model before the next instruction.
        uint8_t vector = static_cast<uint8_t>(x.address);
        if (!DispatchToJs(kExitKindEoi, true, 1, x.address, &vector)) break;  // aborted
        continue;
      }
      if (x.type == ExitType::kInterrupted || x.type == ExitType::kRetry) continue;
      // Guest stop or failure: report it and leave the run loop for good.
      VcpuEvent ev;
      ev.vcpu = index_;
      ev.type = "exited";
      ev.exit = x;
      state_ = VcpuState::kExited;
      channel_->PostEvent(std::move(ev));
      exited = true;
      break;
    }
    if (exited) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return request_ == kRequestStop; });
      break;
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (request_ == kRequestStop) break;
    if (request_ == kRequestPause) {
      request_ = kRequestNone;
      state_ = VcpuState::kPaused;
      lock.unlock();
      VcpuEvent ev;
      ev.vcpu = index_;
      ev.type = "paused";
      channel_->PostEvent(std::move(ev));
    }
  }
  if (state_ != VcpuState::kExited) state_ = VcpuState::kPaused;
}

bool VcpuThread::PostWrite(uint32_t kind, uint32_t size, uint64_t address, uint64_t value) {
  VcpuShared* s = shared_.get();
  uint32_t head = s->ring_head.load(std::memory_order_relaxed);
  uint32_t tail = s->ring_tail.load(std::memory_order_acquire);
  if (head - tail >= kRingEntries) return false;  // full: caller goes synchronous
  PostedWrite& w = s->ring[head % kRingEntries];
  w.kind = kind;
  w.size = size;
  w.address = address;
  w.data = value;
  s->ring_head.store(head + 1, std::memory_order_seq_cst);
  // Dekker pairing with the JS consumer (store tail, then load head): if JS
  // had drained everything before our store, we must wake it, unless it said
  // it drains the ring by itself. Half full, it is woken in any case, so
  // that a guest printing faster than JS's drains does not fill the ring.
  uint32_t tail2 = s->ring_tail.load(std::memory_order_seq_cst);
  if (tail2 == head) channel_->NotifyPosted();
  else if (head + 1 - tail2 == kRingEntries / 2) channel_->Notify();
  s->mailbox.exits_posted++;
  return true;
}

bool VcpuThread::DispatchToJs(uint32_t kind, bool is_write, uint32_t size, uint64_t address, uint8_t* data) {
  ExitMailbox& mb = shared_->mailbox;
  mb.kind = kind;
  mb.is_write = is_write;
  mb.size = size;
  mb.address = address;
  uint64_t v = 0;
  if (is_write) std::memcpy(&v, data, size > 8 ? 8 : size);
  mb.data = v;
  mb.exits_to_js++;
  int32_t expected = kMailboxIdle;
  if (!mb.state.compare_exchange_strong(expected, kMailboxPending, std::memory_order_acq_rel)) return false;  // aborted
  channel_->Notify();
  for (;;) {
    for (int i = 0; i < spin_; i++) {
      int32_t st = mb.state.load(std::memory_order_acquire);
      if (st != kMailboxPending) {
        spin_ = spin_ * 2 > kSpinIterations ? kSpinIterations : spin_ * 2;
        goto answered;
      }
      CpuRelax();
    }
    spin_ = spin_ / 2 < kMinSpinIterations ? kMinSpinIterations : spin_ / 2;
    // A stop asked for after we published: Stop() aborts the mailbox too,
    // but do not rely on one mechanism for leaving.
    if (request_.load(std::memory_order_acquire) == kRequestStop) return false;
    mb.sleeping.store(1, std::memory_order_seq_cst);
    if (mb.state.load(std::memory_order_seq_cst) == kMailboxPending) WaitWhileEquals(&mb.state, kMailboxPending);
    mb.sleeping.store(0, std::memory_order_relaxed);
    if (mb.state.load(std::memory_order_acquire) != kMailboxPending) break;
  }
answered:
  // Not PENDING: IDLE (JS answered; its CAS released `data`) or ABORTED. A
  // stop that lands after this check is seen by the next exit's CAS.
  if (mb.state.load(std::memory_order_acquire) != kMailboxIdle) return false;  // aborted
  if (!is_write) {
    uint64_t r = mb.data;
    std::memcpy(data, &r, size > 8 ? 8 : size);
  }
  return true;
}

bool VcpuThread::HandleIo(const DecodedExit& x) {
  uint32_t kind = x.type == ExitType::kPio ? kExitKindPio : kExitKindMmio;
  Routes hold;
  VmControl* ctl = channel_->control();
  for (uint32_t i = 0; i < x.count; i++) {
    uint8_t* data = x.data + static_cast<size_t>(i) * x.size;
    const Route* r = channel_->FindRoute(kind, x.address, &hold);
    if (!r) {
      // Unclaimed: reads float high like an empty ISA bus, writes vanish.
      if (x.is_write) ctl->unclaimed_writes.fetch_add(1, std::memory_order_relaxed);
      else {
        std::memset(data, 0xff, x.size);
        ctl->unclaimed_reads.fetch_add(1, std::memory_order_relaxed);
      }
      shared_->mailbox.exits_native++;
      continue;
    }
    uint64_t off = x.address - r->start;
    if (r->mode == kRouteConstant) {
      if (!x.is_write) std::memcpy(data, &r->read_value, x.size > 8 ? 8 : x.size);
      shared_->mailbox.exits_native++;
      continue;
    }
    if (r->isr_read != kNoIsr && x.size == 4 && (off == r->isr_read || off == r->isr_ack)) {
      // SAFETY: shadow_offset is a 32-byte aligned block inside the shadow
      // page (checked in SetRoutes), so these are aligned 4-byte words: the
      // status, then the bits held set (reported on every read, never ACKed).
      uint32_t* isr = reinterpret_cast<uint32_t*>(&ctl->shadow[r->shadow_offset]);
      if (!x.is_write && off == r->isr_read) {
        uint32_t v = LoadAcquire(isr) | LoadAcquire(isr + 1);
        std::memcpy(data, &v, 4);
        shared_->mailbox.exits_native++;
        continue;
      }
      if (x.is_write && off == r->isr_ack) {
        uint32_t v;
        std::memcpy(&v, data, 4);
        FetchAnd(isr, ~v);
        shared_->mailbox.exits_native++;
        continue;
      }
    }
    // Byte 31 of a range's shadow block is JS's switch: bit 0 enables the
    // shadows, bit 1 posting. A device turns them off while its reads would
    // depend on a posted write (e.g. a UART in loopback mode).
    uint8_t sw = (r->shadow_mask | r->posted_mask) ? LoadAcquire(&ctl->shadow[r->shadow_offset + 31]) : 0;
    if (off < 31) {
      uint32_t bit = 1u << off;
      if (x.is_write && (r->posted_mask & bit) && (sw & 2) && (x.size == 1 || !(r->mirror_mask & bit))) {
        // A mirrored register's shadow byte takes the write first: it is
        // what this vCPU's next read of it returns, and JS, which applies
        // the write later (or now, if the ring is full), leaves the byte to
        // the vCPUs while posting is on.
        if (r->mirror_mask & bit) StoreRelease(&ctl->shadow[r->shadow_offset + off], data[0] & r->mirror_and[off]);
        uint64_t v = 0;
        std::memcpy(&v, data, x.size > 8 ? 8 : x.size);
        if (PostWrite(kind, x.size, x.address, v)) continue;
      } else if (!x.is_write && x.size == 1 && (r->shadow_mask & bit) && (sw & 1)) {
        data[0] = LoadAcquire(&ctl->shadow[r->shadow_offset + off]);
        shared_->mailbox.exits_native++;
        continue;
      }
    }
    if (!DispatchToJs(kind, x.is_write, x.size, x.address, data)) return false;
  }
  return true;
}

}  // namespace nodevmm
