// TAP devices, policy-free: open a TAP with TUNSETIFF and scatter/gather
// packet I/O with readv/writev (readability comes from fd_watcher.cc). Which TAP, which
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
  return NonBlockingIo(env, "readv", "read from fd " + std::to_string(fd), [&] { return readv(fd, iov.data(), static_cast<int>(iov.size())); });
}

// fdWritev(fd, buffers[]) -> bytes written, or -1 when the fd would block (EAGAIN).
Napi::Value FdWritev(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<struct iovec> iov;
  if (info.Length() < 2 || !info[0].IsNumber() || !CollectIovecs(info[1], &iov)) return ThrowUsage(env, "fdWritev(fd, buffers): buffers must be a non-empty array of Uint8Array");
  int fd = info[0].As<Napi::Number>().Int32Value();
  return NonBlockingIo(env, "writev", "write to fd " + std::to_string(fd), [&] { return writev(fd, iov.data(), static_cast<int>(iov.size())); });
}

}  // namespace

void InitTap(Napi::Env env, Napi::Object exports) {
  exports.Set("openTap", Napi::Function::New(env, OpenTap, "openTap"));
  exports.Set("tapSetOffload", Napi::Function::New(env, TapSetOffload, "tapSetOffload"));
  exports.Set("fdReadv", Napi::Function::New(env, FdReadv, "fdReadv"));
  exports.Set("fdWritev", Napi::Function::New(env, FdWritev, "fdWritev"));
}

}  // namespace nodevmm
