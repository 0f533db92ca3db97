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

#define RAM_SIZE (256ull << 20)
#define HUGE (2ull << 20)

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void die(const char* what) {
  perror(what);
  exit(1);
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
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) die("KVM_CREATE_VM");
    if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000ul) < 0) die("KVM_SET_TSS_ADDR");
    uint64_t idmap = 0xfffbc000ull;
    if (ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0) die("KVM_SET_IDENTITY_MAP_ADDR");
    if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) die("KVM_CREATE_IRQCHIP");
    struct kvm_pit_config pit = {.flags = 0};
    if (ioctl(vm, KVM_CREATE_PIT2, &pit) < 0) die("KVM_CREATE_PIT2");
    /* 2 MiB aligned and THP-advised, as nodevmm's guest RAM. */
    uint8_t* raw = mmap(0, RAM_SIZE + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) die("mmap");
    uint8_t* ram = (uint8_t*)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
    madvise(ram, RAM_SIZE, MADV_HUGEPAGE);
    struct kvm_userspace_memory_region r = {.slot = 0, .guest_phys_addr = 0, .memory_size = RAM_SIZE, .userspace_addr = (uint64_t)ram};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0) die("KVM_SET_USER_MEMORY_REGION");
    static const uint8_t code[] = {0xe6, 0x10, 0xf4}; /* out 0x10, al; hlt */
    memcpy(ram + 0x1000, code, sizeof code);
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) die("KVM_CREATE_VCPU");
    struct kvm_run* run = mmap(0, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) die("mmap kvm_run");
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
