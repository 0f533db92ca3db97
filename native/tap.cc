// TAP devices and fd watching, policy-free: open a TAP with TUNSETIFF,
// scatter/gather packet I/O with readv/writev, and a libuv poll watcher on
// the main loop that calls JS back when an fd is readable. Which TAP, which
// header size means what, and when to watch are decided in TypeScript.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include <vector>

#include "common.h"

namespace nodevmm {

namespace {

// openTap(name, { vnetHdr, vnetHdrSize? }) -> { fd, name }
Napi::Value OpenTap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return ThrowUsage(env, "openTap(name, options): name must be a string");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  if (name.empty() || name.size() >= IFNAMSIZ) return ThrowUsage(env, "openTap: name must be 1 to 15 bytes");
  bool vnet_hdr = false;
  int hdr_size = 12;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object o = info[1].As<Napi::Object>();
    vnet_hdr = o.Get("vnetHdr").ToBoolean();
    if (o.Has("vnetHdrSize") && o.Get("vnetHdrSize").IsNumber()) hdr_size = o.Get("vnetHdrSize").As<Napi::Number>().Int32Value();
  }
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return ThrowErrno(env, errno, "open", nullptr, "open /dev/net/tun for TAP " + name);
  struct ifreq ifr {};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet_hdr ? IFF_VNET_HDR : 0);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    return ThrowErrno(env, err, "ioctl", "TUNSETIFF", "attach TAP " + name);
  }
  if (vnet_hdr && ioctl(fd, TUNSETVNETHDRSZ, &hdr_size) < 0) {
    int err = errno;
    close(fd);
    return ThrowErrno(env, err, "ioctl", "TUNSETVNETHDRSZ", "set the vnet header size of TAP " + name);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", fd);
  out.Set("name", Napi::String::New(env, ifr.ifr_name));
  return out;
}

// tapSetOffload(fd, flags): TUNSETOFFLOAD with TUN_F_* bits.
Napi::Value TapSetOffload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) return ThrowUsage(env, "tapSetOffload(fd, flags): numbers expected");
  int fd = info[0].As<Napi::Number>().Int32Value();
  unsigned long flags = info[1].As<Napi::Number>().Uint32Value();
  if (ioctl(fd, TUNSETOFFLOAD, flags) < 0) return ThrowErrno(env, errno, "ioctl", "TUNSETOFFLOAD", "set TAP offloads");
  return env.Undefined();
}

bool CollectIovecs(const Napi::Value& v, std::vector<struct iovec>* iov) {
  if (!v.IsArray()) return false;
  Napi::Array a = v.As<Napi::Array>();
  uint32_t n = a.Length();
  if (n == 0 || n > IOV_MAX) return false;
  iov->reserve(n);
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsTypedArray()) return false;
    Napi::TypedArray t = e.As<Napi::TypedArray>();
    if (t.TypedArrayType() != napi_uint8_array) return false;
    Napi::Uint8Array u = t.As<Napi::Uint8Array>();
    iov->push_back({u.Data(), u.ByteLength()});
  }
  return true;
}

// fdReadv(fd, buffers[]) -> bytes read, or -1 when nothing is ready (EAGAIN).
Napi::Value FdReadv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<struct iovec> iov;
  if (info.Length() < 2 || !info[0].IsNumber() || !CollectIovecs(info[1], &iov)) return ThrowUsage(env, "fdReadv(fd, buffers): buffers must be a non-empty array of Uint8Array");
  int fd = info[0].As<Napi::Number>().Int32Value();
  ssize_t n;
  do n = readv(fd, iov.data(), static_cast<int>(iov.size()));
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    return ThrowErrno(env, errno, "readv", nullptr, "read from fd " + std::to_string(fd));
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// fdWritev(fd, buffers[]) -> bytes written, or -1 when the fd would block (EAGAIN).
Napi::Value FdWritev(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<struct iovec> iov;
  if (info.Length() < 2 || !info[0].IsNumber() || !CollectIovecs(info[1], &iov)) return ThrowUsage(env, "fdWritev(fd, buffers): buffers must be a non-empty array of Uint8Array");
  int fd = info[0].As<Napi::Number>().Int32Value();
  ssize_t n;
  do n = writev(fd, iov.data(), static_cast<int>(iov.size()));
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    return ThrowErrno(env, errno, "writev", nullptr, "write to fd " + std::to_string(fd));
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// A uv_poll_t on the main loop for one fd, readable events only. The handle
// is unreferenced: a watcher alone never keeps the process alive.
class FdWatcher : public Napi::ObjectWrap<FdWatcher> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "FdWatcher", {InstanceMethod<&FdWatcher::Close>("close"), InstanceMethod<&FdWatcher::Pause>("pause"), InstanceMethod<&FdWatcher::Resume>("resume")});
  }

  explicit FdWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdWatcher>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction()) {
      ThrowUsage(env, "watchFd(fd, callback): fd must be a number and callback a function");
      return;
    }
    fd_ = info[0].As<Napi::Number>().Int32Value();
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      ThrowUsage(env, "watchFd: no libuv loop in this environment");
      return;
    }
    handle_ = new uv_poll_t;
    int rc = uv_poll_init(loop, handle_, fd_);
    if (rc != 0) {
      delete handle_;
      handle_ = nullptr;
      ThrowErrno(env, -rc, "uv_poll_init", nullptr, "watch fd " + std::to_string(fd_));
      return;
    }
    handle_->data = this;
    uv_unref(reinterpret_cast<uv_handle_t*>(handle_));
    env_ = env;
    Start();
  }

  ~FdWatcher() override { Stop(); }

 private:
  void Start() {
    if (!handle_ || active_) return;
    int rc = uv_poll_start(handle_, UV_READABLE, OnPoll);
    active_ = rc == 0;
  }

  // Stop polling and hand the handle to libuv to free once closed.
  void Stop() {
    if (!handle_) return;
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
    active_ = false;
  }

  static void OnPoll(uv_poll_t* h, int status, int) {
    auto* self = static_cast<FdWatcher*>(h->data);
    if (!self) return;
    Napi::Env env = self->env_;
    Napi::HandleScope scope(env);
    // Errors (e.g. EBADF after the fd closed under us) reach JS as an argument, not a throw.
    if (status < 0) {
      self->callback_.MakeCallback(env.Global(), {Napi::String::New(env, ErrnoName(-status) ? ErrnoName(-status) : "EIO")});
      return;
    }
    self->callback_.MakeCallback(env.Global(), {});
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Stop();
    callback_.Reset();
    return info.Env().Undefined();
  }

  // Readiness of a fd we cannot drain (no guest buffers) would spin the loop: pause until told.
  Napi::Value Pause(const Napi::CallbackInfo& info) {
    if (handle_ && active_) {
      uv_poll_stop(handle_);
      active_ = false;
    }
    return info.Env().Undefined();
  }

  Napi::Value Resume(const Napi::CallbackInfo& info) {
    Start();
    return info.Env().Undefined();
  }

  int fd_ = -1;
  uv_poll_t* handle_ = nullptr;
  bool active_ = false;
  Napi::Env env_ = Napi::Env(nullptr);
  Napi::FunctionReference callback_;
};

}  // namespace

void InitTap(Napi::Env env, Napi::Object exports) {
  exports.Set("openTap", Napi::Function::New(env, OpenTap, "openTap"));
  exports.Set("tapSetOffload", Napi::Function::New(env, TapSetOffload, "tapSetOffload"));
  exports.Set("fdReadv", Napi::Function::New(env, FdReadv, "fdReadv"));
  exports.Set("fdWritev", Napi::Function::New(env, FdWritev, "fdWritev"));
  exports.Set("FdWatcher", FdWatcher::Init(env));
}

}  // namespace nodevmm
