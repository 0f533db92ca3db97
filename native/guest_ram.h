// Guest RAM: an mmap'd host range handed to KVM as a memory slot and to JS
// as external ArrayBuffers over the same pages (zero copy).
//
// Lifetime: JS may keep views after the VM is destroyed. Release() first
// detaches every ArrayBuffer it handed out (typed arrays over them become
// length 0, so later JS access throws or reads nothing instead of touching
// freed memory), then unmaps. A view that could not be detached (transferred
// elsewhere) makes Release() replace the range with fresh anonymous pages
// instead, so the RSS still goes and no access can fault; the unmap then
// happens in the last view's finalizer.
#pragma once

#include <napi.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace nodevmm {

class GuestRam : public Napi::ObjectWrap<GuestRam> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit GuestRam(const Napi::CallbackInfo& info);
  ~GuestRam() override;

  uint8_t* host() const { return host_; }
  uint64_t size() const { return size_; }
  bool released() const { return host_ == nullptr; }

 private:
  Napi::Value Views(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value Advise(const Napi::CallbackInfo& info);
  Napi::Value GetSize(const Napi::CallbackInfo& info);
  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value GetHostAddress(const Napi::CallbackInfo& info);
  void ReleaseImpl(Napi::Env env);

  uint8_t* host_ = nullptr;
  uint64_t size_ = 0;
  int memfd_ = -1;
  std::vector<Napi::Reference<Napi::ArrayBuffer>> views_;
  // Shared with view finalizers: how many views are alive and whether the
  // mapping must be unmapped when the last one goes.
  struct Deferred {
    std::atomic<int> live{0};
    std::atomic<bool> unmap_when_last{false};
    uint8_t* host = nullptr;
    uint64_t size = 0;
  };
  std::shared_ptr<Deferred> deferred_;
};

}  // namespace nodevmm
