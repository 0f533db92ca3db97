// watchFd(fd, { readable, writable }, callback): a libuv poll watcher on the
// main event loop, so JS learns that a non-blocking fd (an AF_VSOCK socket,
// a TAP device, an eventfd) is ready without a thread and without blocking
// the loop. callback(status, readable, writable) runs on the JS thread;
// status is 0 or a negative errno. The returned handle has set(events) to
// change interest, unref() so it alone does not keep the process alive, and
// close(); closing twice does nothing.
//
// Lifetime: an open watcher holds a strong reference to its handle (like an
// open socket keeps its object alive) and keeps the loop alive; close()
// stops polling, drops the callback and frees the uv handle in its close
// callback. Close the watcher before closing the fd it watches.
#include <napi.h>
#include <uv.h>

#include "common.h"

namespace nodevmm {

namespace {

class FdWatcher : public Napi::ObjectWrap<FdWatcher> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "FdWatcher", {InstanceMethod("set", &FdWatcher::Set), InstanceMethod("close", &FdWatcher::Close), InstanceMethod("unref", &FdWatcher::UnrefHandle), InstanceAccessor("closed", &FdWatcher::Closed, nullptr)});
  }

  // new FdWatcher(fd, { readable, writable }, callback)
  explicit FdWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdWatcher>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsNumber() || !info[2].IsFunction()) {
      ThrowUsage(env, "watchFd(fd, { readable, writable }, callback)");
      return;
    }
    int fd = info[0].As<Napi::Number>().Int32Value();
    if (fd < 0) {
      ThrowUsage(env, "watchFd: fd must be a non-negative integer");
      return;
    }
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      ThrowUsage(env, "watchFd: no event loop");
      return;
    }
    poll_ = new uv_poll_t;
    int r = uv_poll_init(loop, poll_, fd);
    if (r < 0) {
      delete poll_;
      poll_ = nullptr;
      ThrowErrno(env, -r, "uv_poll_init", nullptr, "watch fd " + std::to_string(fd));
      return;
    }
    poll_->data = this;
    cb_ = Napi::Persistent(info[2].As<Napi::Function>());
    ctx_ = new Napi::AsyncContext(env, "nodevmm.FdWatcher");
    Ref();
    if (!Start(env, info[1])) CloseImpl();
  }

  ~FdWatcher() override {
    // Finalized (GC of a closed watcher, or environment teardown): the
    // reference is going away with us, so only the uv handle needs closing.
    refs_dropped_ = true;
    CloseImpl();
    delete ctx_;
  }

 private:
  static int Events(const Napi::Value& v) {
    if (!v.IsObject()) return UV_READABLE;
    Napi::Object o = v.As<Napi::Object>();
    return (o.Get("readable").ToBoolean() ? UV_READABLE : 0) | (o.Get("writable").ToBoolean() ? UV_WRITABLE : 0);
  }

  bool Start(Napi::Env env, const Napi::Value& events) {
    int ev = Events(events);
    int r = ev ? uv_poll_start(poll_, ev, OnPoll) : uv_poll_stop(poll_);
    if (r < 0) {
      ThrowErrno(env, -r, "uv_poll_start", nullptr, "watch fd");
      return false;
    }
    return true;
  }

  static void OnPoll(uv_poll_t* handle, int status, int events) {
    auto* self = static_cast<FdWatcher*>(handle->data);
    if (self == nullptr || self->cb_.IsEmpty()) return;
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    // A local handle roots the object: a close() inside the callback drops
    // our strong reference, and GC must not finalize us mid-call.
    Napi::Object keep = self->Value();
    (void)keep;
    self->cb_.MakeCallback(env.Global(), {Napi::Number::New(env, status), Napi::Boolean::New(env, (events & UV_READABLE) != 0), Napi::Boolean::New(env, (events & UV_WRITABLE) != 0)}, *self->ctx_);
    if (env.IsExceptionPending()) {
      // Nothing on the stack can catch it: report it as uncaught, as Node does for its own callbacks.
      Napi::Error e = env.GetAndClearPendingException();
      napi_fatal_exception(env, e.Value());
    }
  }

  Napi::Value Set(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (poll_ == nullptr) return env.Undefined();
    Start(env, info.Length() > 0 ? info[0] : env.Undefined());
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseImpl();
    return info.Env().Undefined();
  }

  // A watcher that should not keep the process alive on its own (a TAP: the VM does that).
  Napi::Value UnrefHandle(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    return info.Env().Undefined();
  }

  Napi::Value Closed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), poll_ == nullptr); }

  void CloseImpl() {
    if (poll_ == nullptr) return;
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
    cb_.Reset();
    // Balances the Ref() in the constructor (not taken if it threw before).
    if (!ctx_ || refs_dropped_) return;
    refs_dropped_ = true;
    Unref();
  }

  uv_poll_t* poll_ = nullptr;
  Napi::FunctionReference cb_;
  Napi::AsyncContext* ctx_ = nullptr;
  bool refs_dropped_ = false;
};

// watchFd(fd, events, callback) -> FdWatcher; the class constructor is this function's data.
Napi::Value WatchFd(const Napi::CallbackInfo& info) {
  auto* ctor = static_cast<Napi::FunctionReference*>(info.Data());
  std::vector<napi_value> args(info.Length());
  for (size_t i = 0; i < info.Length(); i++) args[i] = info[i];
  return ctor->New(args);
}

}  // namespace

Napi::Object InitFdWatcher(Napi::Env env, Napi::Object exports) {
  auto* ctor = new Napi::FunctionReference(Napi::Persistent(FdWatcher::Init(env)));
  napi_add_env_cleanup_hook(env, [](void* p) { delete static_cast<Napi::FunctionReference*>(p); }, ctor);
  exports.Set("watchFd", Napi::Function::New(env, WatchFd, "watchFd", ctor));
  return exports;
}

}  // namespace nodevmm
