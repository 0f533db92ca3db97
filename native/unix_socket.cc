// UNIX stream sockets that carry file descriptors (SCM_RIGHTS), which Node's
// net module cannot send: connect to a path, sendmsg with fds, recvmsg that
// returns received fds. Policy-free: what the bytes mean (the vhost-user
// protocol) is lib/vm/vhost-user-client.ts's business. The socket is
// non-blocking; send and receive wait for it with poll() up to a deadline the
// caller gives, so a peer that stops answering costs at most that long.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "common.h"

namespace nodevmm {

namespace {

// At most this many fds per message (vhost-user's SET_MEM_TABLE sends one per
// RAM region and allows 8; the kernel's own cap is SCM_MAX_FD, 253).
constexpr size_t kMaxFds = 16;

int FdArg(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && info[i].IsNumber() ? info[i].As<Napi::Number>().Int32Value() : -1;
}

int TimeoutArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) return -2;
  double ms = info[i].As<Napi::Number>().DoubleValue();
  return ms >= 0 && ms <= 3600000 ? static_cast<int>(ms) : -2;
}

// Wait until `fd` is ready for `events` or `timeout_ms` passed; EINTR restarts
// with the time left. Returns 0 when ready, else an errno (ETIMEDOUT too).
int WaitFor(int fd, short events, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    pollfd p{fd, events, 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    int r = poll(&p, 1, left > 0 ? static_cast<int>(left) : 0);
    if (r > 0) return 0;  // POLLHUP/POLLERR too: the send or receive reports it
    if (r == 0) return ETIMEDOUT;
    if (errno != EINTR) return errno;
  }
}

// unixConnect(path) -> fd (non-blocking, close-on-exec)
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return ThrowUsage(env, "unixConnect(path: string)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  sockaddr_un a;
  std::memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path) return ThrowUsage(env, "unix socket path must be 1 to " + std::to_string(sizeof a.sun_path - 1) + " bytes: " + path);
  std::memcpy(a.sun_path, path.data(), path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(env, errno, "socket", nullptr, "create unix socket");
  // A blocking connect: a listening UNIX socket accepts (or refuses) at once.
  int r;
  do r = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  while (r < 0 && errno == EINTR);
  if (r < 0 || fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
    int err = errno;
    close(fd);
    return ThrowErrno(env, err, "connect", nullptr, "connect to " + path);
  }
  return Napi::Number::New(env, fd);
}

// unixSendmsg(fd, bytes: Uint8Array, fds: number[], timeoutMs) -> bytes sent
// (all of them). The fds ride on the first byte; a short send goes on with
// the rest, without fds.
Napi::Value UnixSendmsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  int timeout = TimeoutArg(info, 3);
  if (fd < 0 || info.Length() < 4 || !info[1].IsTypedArray() || !info[2].IsArray() || timeout < -1) return ThrowUsage(env, "unixSendmsg(fd, bytes: Uint8Array, fds: number[], timeoutMs)");
  Napi::Uint8Array bytes = info[1].As<Napi::Uint8Array>();
  Napi::Array fdArr = info[2].As<Napi::Array>();
  if (fdArr.Length() > kMaxFds) return ThrowUsage(env, "unixSendmsg: at most " + std::to_string(kMaxFds) + " fds per message");
  std::vector<int> fds;
  for (uint32_t i = 0; i < fdArr.Length(); i++) {
    Napi::Value v = fdArr.Get(i);
    if (!v.IsNumber() || v.As<Napi::Number>().Int32Value() < 0) return ThrowUsage(env, "unixSendmsg: fds must be non-negative integers");
    fds.push_back(v.As<Napi::Number>().Int32Value());
  }
  size_t len = bytes.ByteLength();
  size_t sent = 0;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  while (sent < len || (len == 0 && sent == 0 && !fds.empty())) {
    int err = WaitFor(fd, POLLOUT, timeout);
    if (err) return ThrowErrno(env, err, "sendmsg", nullptr, "send on unix socket");
    iovec iov{bytes.Data() + sent, len - sent};
    msghdr m;
    std::memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (sent == 0 && !fds.empty()) {
      // SAFETY: control holds CMSG_SPACE for kMaxFds ints and fds.size() <= kMaxFds.
      std::memset(control, 0, sizeof control);
      m.msg_control = control;
      m.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&m);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return ThrowErrno(env, errno, "sendmsg", nullptr, "send on unix socket");
    }
    sent += static_cast<size_t>(n);
    if (len == 0) break;
  }
  return Napi::Number::New(env, static_cast<double>(sent));
}

// unixRecvmsg(fd, into: Uint8Array, timeoutMs) -> { bytes, fds }: one
// recvmsg once the socket is readable; bytes 0 means the peer closed. Fds
// that arrive are close-on-exec and now the caller's to close.
Napi::Value UnixRecvmsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  int timeout = TimeoutArg(info, 2);
  if (fd < 0 || info.Length() < 3 || !info[1].IsTypedArray() || timeout < -1) return ThrowUsage(env, "unixRecvmsg(fd, into: Uint8Array, timeoutMs)");
  Napi::Uint8Array into = info[1].As<Napi::Uint8Array>();
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  ssize_t n;
  msghdr m;
  for (;;) {
    int err = WaitFor(fd, POLLIN, timeout);
    if (err) return ThrowErrno(env, err, "recvmsg", nullptr, "receive on unix socket");
    iovec iov{into.Data(), into.ByteLength()};
    std::memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
    if (n >= 0) break;
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
    return ThrowErrno(env, errno, "recvmsg", nullptr, "receive on unix socket");
  }
  Napi::Array fds = Napi::Array::New(env);
  uint32_t k = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int got;
      // SAFETY: the kernel wrote `count` ints after the header, inside control.
      std::memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds.Set(k++, Napi::Number::New(env, got));
    }
  }
  // Truncated fds (MSG_CTRUNC) were closed by the kernel; the caller sees fewer.
  Napi::Object out = Napi::Object::New(env);
  out.Set("bytes", Napi::Number::New(env, static_cast<double>(n)));
  out.Set("fds", fds);
  return out;
}

}  // namespace

Napi::Object InitUnixSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect, "unixConnect"));
  exports.Set("unixSendmsg", Napi::Function::New(env, UnixSendmsg, "unixSendmsg"));
  exports.Set("unixRecvmsg", Napi::Function::New(env, UnixRecvmsg, "unixRecvmsg"));
  return exports;
}

}  // namespace nodevmm
