// What a VM's vCPU threads share with JS, whatever the hypervisor: the
// control block (notify flag, event count, unclaimed counters, shadows), the
// queue of lifecycle events, the coalesced wakeup of JS, and the route table.
// A backend's VM class owns one; its vCPU threads (vcpu_thread.cc) talk to
// nothing else of it.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "exit_mailbox.h"
#include "hypervisor.h"
#include "route_table.h"

namespace nodevmm {

// Events the vCPU threads report to JS, drained by takeEvents().
struct VcpuEvent {
  uint32_t vcpu;
  std::string type;  // "paused", "exited"
  DecodedExit exit;  // for "exited"
  std::string reason;
};

class VmChannel {
 public:
  VmChannel();

  // Called from vCPU threads. Notify: an exit or event waits for JS.
  // NotifyPosted: a posted write went into an empty ring; it wakes JS only
  // from kNotifyIdle (JS may have said it drains the ring itself).
  void Notify();
  void NotifyPosted();
  void PostEvent(VcpuEvent ev);
  const Route* FindRoute(uint32_t kind, uint64_t address, Routes* hold) const { return routes_.Find(kind, address, hold); }
  VmControl* control() { return control_.get(); }
  // Set (for good) once the VM is being torn down.
  bool aborting() const { return aborting_.load(); }
  void StartAborting() { aborting_ = true; }

  // JS thread.
  bool SetRoutes(Napi::Value routes, std::string* err) { return routes_.SetFromJs(routes, sizeof(VmControl::shadow), err); }
  Napi::Value ControlBuffer(Napi::Env env);
  bool SetNotify(Napi::Env env, Napi::Function fn, std::string* err);
  Napi::Value TakeEvents(Napi::Env env);
  void Ref(Napi::Env env);
  void Unref(Napi::Env env);
  // After every vCPU thread has been joined: release the wakeup and detach
  // the control buffer from JS.
  void Close(Napi::Env env);
  // GC of a VM that was never closed: no JS may be touched.
  void Abandon();

 private:
  void StampWakeup();
  std::shared_ptr<VmControl> control_;
  RouteTable routes_;
  std::mutex events_mu_;
  std::vector<VcpuEvent> events_;
  Napi::ThreadSafeFunction tsfn_;
  bool has_tsfn_ = false;
  bool closed_ = false;
  std::atomic<bool> aborting_{false};
  Napi::Reference<Napi::ArrayBuffer> control_ab_;
};

}  // namespace nodevmm
