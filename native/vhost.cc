// The vhost-vsock character device (/dev/vhost-vsock): open it and issue its
// ioctls (include/uapi/linux/vhost.h). Policy-free: which memory, which
// rings, which CID and when to start or stop are decided in TypeScript
// (lib/devices/virtio/vhost-vsock-backend.ts). Every function takes the fd
// returned by open(); the fd is closed with closeFd().
#include <fcntl.h>
// linux/virtio_ring.h (pulled in by vhost_types.h) has inline C that is not
// valid C++, and nothing here needs it: skip it by its include guard.
#define _LINUX_VIRTIO_RING_H
#include <linux/vhost.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <vector>

#include "common.h"

namespace nodevmm {

namespace {

bool FdArg(const Napi::CallbackInfo& info, size_t i, int* fd) {
  if (info.Length() <= i || !info[i].IsNumber()) return false;
  *fd = info[i].As<Napi::Number>().Int32Value();
  return *fd >= 0;
}

bool U32Arg(const Napi::CallbackInfo& info, size_t i, uint32_t* out) {
  uint64_t v = 0;
  if (info.Length() <= i || !GetU64(info[i], &v) || v > 0xffffffffull) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

#define VHOST_IOCTL(fd, req, arg, what)                                                  \
  do {                                                                                   \
    if (ioctl((fd), (req), (arg)) < 0) return ThrowErrno(env, errno, "ioctl", #req, what); \
  } while (0)

// open(path = "/dev/vhost-vsock") -> fd
Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = "/dev/vhost-vsock";
  if (info.Length() > 0 && info[0].IsString()) path = info[0].As<Napi::String>().Utf8Value();
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return ThrowErrno(env, errno, "open", nullptr, "open " + path);
  return Napi::Number::New(env, fd);
}

// setOwner(fd): binds the device to this process (its mm and a vhost worker thread).
Napi::Value SetOwner(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!FdArg(info, 0, &fd)) return ThrowUsage(env, "vhost fd must be a non-negative integer");
  VHOST_IOCTL(fd, VHOST_SET_OWNER, nullptr, "vhost set owner");
  return env.Undefined();
}

// getFeatures(fd) -> bigint
Napi::Value GetFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!FdArg(info, 0, &fd)) return ThrowUsage(env, "vhost fd must be a non-negative integer");
  uint64_t f = 0;
  VHOST_IOCTL(fd, VHOST_GET_FEATURES, &f, "vhost get features");
  return Big(env, f);
}

// setFeatures(fd, bigint)
Napi::Value SetFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint64_t f = 0;
  if (!FdArg(info, 0, &fd) || info.Length() < 2 || !GetU64(info[1], &f)) return ThrowUsage(env, "setFeatures(fd, features: bigint)");
  VHOST_IOCTL(fd, VHOST_SET_FEATURES, &f, "vhost set features");
  return env.Undefined();
}

// setMemTable(fd, [{ gpa, size, userAddr }])
Napi::Value SetMemTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!FdArg(info, 0, &fd) || info.Length() < 2 || !info[1].IsArray()) return ThrowUsage(env, "setMemTable(fd, regions: { gpa, size, userAddr }[])");
  Napi::Array regions = info[1].As<Napi::Array>();
  uint32_t n = regions.Length();
  std::vector<uint8_t> buf(sizeof(vhost_memory) + n * sizeof(vhost_memory_region));
  auto* mem = reinterpret_cast<vhost_memory*>(buf.data());
  mem->nregions = n;
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value rv = regions.Get(i);
    if (!rv.IsObject()) return ThrowUsage(env, "setMemTable: each region must be { gpa, size, userAddr }");
    Napi::Object r = rv.As<Napi::Object>();
    vhost_memory_region& out = mem->regions[i];
    uint64_t gpa = 0, size = 0, user = 0;
    if (!GetU64(r.Get("gpa"), &gpa) || !GetU64(r.Get("size"), &size) || !GetU64(r.Get("userAddr"), &user)) {
      return ThrowUsage(env, "setMemTable: gpa, size and userAddr must be non-negative integers");
    }
    out.guest_phys_addr = gpa;
    out.memory_size = size;
    out.userspace_addr = user;
    out.flags_padding = 0;
  }
  VHOST_IOCTL(fd, VHOST_SET_MEM_TABLE, mem, "vhost set memory table");
  return env.Undefined();
}

// setVringNum(fd, index, num) / setVringBase(fd, index, num)
Napi::Value VringState(const Napi::CallbackInfo& info, unsigned long req, const char* name, const char* what) {
  Napi::Env env = info.Env();
  int fd;
  vhost_vring_state s{};
  if (!FdArg(info, 0, &fd) || !U32Arg(info, 1, &s.index) || !U32Arg(info, 2, &s.num)) return ThrowUsage(env, std::string(name) + "(fd, index, num)");
  if (ioctl(fd, req, &s) < 0) return ThrowErrno(env, errno, "ioctl", name, what);
  return env.Undefined();
}
Napi::Value SetVringNum(const Napi::CallbackInfo& info) { return VringState(info, VHOST_SET_VRING_NUM, "VHOST_SET_VRING_NUM", "vhost set vring size"); }
Napi::Value SetVringBase(const Napi::CallbackInfo& info) { return VringState(info, VHOST_SET_VRING_BASE, "VHOST_SET_VRING_BASE", "vhost set vring base"); }

// getVringBase(fd, index) -> the next available index vhost would read; also stops the ring.
Napi::Value GetVringBase(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  vhost_vring_state s{};
  if (!FdArg(info, 0, &fd) || !U32Arg(info, 1, &s.index)) return ThrowUsage(env, "getVringBase(fd, index)");
  VHOST_IOCTL(fd, VHOST_GET_VRING_BASE, &s, "vhost get vring base");
  return Napi::Number::New(env, s.num);
}

// setVringAddr(fd, index, { desc, avail, used }): host userspace addresses.
Napi::Value SetVringAddr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  vhost_vring_addr a{};
  if (!FdArg(info, 0, &fd) || !U32Arg(info, 1, &a.index) || info.Length() < 3 || !info[2].IsObject()) return ThrowUsage(env, "setVringAddr(fd, index, { desc, avail, used })");
  Napi::Object o = info[2].As<Napi::Object>();
  uint64_t desc = 0, avail = 0, used = 0;
  if (!GetU64(o.Get("desc"), &desc) || !GetU64(o.Get("avail"), &avail) || !GetU64(o.Get("used"), &used)) {
    return ThrowUsage(env, "setVringAddr: desc, avail and used must be non-negative integers");
  }
  a.flags = 0;
  a.desc_user_addr = desc;
  a.avail_user_addr = avail;
  a.used_user_addr = used;
  a.log_guest_addr = 0;
  VHOST_IOCTL(fd, VHOST_SET_VRING_ADDR, &a, "vhost set vring addresses");
  return env.Undefined();
}

// setVringKick(fd, index, eventfd) / setVringCall(fd, index, eventfd); eventfd -1 detaches.
Napi::Value VringFile(const Napi::CallbackInfo& info, unsigned long req, const char* name, const char* what) {
  Napi::Env env = info.Env();
  int fd;
  vhost_vring_file f{};
  if (!FdArg(info, 0, &fd) || !U32Arg(info, 1, &f.index) || info.Length() < 3 || !info[2].IsNumber()) return ThrowUsage(env, std::string(name) + "(fd, index, eventfd)");
  f.fd = info[2].As<Napi::Number>().Int32Value();
  if (ioctl(fd, req, &f) < 0) return ThrowErrno(env, errno, "ioctl", name, what);
  return env.Undefined();
}
Napi::Value SetVringKick(const Napi::CallbackInfo& info) { return VringFile(info, VHOST_SET_VRING_KICK, "VHOST_SET_VRING_KICK", "vhost set vring kick eventfd"); }
Napi::Value SetVringCall(const Napi::CallbackInfo& info) { return VringFile(info, VHOST_SET_VRING_CALL, "VHOST_SET_VRING_CALL", "vhost set vring call eventfd"); }

// vsockSetGuestCid(fd, cid: bigint | number)
Napi::Value VsockSetGuestCid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint64_t cid = 0;
  if (!FdArg(info, 0, &fd) || info.Length() < 2 || !GetU64(info[1], &cid)) return ThrowUsage(env, "vsockSetGuestCid(fd, cid)");
  VHOST_IOCTL(fd, VHOST_VSOCK_SET_GUEST_CID, &cid, "vhost-vsock set guest cid");
  return env.Undefined();
}

// vsockSetRunning(fd, running: boolean)
Napi::Value VsockSetRunning(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!FdArg(info, 0, &fd) || info.Length() < 2) return ThrowUsage(env, "vsockSetRunning(fd, running)");
  int running = info[1].ToBoolean() ? 1 : 0;
  VHOST_IOCTL(fd, VHOST_VSOCK_SET_RUNNING, &running, "vhost-vsock set running");
  return env.Undefined();
}

}  // namespace

Napi::Object InitVhost(Napi::Env env, Napi::Object exports) {
  Napi::Object v = Napi::Object::New(env);
  v.Set("open", Napi::Function::New(env, Open, "open"));
  v.Set("setOwner", Napi::Function::New(env, SetOwner, "setOwner"));
  v.Set("getFeatures", Napi::Function::New(env, GetFeatures, "getFeatures"));
  v.Set("setFeatures", Napi::Function::New(env, SetFeatures, "setFeatures"));
  v.Set("setMemTable", Napi::Function::New(env, SetMemTable, "setMemTable"));
  v.Set("setVringNum", Napi::Function::New(env, SetVringNum, "setVringNum"));
  v.Set("setVringBase", Napi::Function::New(env, SetVringBase, "setVringBase"));
  v.Set("getVringBase", Napi::Function::New(env, GetVringBase, "getVringBase"));
  v.Set("setVringAddr", Napi::Function::New(env, SetVringAddr, "setVringAddr"));
  v.Set("setVringKick", Napi::Function::New(env, SetVringKick, "setVringKick"));
  v.Set("setVringCall", Napi::Function::New(env, SetVringCall, "setVringCall"));
  v.Set("vsockSetGuestCid", Napi::Function::New(env, VsockSetGuestCid, "vsockSetGuestCid"));
  v.Set("vsockSetRunning", Napi::Function::New(env, VsockSetRunning, "vsockSetRunning"));
  exports.Set("vhost", v);
  return exports;
}

}  // namespace nodevmm
