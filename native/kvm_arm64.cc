// arm64-only KVM ioctls: the preferred vCPU target and KVM_ARM_VCPU_INIT,
// the register list and one-register access (KVM_GET_REG_LIST,
// KVM_GET/SET_ONE_REG; ids are built in TypeScript, lib/hv/arm64-regs.ts),
// and in-kernel devices (KVM_CREATE_DEVICE and its attributes, used for the
// GICv3). Which features, addresses and registers are chosen, and in which
// order a snapshot reads and writes them, is TypeScript's; this file only
// carries them out.
// Spec: Linux Documentation/virt/kvm/api.rst 4.82-4.84, devices/arm-vgic-v3.rst.
// Compiled on every architecture; empty unless building for aarch64.
#if defined(__aarch64__)

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>
#include <memory>

#include "common.h"
#include "kvm_vm.h"

namespace nodevmm {

// armPreferredTarget() -> { target, features: number[7] }
Napi::Value Vm::ArmPreferredTarget(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  kvm_vcpu_init init{};
  if (ioctl(fd_, KVM_ARM_PREFERRED_TARGET, &init) < 0) return ThrowErrno(env, errno, "ioctl", "KVM_ARM_PREFERRED_TARGET", "get preferred vcpu target");
  Napi::Object o = Napi::Object::New(env);
  o.Set("target", init.target);
  Napi::Array f = Napi::Array::New(env, 7);
  for (uint32_t i = 0; i < 7; i++) f.Set(i, init.features[i]);
  o.Set("features", f);
  return o;
}

// createDevice(type) -> device fd (close-on-exec). The device lives as long
// as the VM; the fd may be closed once its attributes are set.
Napi::Value Vm::CreateDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  kvm_create_device cd{};
  cd.type = info[0].ToNumber().Uint32Value();
  if (ioctl(fd_, KVM_CREATE_DEVICE, &cd) < 0) return ThrowErrno(env, errno, "ioctl", "KVM_CREATE_DEVICE", "create kvm device type " + std::to_string(cd.type));
  fcntl(cd.fd, F_SETFD, FD_CLOEXEC);
  return Napi::Number::New(env, cd.fd);
}

namespace {
// Shared by set/has: fd, group, attr and an optional u64 the attribute points at.
bool DeviceAttrArgs(const Napi::CallbackInfo& info, int* fd, kvm_device_attr* a, uint64_t* value, bool* has_value) {
  *fd = info[0].ToNumber().Int32Value();
  a->flags = 0;
  a->group = info[1].ToNumber().Uint32Value();
  uint64_t attr = 0;
  if (!GetU64(info[2], &attr)) return false;
  a->attr = attr;
  *has_value = info.Length() > 3 && !info[3].IsUndefined() && !info[3].IsNull();
  if (*has_value && !GetU64(info[3], value)) return false;
  a->addr = *has_value ? reinterpret_cast<uint64_t>(value) : 0;
  return true;
}
}  // namespace

// setDeviceAttr(deviceFd, group, attr, value?): KVM_SET_DEVICE_ATTR with
// `addr` pointing at the 64-bit value (absent for control attributes such
// as KVM_DEV_ARM_VGIC_CTRL_INIT).
Napi::Value Vm::SetDeviceAttr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  int fd;
  kvm_device_attr a{};
  uint64_t value = 0;
  bool has_value = false;
  if (!DeviceAttrArgs(info, &fd, &a, &value, &has_value)) return ThrowUsage(env, "device attribute and value must be bigints or safe integers");
  if (ioctl(fd, KVM_SET_DEVICE_ATTR, &a) < 0) {
    return ThrowErrno(env, errno, "ioctl", "KVM_SET_DEVICE_ATTR", "set device attribute group " + std::to_string(a.group) + " attr " + std::to_string(a.attr));
  }
  return env.Undefined();
}

// hasDeviceAttr(deviceFd, group, attr) -> boolean
Napi::Value Vm::HasDeviceAttr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  int fd;
  kvm_device_attr a{};
  uint64_t value = 0;
  bool has_value = false;
  if (!DeviceAttrArgs(info, &fd, &a, &value, &has_value)) return ThrowUsage(env, "device attribute must be a bigint or safe integer");
  a.addr = 0;
  return Napi::Boolean::New(env, ioctl(fd, KVM_HAS_DEVICE_ATTR, &a) == 0);
}

// getDeviceAttr(deviceFd, group, attr) -> bigint: KVM_GET_DEVICE_ATTR into a
// zeroed 64-bit value (an attribute the kernel documents as __u32, such as
// the VGIC's distributor registers, fills its low half on little-endian).
Napi::Value Vm::GetDeviceAttr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckAlive(env)) return env.Undefined();
  int fd;
  kvm_device_attr a{};
  uint64_t value = 0;
  bool has_value = false;
  if (!DeviceAttrArgs(info, &fd, &a, &value, &has_value)) return ThrowUsage(env, "device attribute must be a bigint or safe integer");
  value = 0;
  a.addr = reinterpret_cast<uint64_t>(&value);
  if (ioctl(fd, KVM_GET_DEVICE_ATTR, &a) < 0) {
    return ThrowErrno(env, errno, "ioctl", "KVM_GET_DEVICE_ATTR", "get device attribute group " + std::to_string(a.group) + " attr " + std::to_string(a.attr));
  }
  return Big(env, value);
}

// armVcpuInit(target, featureBits: number[]): KVM_ARM_VCPU_INIT. Must run
// once before the vCPU's first KVM_RUN or register access; feature bits
// are KVM_ARM_VCPU_* numbers (0 = POWER_OFF, 2 = PSCI_0_2, ...).
Napi::Value Vcpu::ArmVcpuInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  kvm_vcpu_init init{};
  init.target = info[0].ToNumber().Uint32Value();
  if (!info[1].IsArray()) return ThrowUsage(env, "vcpu init features must be an array of feature bit numbers");
  Napi::Array bits = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < bits.Length(); i++) {
    uint32_t bit = bits.Get(i).ToNumber().Uint32Value();
    if (bit >= 7 * 32) return ThrowUsage(env, "vcpu init feature bit " + std::to_string(bit) + " is out of range");
    init.features[bit / 32] |= 1u << (bit % 32);
  }
  if (ioctl(core_.lock()->fd(), KVM_ARM_VCPU_INIT, &init) < 0) return ThrowErrno(env, errno, "ioctl", "KVM_ARM_VCPU_INIT", "initialize arm64 vcpu");
  return env.Undefined();
}

namespace {
// Register width encoded in a KVM_REG id (api.rst 4.68): 1 << size field bytes.
uint32_t RegBytes(uint64_t id) { return 1u << ((id & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT); }

// The widest register KVM_REG ids can name (KVM_REG_SIZE_U2048).
constexpr uint32_t kMaxRegBytes = 256;

// A register id from JS no wider than `max_bytes`; false with the JS error thrown.
bool RegIdFromJs(Napi::Env env, Napi::Value v, uint32_t max_bytes, uint64_t* id) {
  if (!GetU64(v, id)) {
    ThrowUsage(env, "register id must be a bigint");
    return false;
  }
  if (RegBytes(*id) > max_bytes) {
    ThrowUsage(env, "register id " + std::to_string(*id) + (max_bytes == 8 ? " is wider than 64 bits" : " has an invalid size field"));
    return false;
  }
  return true;
}

// KVM_GET_ONE_REG or KVM_SET_ONE_REG with the register's bytes at `buf`; false with the JS error thrown.
bool OneReg(Napi::Env env, int fd, bool set, uint64_t id, void* buf) {
  kvm_one_reg r{};
  r.id = id;
  r.addr = reinterpret_cast<uint64_t>(buf);
  if (ioctl(fd, set ? KVM_SET_ONE_REG : KVM_GET_ONE_REG, &r) == 0) return true;
  ThrowErrno(env, errno, "ioctl", set ? "KVM_SET_ONE_REG" : "KVM_GET_ONE_REG", std::string(set ? "set" : "get") + " register " + std::to_string(id));
  return false;
}
}  // namespace

// getOneReg(id: bigint) -> bigint, for registers up to 64 bits wide.
Napi::Value Vcpu::GetOneReg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  uint64_t id, value = 0;
  if (!RegIdFromJs(env, info[0], 8, &id) || !OneReg(env, core_.lock()->fd(), false, id, &value)) return env.Undefined();
  return Big(env, value);
}

// setOneReg(id: bigint, value: bigint), for registers up to 64 bits wide.
Napi::Value Vcpu::SetOneReg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  uint64_t id, value;
  if (!RegIdFromJs(env, info[0], 8, &id)) return env.Undefined();
  if (!GetU64(info[1], &value)) return ThrowUsage(env, "register value must be a bigint");
  // KVM reads RegBytes(id) bytes; little-endian keeps narrow values in place.
  OneReg(env, core_.lock()->fd(), true, id, &value);
  return env.Undefined();
}

// getRegList() -> bigint[]: KVM_GET_REG_LIST, every register id this vCPU
// has (core, system, FP/SIMD, timer, firmware pseudo-registers), in KVM's order.
Napi::Value Vcpu::GetRegList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  int fd = core_.lock()->fd();
  kvm_reg_list probe{};
  probe.n = 0;
  // The first call fails with E2BIG and says how many ids there are.
  if (ioctl(fd, KVM_GET_REG_LIST, &probe) == 0) return Napi::Array::New(env, 0);
  if (errno != E2BIG) return ThrowErrno(env, errno, "ioctl", "KVM_GET_REG_LIST", "get register list size");
  // The kernel caps the list far below this; a larger count would be a kernel bug, not a reason to allocate.
  if (probe.n > 65536) return ThrowUsage(env, "KVM_GET_REG_LIST reported " + std::to_string(probe.n) + " registers");
  uint64_t n = probe.n;
  std::unique_ptr<uint64_t[]> mem(new uint64_t[n + 1]);
  auto* list = reinterpret_cast<kvm_reg_list*>(mem.get());
  list->n = n;
  if (ioctl(fd, KVM_GET_REG_LIST, list) < 0) return ThrowErrno(env, errno, "ioctl", "KVM_GET_REG_LIST", "get register list");
  Napi::Array out = Napi::Array::New(env, list->n);
  for (uint64_t i = 0; i < list->n; i++) out.Set(static_cast<uint32_t>(i), Big(env, list->reg[i]));
  return out;
}

// getOneRegBytes(id: bigint) -> Uint8Array of the register's width (from the
// id), for registers of any width (the 128-bit FP/SIMD vregs among them).
Napi::Value Vcpu::GetOneRegBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  uint64_t id;
  alignas(16) uint8_t buf[kMaxRegBytes] = {};
  if (!RegIdFromJs(env, info[0], kMaxRegBytes, &id) || !OneReg(env, core_.lock()->fd(), false, id, buf)) return env.Undefined();
  return Napi::Buffer<uint8_t>::Copy(env, buf, RegBytes(id));
}

// setOneRegBytes(id: bigint, bytes: Uint8Array): the bytes must be exactly the id's width.
Napi::Value Vcpu::SetOneRegBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usable(env, true)) return env.Undefined();
  uint64_t id;
  if (!RegIdFromJs(env, info[0], kMaxRegBytes, &id)) return env.Undefined();
  uint32_t n = RegBytes(id);
  if (!info[1].IsTypedArray() && !info[1].IsBuffer()) return ThrowUsage(env, "register value must be a Uint8Array");
  Napi::Uint8Array a = info[1].As<Napi::Uint8Array>();
  if (a.ByteLength() != n) return ThrowUsage(env, "register id " + std::to_string(id) + " is " + std::to_string(n) + " bytes wide; the value has " + std::to_string(a.ByteLength()));
  alignas(16) uint8_t buf[kMaxRegBytes] = {};
  std::memcpy(buf, a.Data(), n);
  OneReg(env, core_.lock()->fd(), true, id, buf);
  return env.Undefined();
}

}  // namespace nodevmm

#endif  // __aarch64__
