#include "common.h"

#include <cmath>

namespace nodevmm {

const char* ErrnoName(int err) {
  switch (err) {
#define E(x) case x: return #x;
    E(EPERM) E(ENOENT) E(EINTR) E(EIO) E(ENXIO) E(E2BIG) E(EBADF) E(EAGAIN) E(ENOMEM) E(EACCES)
    E(EFAULT) E(EBUSY) E(EEXIST) E(ENODEV) E(EINVAL) E(ENFILE) E(EMFILE) E(ENOTTY) E(ENOSPC)
    E(ERANGE) E(ENOSYS) E(EOPNOTSUPP) E(ETIMEDOUT) E(EADDRINUSE) E(EADDRNOTAVAIL) E(EAFNOSUPPORT)
    E(EINPROGRESS) E(ECONNREFUSED) E(ECONNRESET) E(ENOTCONN) E(EPIPE) E(EHOSTUNREACH) E(ENETUNREACH)
    E(ENOTSOCK) E(ECANCELED)
#if defined(ESOCKTNOSUPPORT)  // not in Windows' errno.h
    E(ESOCKTNOSUPPORT)
#endif
#undef E
    default: return nullptr;
  }
}

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const char* ioctl_name, const std::string& what) {
  const char* name = ErrnoName(err);
  std::string code = name ? name : ("E" + std::to_string(err));
  std::string msg = what + " failed: " + std::strerror(err) + " (" + code + (ioctl_name ? std::string(", ") + ioctl_name : std::string()) + ")";
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  if (ioctl_name) e.Set("ioctl", Napi::String::New(env, ioctl_name));
  return e;
}

Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall, const char* ioctl_name, const std::string& what) {
  ErrnoError(env, err, syscall, ioctl_name, what).ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value ThrowUsage(Napi::Env env, const std::string& message) {
  Napi::TypeError e = Napi::TypeError::New(env, message);
  e.Set("code", Napi::String::New(env, "ERR_INVALID_ARG"));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

bool GetU64(const Napi::Value& v, uint64_t* out) {
  if (v.IsBigInt()) {
    bool lossless = false;
    *out = v.As<Napi::BigInt>().Uint64Value(&lossless);
    return lossless;
  }
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d > 9007199254740991.0 || std::floor(d) != d) return false;
    *out = static_cast<uint64_t>(d);
    return true;
  }
  return false;
}

}  // namespace nodevmm
