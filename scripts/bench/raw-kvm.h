/*
 * The KVM steps the two C baselines share (raw-first-exit.c, raw-churn.c): a
 * VM as nodevmm's x86 machine makes it (TSS and identity map, in-kernel
 * irqchip and PIT), guest RAM 2 MiB aligned and THP-advised as nodevmm's, and
 * one vCPU with the supported CPUID, entering real-mode code at 0x1000.
 */
#ifndef NODEVMM_BENCH_RAW_KVM_H
#define NODEVMM_BENCH_RAW_KVM_H

#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#define HUGE (2ull << 20)

static void die(const char* what) {
  perror(what);
  exit(1);
}

static int raw_vm(int kvm) {
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000ul) < 0) die("KVM_SET_TSS_ADDR");
  uint64_t idmap = 0xfffbc000ull;
  if (ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0) die("KVM_SET_IDENTITY_MAP_ADDR");
  if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) die("KVM_CREATE_IRQCHIP");
  struct kvm_pit_config pit = {.flags = 0};
  if (ioctl(vm, KVM_CREATE_PIT2, &pit) < 0) die("KVM_CREATE_PIT2");
  return vm;
}

/* Guest RAM at gpa 0 in slot 0; returns the mapping to munmap (size + HUGE bytes) and sets *ram. */
static uint8_t* raw_ram(int vm, uint64_t size, uint8_t** ram) {
  uint8_t* raw = mmap(0, size + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) die("mmap");
  *ram = (uint8_t*)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
  madvise(*ram, size, MADV_HUGEPAGE);
  struct kvm_userspace_memory_region r = {.slot = 0, .guest_phys_addr = 0, .memory_size = size, .userspace_addr = (uint64_t)*ram};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0) die("KVM_SET_USER_MEMORY_REGION");
  return raw;
}

/* vCPU 0 with the supported CPUID, CS base 0 and RIP 0x1000; sets *run to its mapped kvm_run. */
static int raw_vcpu(int kvm, int vm, int run_size, struct kvm_run** run) {
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  *run = mmap(0, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (*run == MAP_FAILED) die("mmap kvm_run");
  struct {
    struct kvm_cpuid2 h;
    struct kvm_cpuid_entry2 e[256];
  } cpuid = {.h.nent = 256};
  if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cpuid) < 0) die("KVM_GET_SUPPORTED_CPUID");
  if (ioctl(vcpu, KVM_SET_CPUID2, &cpuid) < 0) die("KVM_SET_CPUID2");
  struct kvm_sregs s;
  if (ioctl(vcpu, KVM_GET_SREGS, &s) < 0) die("KVM_GET_SREGS");
  s.cs.base = 0;
  s.cs.selector = 0;
  if (ioctl(vcpu, KVM_SET_SREGS, &s) < 0) die("KVM_SET_SREGS");
  struct kvm_regs regs = {.rip = 0x1000, .rflags = 2};
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");
  return vcpu;
}

#endif
