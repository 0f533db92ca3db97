// Addon entry. Linux: the /dev/kvm functions, GuestRam, Vm (Vcpu objects
// come from vm.createVcpu), the vhost ioctls, host AF_VSOCK sockets,
// fd-passing UNIX sockets, the fd watcher, disk I/O and the fault report (crash_report.cc). Windows: the WHP
// probe, GuestRam, WhpPartition (WhpVcpu objects come from
// partition.createVcpu). Both: the layout constants the TS mirror checks.
#include <napi.h>

#include "exit_mailbox.h"
#include "guest_ram.h"
#if defined(_WIN32)
#include "whp_vm.h"
#else
#include "deferred_close.h"
#include "kvm_vm.h"
#endif

namespace nodevmm {
void DestroyAllVms(Napi::Env env);
#if !defined(_WIN32)
void InitTap(Napi::Env env, Napi::Object exports);
void InitBlockIo(Napi::Env env, Napi::Object exports);
void InitFileOps(Napi::Env env, Napi::Object exports);
Napi::Object InitVhost(Napi::Env env, Napi::Object exports);
Napi::Object InitVsockSocket(Napi::Env env, Napi::Object exports);
Napi::Object InitFdWatcher(Napi::Env env, Napi::Object exports);
Napi::Object InitUnixSocket(Napi::Env env, Napi::Object exports);
void InitCrashReport(Napi::Env env, Napi::Object exports);
#endif
}

namespace {

Napi::Value Layout(const Napi::CallbackInfo& info) {
  using namespace nodevmm;
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("mailboxSize", sizeof(ExitMailbox));
  o.Set("mailboxState", offsetof(ExitMailbox, state));
  o.Set("mailboxKind", offsetof(ExitMailbox, kind));
  o.Set("mailboxIsWrite", offsetof(ExitMailbox, is_write));
  o.Set("mailboxSize_", offsetof(ExitMailbox, size));
  o.Set("mailboxAddress", offsetof(ExitMailbox, address));
  o.Set("mailboxData", offsetof(ExitMailbox, data));
  o.Set("mailboxExitsToJs", offsetof(ExitMailbox, exits_to_js));
  o.Set("mailboxExitsNative", offsetof(ExitMailbox, exits_native));
  o.Set("mailboxExitsPosted", offsetof(ExitMailbox, exits_posted));
  o.Set("ringHead", offsetof(VcpuShared, ring_head));
  o.Set("ringTail", offsetof(VcpuShared, ring_tail));
  o.Set("ring", offsetof(VcpuShared, ring));
  o.Set("ringEntries", kRingEntries);
  o.Set("postedWriteSize", sizeof(PostedWrite));
  o.Set("vcpuSharedSize", sizeof(VcpuShared));
  o.Set("controlNotifyPending", offsetof(VmControl, notify_pending));
  o.Set("controlEventCount", offsetof(VmControl, event_count));
  o.Set("controlNotifiedAt", offsetof(VmControl, notified_ns));
  o.Set("controlUnclaimedReads", offsetof(VmControl, unclaimed_reads));
  o.Set("controlUnclaimedWrites", offsetof(VmControl, unclaimed_writes));
  o.Set("controlShadow", offsetof(VmControl, shadow));
  o.Set("controlShadowSize", sizeof(VmControl::shadow));
  return o;
}

#if !defined(_WIN32)
// pendingCloses() -> VM fds handed to closer threads and not yet closed.
Napi::Value PendingCloses(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(nodevmm::ReapClosers()));
}
#endif

Napi::Object Init(Napi::Env env, Napi::Object exports) {
#if defined(_WIN32)
  nodevmm::InitWhp(env, exports);
  exports.Set("GuestRam", nodevmm::GuestRam::Init(env));
  exports.Set("backend", Napi::String::New(env, "whp"));
#else
  nodevmm::InitSystem(env, exports);
  nodevmm::InitTap(env, exports);
  nodevmm::InitBlockIo(env, exports);
  nodevmm::InitFileOps(env, exports);
  nodevmm::InitVhost(env, exports);
  nodevmm::InitVsockSocket(env, exports);
  nodevmm::InitFdWatcher(env, exports);
  nodevmm::InitUnixSocket(env, exports);
  nodevmm::InitCrashReport(env, exports);
  exports.Set("GuestRam", nodevmm::GuestRam::Init(env));
  exports.Set("Vm", nodevmm::Vm::Init(env));
  exports.Set("Vcpu", nodevmm::Vcpu::Init(env));
  exports.Set("pendingCloses", Napi::Function::New(env, PendingCloses, "pendingCloses"));
  exports.Set("backend", Napi::String::New(env, "kvm"));
#endif
  exports.Set("layout", Napi::Function::New(env, Layout, "layout"));
  exports.Set("arch", Napi::String::New(env,
#if defined(__x86_64__) || defined(_M_X64)
                                        "x86_64"
#elif defined(__aarch64__)
                                        "aarch64"
#else
                                        "unknown"
#endif
                                        ));
  // Stop every vCPU thread and unmap guest RAM before this environment's
  // V8 isolate goes away (process exit or worker termination).
  napi_add_env_cleanup_hook(env, [](void* arg) { nodevmm::DestroyAllVms(*static_cast<Napi::Env*>(arg)); delete static_cast<Napi::Env*>(arg); }, new Napi::Env(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(nodevmm, Init)
