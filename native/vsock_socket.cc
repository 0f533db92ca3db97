// Host-side AF_VSOCK stream sockets (Node's net module cannot open them):
// non-blocking connect, listen and accept, read, write, shutdown and the
// pending socket error. Policy-free: lib/vm/vsock-stream.ts builds a Node
// Duplex on top with watchFd() (fd_watcher.cc). Would-block is not an error
// here: read and write return -1 for EAGAIN, accept returns null.
#include <fcntl.h>
// sys/socket.h first: linux/vm_sockets.h uses struct sockaddr and sa_family_t
// without including them (glibc's x86 headers happen to, aarch64's do not).
#include <sys/socket.h>
#include <linux/vm_sockets.h>
#include <unistd.h>

#include <cstring>

#include "common.h"

namespace nodevmm {

namespace {

bool U32(const Napi::Value& v, uint32_t* out) {
  uint64_t x = 0;
  if (!GetU64(v, &x) || x > 0xffffffffull) return false;
  *out = static_cast<uint32_t>(x);
  return true;
}

int FdOf(const Napi::CallbackInfo& info) { return info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : -1; }

sockaddr_vm Addr(uint32_t cid, uint32_t port) {
  sockaddr_vm a;
  std::memset(&a, 0, sizeof a);
  a.svm_family = AF_VSOCK;
  a.svm_cid = cid;
  a.svm_port = port;
  return a;
}

// vsockConnect(cid, port) -> fd, connecting: wait until writable, then socketError(fd).
Napi::Value VsockConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t cid = 0, port = 0;
  if (info.Length() < 2 || !U32(info[0], &cid) || !U32(info[1], &port)) return ThrowUsage(env, "vsockConnect(cid, port): both unsigned 32-bit integers");
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(env, errno, "socket", nullptr, "create AF_VSOCK socket");
  sockaddr_vm a = Addr(cid, port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 && errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    return ThrowErrno(env, err, "connect", nullptr, "connect to vsock " + std::to_string(cid) + ":" + std::to_string(port));
  }
  return Napi::Number::New(env, fd);
}

// vsockListen(port, cid = VMADDR_CID_ANY, backlog = 16) -> fd
Napi::Value VsockListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t port = 0, cid = VMADDR_CID_ANY, backlog = 16;
  if (info.Length() < 1 || !U32(info[0], &port)) return ThrowUsage(env, "vsockListen(port, cid?, backlog?)");
  if (info.Length() > 1 && !info[1].IsUndefined() && !U32(info[1], &cid)) return ThrowUsage(env, "vsockListen: cid must be an unsigned 32-bit integer");
  if (info.Length() > 2 && !info[2].IsUndefined() && !U32(info[2], &backlog)) return ThrowUsage(env, "vsockListen: backlog must be an unsigned integer");
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(env, errno, "socket", nullptr, "create AF_VSOCK socket");
  sockaddr_vm a = Addr(cid, port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 || listen(fd, static_cast<int>(backlog)) < 0) {
    int err = errno;
    close(fd);
    return ThrowErrno(env, err, "bind", nullptr, "listen on vsock port " + std::to_string(port));
  }
  return Napi::Number::New(env, fd);
}

// vsockAccept(fd) -> { fd, cid, port } | null when no connection is pending.
Napi::Value VsockAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_vm a;
  socklen_t len = sizeof a;
  int fd = accept4(FdOf(info), reinterpret_cast<sockaddr*>(&a), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return env.Null();
    return ThrowErrno(env, errno, "accept", nullptr, "accept a vsock connection");
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("fd", fd);
  o.Set("cid", a.svm_cid);
  o.Set("port", a.svm_port);
  return o;
}

// socketError(fd) -> errno name of the pending error (SO_ERROR), or null.
Napi::Value SocketError(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(FdOf(info), SOL_SOCKET, SO_ERROR, &err, &len) < 0) return ThrowErrno(env, errno, "getsockopt", nullptr, "read socket error");
  if (err == 0) return env.Null();
  const char* name = ErrnoName(err);
  return Napi::String::New(env, name ? name : "E" + std::to_string(err));
}

bool Bytes(const Napi::CallbackInfo& info, uint8_t** data, size_t* len) {
  if (info.Length() < 2 || !info[1].IsTypedArray()) return false;
  Napi::TypedArray t = info[1].As<Napi::TypedArray>();
  *data = static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
  *len = t.ByteLength();
  return true;
}

// socketRead(fd, into: Uint8Array) -> bytes read, 0 at end of stream, -1 when nothing is there yet.
Napi::Value SocketRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t* p;
  size_t n;
  if (!Bytes(info, &p, &n)) return ThrowUsage(env, "socketRead(fd, into: Uint8Array)");
  int fd = FdOf(info);
  return NonBlockingIo(env, "recv", "read from socket", [&] { return recv(fd, p, n, 0); });
}

// socketWrite(fd, bytes: Uint8Array) -> bytes written (maybe fewer), -1 when the socket is full.
Napi::Value SocketWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t* p;
  size_t n;
  if (!Bytes(info, &p, &n)) return ThrowUsage(env, "socketWrite(fd, bytes: Uint8Array)");
  int fd = FdOf(info);
  // MSG_NOSIGNAL: a peer that went away is an EPIPE error, not a SIGPIPE that kills Node.
  return NonBlockingIo(env, "send", "write to socket", [&] { return send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT); });
}

// socketShutdownWrite(fd): our end of the stream (the peer reads EOF).
Napi::Value SocketShutdownWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (shutdown(FdOf(info), SHUT_WR) < 0 && errno != ENOTCONN) return ThrowErrno(env, errno, "shutdown", nullptr, "shut down socket writes");
  return env.Undefined();
}

}  // namespace

Napi::Object InitVsockSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("vsockConnect", Napi::Function::New(env, VsockConnect, "vsockConnect"));
  exports.Set("vsockListen", Napi::Function::New(env, VsockListen, "vsockListen"));
  exports.Set("vsockAccept", Napi::Function::New(env, VsockAccept, "vsockAccept"));
  exports.Set("socketError", Napi::Function::New(env, SocketError, "socketError"));
  exports.Set("socketRead", Napi::Function::New(env, SocketRead, "socketRead"));
  exports.Set("socketWrite", Napi::Function::New(env, SocketWrite, "socketWrite"));
  exports.Set("socketShutdownWrite", Napi::Function::New(env, SocketShutdownWrite, "socketShutdownWrite"));
  return exports;
}

}  // namespace nodevmm
