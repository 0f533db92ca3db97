/*
 * Baseline for scripts/bench-exits.js: the same real-mode guest loop driven
 * by a bare KVM_RUN loop in C, handling each exit with nothing but a switch.
 * Usage: raw-exits pio|cpuid|mmio ITERATIONS [handoff]  -> prints ns per iteration.
 *
 * With "handoff", each port or MMIO exit is answered by a second thread, as
 * nodevmm's vCPU thread hands an exit to the JS thread: the vCPU publishes
 * the exit in one cache line and spins until the other thread, itself
 * spinning on that line, has read it and marked it answered. What that costs
 * over the plain loop is what moving an exit between two cores costs on this
 * machine, before any device code runs.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>

/* One cache line, as nodevmm's exit mailbox (native/exit_mailbox.h). */
struct mailbox {
  _Atomic int state; /* 0 idle, 1 pending, 2 quit */
  uint32_t port;
  uint64_t data;
  uint64_t answered;
} __attribute__((aligned(64)));
static struct mailbox mb;

static inline void relax(void) { __builtin_ia32_pause(); }

static void* device_thread(void* arg) {
  (void)arg;
  for (;;) {
    int st = atomic_load_explicit(&mb.state, memory_order_acquire);
    if (st == 2) return 0;
    if (st != 1) { relax(); continue; }
    mb.answered++;
    mb.data = mb.port; /* the "device": a read returns something */
    atomic_store_explicit(&mb.state, 0, memory_order_release);
  }
}

static void hand_off(uint32_t port) {
  mb.port = port;
  atomic_store_explicit(&mb.state, 1, memory_order_release);
  while (atomic_load_explicit(&mb.state, memory_order_acquire) != 0) relax();
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const char* mode = argv[1];
  uint32_t n = (uint32_t)strtoul(argv[2], 0, 0);
  int handoff = argc > 3 && strcmp(argv[3], "handoff") == 0;
  pthread_t device;
  if (handoff && pthread_create(&device, 0, device_thread, 0) != 0) { perror("pthread_create"); return 1; }
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  size_t ram_size = 0x100000;
  uint8_t* ram = mmap(0, ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  struct kvm_userspace_memory_region r = {.slot = 0, .guest_phys_addr = 0, .memory_size = 0xf0000, .userspace_addr = (uint64_t)ram};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0) { perror("slot"); return 1; }
  /* The guest bytes are produced by bench-exits.js and passed on stdin. */
  size_t len = fread(ram + 0x1000, 1, 0x1000, stdin);
  (void)len;
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run* run = mmap(0, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  struct kvm_sregs s;
  ioctl(vcpu, KVM_GET_SREGS, &s);
  s.cs.base = 0; s.cs.selector = 0;
  s.ds.base = 0xf0000; s.ds.selector = 0xf000;
  ioctl(vcpu, KVM_SET_SREGS, &s);
  struct kvm_regs regs = {.rip = 0x1000, .rflags = 2, .rsp = 0x8000};
  ioctl(vcpu, KVM_SET_REGS, &regs);
  uint64_t exits = 0, t0 = now_ns();
  for (;;) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) { perror("KVM_RUN"); return 1; }
    if (run->exit_reason == KVM_EXIT_HLT) break;
    if (run->exit_reason == KVM_EXIT_IO) { if (handoff) hand_off(run->io.port); exits++; continue; }
    if (run->exit_reason == KVM_EXIT_MMIO) { if (handoff) hand_off((uint32_t)run->mmio.phys_addr); if (!run->mmio.is_write) memset(run->mmio.data, 0, 8); exits++; continue; }
    fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
    return 1;
  }
  uint64_t t1 = now_ns();
  if (handoff) {
    atomic_store_explicit(&mb.state, 2, memory_order_release);
    pthread_join(device, 0);
  }
  printf("%s %u %.1f %llu\n", mode, n, (double)(t1 - t0) / n, (unsigned long long)exits);
  return 0;
}
