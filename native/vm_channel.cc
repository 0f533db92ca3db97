#include "vm_channel.h"

#include <chrono>
#include <cstring>

namespace nodevmm {

VmChannel::VmChannel() : control_(std::make_shared<VmControl>()) {
  std::memset(static_cast<void*>(control_.get()), 0, sizeof(VmControl));
}

Napi::Value VmChannel::ControlBuffer(Napi::Env env) {
  if (!control_ab_.IsEmpty() && !control_ab_.Value().IsEmpty()) return control_ab_.Value();
  // SAFETY: the buffer's finalizer holds a reference to the control block,
  // so JS can never see it freed, whatever the VM's own lifetime.
  auto* hold = new std::shared_ptr<VmControl>(control_);
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
      env, control_.get(), sizeof(VmControl), [](Napi::Env, void*, std::shared_ptr<VmControl>* h) { delete h; }, hold);
  control_ab_ = Napi::Persistent(ab);
  return ab;
}

// fn() is called (coalesced) whenever exits, posted writes or events wait for JS.
bool VmChannel::SetNotify(Napi::Env env, Napi::Function fn, std::string* err) {
  if (has_tsfn_) {
    *err = "notify already set";
    return false;
  }
  tsfn_ = Napi::ThreadSafeFunction::New(env, fn, "nodevmm-exits", 0, 1);
  tsfn_.Unref(env);
  has_tsfn_ = true;
  return true;
}

// When the wakeup left, on the clock process.hrtime() reads (CLOCK_MONOTONIC
// on Linux): JS grows its polling window when an exit came soon after it went
// idle, and it must judge that by when the exit happened, not by when the
// event loop got round to it (which alone can exceed the window).
void VmChannel::StampWakeup() {
  uint64_t ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
  control_->notified_ns.store(ns, std::memory_order_relaxed);
}

void VmChannel::Notify() {
  if (!has_tsfn_) return;
  // Look before the exchange: while JS polls it keeps the flag set and reads
  // this cache line, and an exchange per exit would take the line from it.
  // The fence orders the caller's publication (mailbox, ring head, event
  // count) before this load, as the exchange did: JS stores the flag, then
  // looks at those; one side always sees the other's store.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (control_->notify_pending.load(std::memory_order_relaxed) == kNotifyOwed) return;
  if (control_->notify_pending.exchange(kNotifyOwed, std::memory_order_acq_rel) != kNotifyOwed) {
    StampWakeup();
    tsfn_.NonBlockingCall();
  }
}

void VmChannel::NotifyPosted() {
  if (!has_tsfn_) return;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (control_->notify_pending.load(std::memory_order_relaxed) != kNotifyIdle) return;
  // A CAS, not an exchange: JS may store kNotifyPostedLater meanwhile, and
  // overwriting it with kNotifyOwed would keep the next exit from waking JS.
  int32_t expected = kNotifyIdle;
  if (control_->notify_pending.compare_exchange_strong(expected, kNotifyOwed, std::memory_order_acq_rel)) {
    StampWakeup();
    tsfn_.NonBlockingCall();
  }
}

void VmChannel::PostEvent(VcpuEvent ev) {
  {
    std::lock_guard<std::mutex> lock(events_mu_);
    events_.push_back(std::move(ev));
    control_->event_count.store(static_cast<int32_t>(events_.size()), std::memory_order_release);
  }
  Notify();
}

static Napi::Object ExitToJs(Napi::Env env, const DecodedExit& x) {
  Napi::Object o = Napi::Object::New(env);
  const char* type = "unknown";
  switch (x.type) {
    case ExitType::kHlt: type = "hlt"; break;
    case ExitType::kShutdown: type = "shutdown"; break;
    case ExitType::kSystemEvent: type = "system-event"; break;
    case ExitType::kFailEntry: type = "fail-entry"; break;
    case ExitType::kInternalError: type = "internal-error"; break;
    case ExitType::kDebug: type = "debug"; break;
    case ExitType::kPio: type = "pio"; break;
    case ExitType::kMmio: type = "mmio"; break;
    default: break;
  }
  o.Set("type", type);
  o.Set("rawReason", x.raw_reason);
  o.Set("subtype", x.subtype);
  Napi::Array d = Napi::Array::New(env, x.ndetail);
  for (uint32_t i = 0; i < x.ndetail; i++) d.Set(i, Napi::BigInt::New(env, x.detail[i]));
  o.Set("detail", d);
  if (x.type == ExitType::kPio || x.type == ExitType::kMmio) {
    o.Set("address", Napi::BigInt::New(env, x.address));
    o.Set("size", x.size);
    o.Set("isWrite", x.is_write);
  }
  return o;
}

Napi::Value VmChannel::TakeEvents(Napi::Env env) {
  std::vector<VcpuEvent> evs;
  {
    std::lock_guard<std::mutex> lock(events_mu_);
    evs.swap(events_);
    control_->event_count.store(0, std::memory_order_release);
  }
  Napi::Array out = Napi::Array::New(env, evs.size());
  for (size_t i = 0; i < evs.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("vcpu", evs[i].vcpu);
    o.Set("type", evs[i].type);
    if (evs[i].type == "exited") {
      o.Set("exit", ExitToJs(env, evs[i].exit));
      o.Set("reason", evs[i].reason);
    }
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

void VmChannel::Ref(Napi::Env env) {
  if (has_tsfn_ && !closed_) tsfn_.Ref(env);
}

void VmChannel::Unref(Napi::Env env) {
  if (has_tsfn_ && !closed_) tsfn_.Unref(env);
}

void VmChannel::Close(Napi::Env env) {
  if (closed_) return;
  closed_ = true;
  if (has_tsfn_) tsfn_.Release();
  if (!control_ab_.IsEmpty()) {
    Napi::Value v = control_ab_.Value();
    if (!v.IsEmpty() && v.IsArrayBuffer() && !v.As<Napi::ArrayBuffer>().IsDetached()) napi_detach_arraybuffer(env, v);
    control_ab_.Reset();
  }
}

void VmChannel::Abandon() {
  if (closed_) return;
  closed_ = true;
  if (has_tsfn_) tsfn_.Abort();
}

}  // namespace nodevmm
