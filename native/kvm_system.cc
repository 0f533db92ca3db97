// /dev/kvm system-level ioctls: API version, extensions, supported CPUID and
// MSR lists, plus the eventfd helpers irqfd/ioeventfd users need.
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <mutex>

#include "common.h"
#include "kvm_vm.h"

namespace nodevmm {

namespace {
std::mutex g_sys_mu;
int g_sys_fd = -1;
int g_sys_errno = 0;
std::string g_sys_err;

void KickHandler(int) {
  // Nothing to do: delivery alone makes KVM_RUN return -EINTR, and
  // immediate_exit covers a kick that lands outside KVM_RUN.
}
}  // namespace

int KickSignal() { return SIGRTMIN + 4; }

void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = KickHandler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must come back with EINTR
    sigaction(KickSignal(), &sa, nullptr);
  });
}

int KvmSystemFd(std::string* err, int* err_no) {
  std::lock_guard<std::mutex> lock(g_sys_mu);
  if (g_sys_fd >= 0) return g_sys_fd;
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    g_sys_errno = errno;
    if (errno == ENOENT) g_sys_err = "/dev/kvm does not exist: this host has no KVM (load kvm-intel or kvm-amd, or enable nested virtualization)";
    else if (errno == EACCES || errno == EPERM) g_sys_err = "/dev/kvm exists but this user may not open it (add the user to the kvm group)";
    else g_sys_err = std::string("cannot open /dev/kvm: ") + std::strerror(errno);
    if (err) *err = g_sys_err;
    if (err_no) *err_no = g_sys_errno;
    return -1;
  }
  int version = ioctl(fd, KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    close(fd);
    g_sys_errno = EINVAL;
    g_sys_err = "/dev/kvm reports API version " + std::to_string(version) + ", nodevmm needs " + std::to_string(KVM_API_VERSION);
    if (err) *err = g_sys_err;
    if (err_no) *err_no = g_sys_errno;
    return -1;
  }
  g_sys_fd = fd;
  return fd;
}

size_t KvmRunMmapSize() {
  int fd = KvmSystemFd(nullptr, nullptr);
  if (fd < 0) return 0;
  int n = ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0);
  return n > 0 ? static_cast<size_t>(n) : 0;
}

#if defined(__x86_64__)
Napi::Value CpuidEntriesIoctl(Napi::Env env, int fd, unsigned long request, const char* request_name, const char* what) {
  for (uint32_t n = 128; n <= 4096; n *= 2) {
    std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2));
    auto* c = reinterpret_cast<kvm_cpuid2*>(buf.data());
    c->nent = n;
    if (ioctl(fd, request, c) < 0) {
      if (errno == E2BIG) continue;
      return ThrowErrno(env, errno, "ioctl", request_name, what);
    }
    Napi::Array out = Napi::Array::New(env, c->nent);
    for (uint32_t i = 0; i < c->nent; i++) {
      const kvm_cpuid_entry2& e = c->entries[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("function", e.function);
      o.Set("index", e.index);
      o.Set("flags", e.flags);
      o.Set("eax", e.eax);
      o.Set("ebx", e.ebx);
      o.Set("ecx", e.ecx);
      o.Set("edx", e.edx);
      out.Set(i, o);
    }
    return out;
  }
  return ThrowErrno(env, E2BIG, "ioctl", request_name, what);
}
#endif

namespace {

// probe() -> { ok, code?, message?, apiVersion? } and never throws: the CLI
// uses it to explain what is missing in one sentence.
Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  std::string err;
  int err_no = 0;
  int fd = KvmSystemFd(&err, &err_no);
  o.Set("ok", fd >= 0);
  if (fd < 0) {
    const char* name = ErrnoName(err_no);
    o.Set("code", name ? name : "EUNKNOWN");
    o.Set("message", err);
    return o;
  }
  o.Set("apiVersion", ioctl(fd, KVM_GET_API_VERSION, 0));
  o.Set("vcpuMmapSize", static_cast<double>(KvmRunMmapSize()));
  return o;
}

Napi::Value CheckExtension(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string err;
  int err_no = 0;
  int fd = KvmSystemFd(&err, &err_no);
  if (fd < 0) return ThrowErrno(env, err_no, "open", nullptr, err);
  int cap = info[0].ToNumber().Int32Value();
  int r = ioctl(fd, KVM_CHECK_EXTENSION, cap);
  return Napi::Number::New(env, r < 0 ? 0 : r);
}

#if defined(__x86_64__)
Napi::Value GetSupportedCpuid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string err;
  int err_no = 0;
  int fd = KvmSystemFd(&err, &err_no);
  if (fd < 0) return ThrowErrno(env, err_no, "open", nullptr, err);
  return CpuidEntriesIoctl(env, fd, KVM_GET_SUPPORTED_CPUID, "KVM_GET_SUPPORTED_CPUID", "get supported cpuid");
}

Napi::Value GetMsrIndexList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string err;
  int err_no = 0;
  int fd = KvmSystemFd(&err, &err_no);
  if (fd < 0) return ThrowErrno(env, err_no, "open", nullptr, err);
  std::vector<uint8_t> buf(sizeof(kvm_msr_list) + 1024 * sizeof(uint32_t));
  auto* l = reinterpret_cast<kvm_msr_list*>(buf.data());
  l->nmsrs = 1024;
  if (ioctl(fd, KVM_GET_MSR_INDEX_LIST, l) < 0) return ThrowErrno(env, errno, "ioctl", "KVM_GET_MSR_INDEX_LIST", "get msr index list");
  Napi::Array out = Napi::Array::New(env, l->nmsrs);
  for (uint32_t i = 0; i < l->nmsrs; i++) out.Set(i, l->indices[i]);
  return out;
}

#endif

// eventfd(initial, flags) -> fd. Nonblocking, close-on-exec.
Napi::Value EventFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  unsigned init = info.Length() > 0 ? info[0].ToNumber().Uint32Value() : 0;
  int fd = eventfd(init, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return ThrowErrno(env, errno, "eventfd", nullptr, "create eventfd");
  return Napi::Number::New(env, fd);
}

Napi::Value EventFdWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].ToNumber().Int32Value();
  uint64_t v = 1;
  if (info.Length() > 1) GetU64(info[1], &v);
  if (write(fd, &v, sizeof v) != sizeof v) return ThrowErrno(env, errno, "write", nullptr, "signal eventfd");
  return env.Undefined();
}

// eventfdRead(fd) -> count (0 when nothing was pending).
Napi::Value EventFdRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].ToNumber().Int32Value();
  uint64_t v = 0;
  ssize_t n = read(fd, &v, sizeof v);
  if (n < 0 && errno == EAGAIN) return Napi::Number::New(env, 0);
  if (n != sizeof v) return ThrowErrno(env, errno, "read", nullptr, "read eventfd");
  return Napi::Number::New(env, static_cast<double>(v));
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int fd = info[0].ToNumber().Int32Value();
  if (fd > 2) close(fd);
  return info.Env().Undefined();
}

}  // namespace

Napi::Object InitSystem(Napi::Env env, Napi::Object exports) {
  exports.Set("probe", Napi::Function::New(env, Probe, "probe"));
  exports.Set("checkExtension", Napi::Function::New(env, CheckExtension, "checkExtension"));
#if defined(__x86_64__)
  exports.Set("getSupportedCpuid", Napi::Function::New(env, GetSupportedCpuid, "getSupportedCpuid"));
  exports.Set("getMsrIndexList", Napi::Function::New(env, GetMsrIndexList, "getMsrIndexList"));
#endif
  exports.Set("eventfd", Napi::Function::New(env, EventFd, "eventfd"));
  exports.Set("eventfdWrite", Napi::Function::New(env, EventFdWrite, "eventfdWrite"));
  exports.Set("eventfdRead", Napi::Function::New(env, EventFdRead, "eventfdRead"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  return exports;
}

}  // namespace nodevmm
