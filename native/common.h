// Shared helpers for the nodevmm addon: errno -> JS error conversion and
// argument unpacking. Errors thrown from here carry `code` (errno name),
// `errno`, `syscall` and `ioctl`, which lib/hv/native.ts turns into KvmError.
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include <sys/types.h>

namespace nodevmm {

// Name of an errno value ("EINVAL"), or "E<number>" when unknown.
const char* ErrnoName(int err);

// A JS Error for a failed syscall/ioctl (see ThrowErrno), for callbacks.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const char* ioctl_name, const std::string& what);

// Throw a JS Error for a failed syscall/ioctl. `what` is a short human
// description of the operation ("create vcpu 3"). Returns an empty value so
// callers can `return ThrowErrno(...)`.
Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall, const char* ioctl_name, const std::string& what);

// Throw a plain usage error (TypeError) with a code.
Napi::Value ThrowUsage(Napi::Env env, const std::string& message);

// One non-blocking read or write (`io` returns what read/write/send... return):
// retried on EINTR; the byte count as a JS number, -1 when the fd would block,
// or a thrown error naming `syscall` and `what`.
template <typename Io>
Napi::Value NonBlockingIo(Napi::Env env, const char* syscall, const std::string& what, Io io) {
  decltype(io()) n;  // ssize_t where it exists (MSVC has none)
  do n = io();
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    return ThrowErrno(env, errno, syscall, nullptr, what);
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// Read a JS number or bigint as uint64 (bigint is exact; numbers must be safe integers).
bool GetU64(const Napi::Value& v, uint64_t* out);

inline Napi::BigInt Big(Napi::Env env, uint64_t v) { return Napi::BigInt::New(env, v); }

}  // namespace nodevmm
