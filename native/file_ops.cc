// File operations on disk images, policy-free: the size of a block device
// and open-file-description (OFD) byte-range locks. Which image gets which
// lock, and what a conflict means to the user, is decided in TypeScript
// (lib/hv/file-ops.ts, lib/vm/virtio-devices.ts).
//
//   blockDeviceSize(fd) -> bigint          BLKGETSIZE64
//   ofdLock(fd, type) -> true | false      F_OFD_SETLK over the whole file;
//                                          type 0 unlock, 1 shared (F_RDLCK),
//                                          2 exclusive (F_WRLCK); false when
//                                          another open file description
//                                          holds a conflicting lock
//   ofdLockConflict(fd, type) -> 0 | 1 | 2 F_OFD_GETLK: the type of a lock
//                                          that would block `type` (0 none)
//
// OFD locks (not POSIX fcntl locks) because they belong to the open file
// description: closing some other fd on the same file does not drop them,
// and two descriptions in one process conflict like two processes do. They
// are released when the last fd of the description is closed.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

#include "common.h"

namespace nodevmm {

namespace {

bool FdArg(const Napi::CallbackInfo& info, size_t i, int* fd) {
  if (info.Length() <= i || !info[i].IsNumber()) return false;
  *fd = info[i].As<Napi::Number>().Int32Value();
  return *fd >= 0;
}

Napi::Value BlockDeviceSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!FdArg(info, 0, &fd)) return ThrowUsage(env, "blockDeviceSize(fd): fd must be a non-negative number");
  uint64_t bytes = 0;
  if (ioctl(fd, BLKGETSIZE64, &bytes) < 0) return ThrowErrno(env, errno, "ioctl", "BLKGETSIZE64", "read the size of a block device");
  return Big(env, bytes);
}

bool LockType(const Napi::CallbackInfo& info, short* type) {
  if (info.Length() < 2 || !info[1].IsNumber()) return false;
  switch (info[1].As<Napi::Number>().Int32Value()) {
    case 0: *type = F_UNLCK; return true;
    case 1: *type = F_RDLCK; return true;
    case 2: *type = F_WRLCK; return true;
    default: return false;
  }
}

Napi::Value OfdLock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  short type;
  if (!FdArg(info, 0, &fd) || !LockType(info, &type)) return ThrowUsage(env, "ofdLock(fd, type): type is 0 (unlock), 1 (shared) or 2 (exclusive)");
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;  // l_start 0, l_len 0: the whole file, however it grows
  int r;
  do r = fcntl(fd, F_OFD_SETLK, &fl);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EACCES) return Napi::Boolean::New(env, false);
    return ThrowErrno(env, errno, "fcntl", "F_OFD_SETLK", "lock a disk image");
  }
  return Napi::Boolean::New(env, true);
}

Napi::Value OfdLockConflict(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  short type;
  if (!FdArg(info, 0, &fd) || !LockType(info, &type) || type == F_UNLCK) return ThrowUsage(env, "ofdLockConflict(fd, type): type is 1 (shared) or 2 (exclusive)");
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  if (fcntl(fd, F_OFD_GETLK, &fl) < 0) return ThrowErrno(env, errno, "fcntl", "F_OFD_GETLK", "test a disk image's lock");
  return Napi::Number::New(env, fl.l_type == F_UNLCK ? 0 : fl.l_type == F_RDLCK ? 1 : 2);
}

}  // namespace

void InitFileOps(Napi::Env env, Napi::Object exports) {
  exports.Set("blockDeviceSize", Napi::Function::New(env, BlockDeviceSize, "blockDeviceSize"));
  exports.Set("ofdLock", Napi::Function::New(env, OfdLock, "ofdLock"));
  exports.Set("ofdLockConflict", Napi::Function::New(env, OfdLockConflict, "ofdLockConflict"));
}

}  // namespace nodevmm
