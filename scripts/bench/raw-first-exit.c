/*
 * Baseline for the "create a VM and run to its first exit" figure of
 * scripts/bench-exits.js: the same steps nodevmm's KvmPartition takes
 * (VM, TSS and identity-map addresses, in-kernel irqchip and PIT, one
 * 256 MiB RAM slot, one vCPU with KVM's supported CPUID, real-mode registers),
 * then KVM_RUN on a fresh thread (nodevmm runs each vCPU on its own thread)
 * until the guest's `out 0x10, al`. /dev/kvm is opened once, as nodevmm does.
 * Usage: raw-first-exit SAMPLES -> prints the median in ms.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "raw-kvm.h"

#define RAM_SIZE (256ull << 20)

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

struct vcpu_run {
  int fd;
  struct kvm_run* run;
  int ok;
};

static void* run_vcpu(void* arg) {
  struct vcpu_run* v = arg;
  for (;;) {
    if (ioctl(v->fd, KVM_RUN, 0) < 0) return NULL;
    if (v->run->exit_reason == KVM_EXIT_IO && v->run->io.port == 0x10) {
      v->ok = 1;
      return NULL;
    }
    if (v->run->exit_reason != KVM_EXIT_IO && v->run->exit_reason != KVM_EXIT_MMIO) return NULL;
  }
}

static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char** argv) {
  int samples = argc > 1 ? atoi(argv[1]) : 25;
  int warmup = 5;
  double* ms = calloc(samples, sizeof(double));
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("/dev/kvm");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  for (int i = 0; i < samples + warmup; i++) {
    uint64_t t0 = now_ns();
    int vm = raw_vm(kvm);
    uint8_t* ram;
    uint8_t* raw = raw_ram(vm, RAM_SIZE, &ram);
    static const uint8_t code[] = {0xe6, 0x10, 0xf4}; /* out 0x10, al; hlt */
    memcpy(ram + 0x1000, code, sizeof code);
    struct kvm_run* run;
    int vcpu = raw_vcpu(kvm, vm, run_size, &run);
    struct vcpu_run v = {.fd = vcpu, .run = run};
    pthread_t th;
    pthread_create(&th, NULL, run_vcpu, &v);
    pthread_join(th, NULL);
    uint64_t t1 = now_ns();
    if (!v.ok) {
      fprintf(stderr, "guest did not reach its port write (exit reason %u)\n", run->exit_reason);
      return 1;
    }
    munmap(run, run_size);
    close(vcpu);
    close(vm);
    munmap(raw, RAM_SIZE + HUGE);
    if (i >= warmup) ms[i - warmup] = (double)(t1 - t0) / 1e6;
  }
  qsort(ms, samples, sizeof(double), cmp);
  printf("%.3f\n", ms[samples / 2]);
  return 0;
}
