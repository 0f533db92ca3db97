// <linux/kvm.h> for C++. Kernel uapi headers before 6.5 declare flexible
// arrays through __DECLARE_FLEX_ARRAY, whose empty struct has size 1 in C++
// (0 in C): that makes sizeof(kvm_cpuid2) 12 instead of 8, and every ioctl
// number built from such a struct wrong (KVM answers EINVAL). Redefine the
// macro as a plain zero-length array before kvm.h is seen.
#pragma once

#include <linux/stddef.h>
#undef __DECLARE_FLEX_ARRAY
#define __DECLARE_FLEX_ARRAY(TYPE, NAME) TYPE NAME[0]
#include <linux/kvm.h>

#if defined(__x86_64__)
static_assert(sizeof(struct kvm_cpuid2) == 8, "kvm_cpuid2 layout");
static_assert(sizeof(struct kvm_msrs) == 8, "kvm_msrs layout");
static_assert(sizeof(struct kvm_msr_list) == 4, "kvm_msr_list layout");
#endif
static_assert(sizeof(struct kvm_irq_routing) == 8, "kvm_irq_routing layout");
