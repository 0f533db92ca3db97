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
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace nodevmm {

// Shared with view finalizers and I/O pins: how many of them are alive
// (`live` counts both, `pins` only the pins) and whether the mapping must be
// unmapped when the last one goes.
struct GuestRamDeferred {
  std::atomic<int> live{0};
  std::atomic<int> pins{0};
  std::atomic<bool> unmap_when_last{false};
  uint8_t* host = nullptr;
  uint64_t size = 0;
  // Transfers running on other threads right now (IoPin::Begin..End), and
  // whether the RAM was released (no transfer may start after that).
  std::mutex io_mu;
  std::condition_variable io_cv;
  int io_active = 0;
  bool io_closed = false;
};

class GuestRam : public Napi::ObjectWrap<GuestRam> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit GuestRam(const Napi::CallbackInfo& info);
  ~GuestRam() override;

  // Keeps the pages mapped while native I/O on another thread reads or
  // writes them. Create and destroy pins on the JS thread only. The thread
  // doing the transfer brackets it with Begin()/End(): Begin() refuses once
  // the RAM is released, so a transfer still queued then never starts (it
  // fails with ECANCELED), and Release() waits (bounded) for those that
  // did start, so a disk write copies the guest's bytes, never zeros.
  class IoPin {
   public:
    ~IoPin();
    // Any thread. False: the RAM was released, do not touch it.
    bool Begin();
    void End();
    IoPin(const IoPin&) = delete;
    IoPin& operator=(const IoPin&) = delete;

   private:
    friend class GuestRam;
    explicit IoPin(std::shared_ptr<struct GuestRamDeferred> d);
    std::shared_ptr<struct GuestRamDeferred> d_;
  };
  // nullptr once released.
  std::unique_ptr<IoPin> PinForIo();

  // The GuestRam behind a JS value, or nullptr (without throwing) when the
  // value is anything else, including another native class's object.
  static GuestRam* FromValue(Napi::Env env, Napi::Value v);

  uint8_t* host() const { return host_; }
  uint64_t size() const { return size_; }
  bool released() const { return host_ == nullptr; }

 private:
  Napi::Value Views(const Napi::CallbackInfo& info);
  Napi::Value ViewAt(const Napi::CallbackInfo& info);
  // One view of [host_+off, +len), held in views_ (the caller checked the range).
  Napi::ArrayBuffer MakeView(Napi::Env env, uint64_t off, uint64_t len);
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value Advise(const Napi::CallbackInfo& info);
  Napi::Value WriteTo(const Napi::CallbackInfo& info);
  Napi::Value GetSize(const Napi::CallbackInfo& info);
  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value GetHostAddress(const Napi::CallbackInfo& info);
  void ReleaseImpl(Napi::Env env);

  uint8_t* host_ = nullptr;
  uint64_t size_ = 0;
  int memfd_ = -1;
  // What the pages are (see the constructor): each frees and saves them its own way.
  enum class Backing { kAnonymous, kShared, kFile };
  Backing backing_ = Backing::kAnonymous;
  // Every view handed out, held until release() detaches it, and the length
  // taken out of V8's external memory count for it (see Views()).
  struct View {
    Napi::Reference<Napi::ArrayBuffer> ref;
    int64_t uncounted;
  };
  std::vector<View> views_;
  using Deferred = GuestRamDeferred;
  std::shared_ptr<Deferred> deferred_;
};

}  // namespace nodevmm
