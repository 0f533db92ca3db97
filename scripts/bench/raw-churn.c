/*
 * Baseline for the churn figure of scripts/bench-density.js: what a C VMM
 * pays this machine's KVM for one tiny VM's whole life, the same steps
 * nodevmm takes for the tiny PVH guest: VM, TSS and identity-map addresses,
 * in-kernel irqchip and PIT, one RAM slot of the same size (2 MiB aligned,
 * THP-advised), one vCPU with KVM's supported CPUID, KVM_RUN on a fresh
 * thread through 13 port writes (the marker line and the power-off write),
 * then every fd closed and the RAM unmapped. /dev/kvm is opened once.
 * Usage: raw-churn VMS RAM_MIB [PARALLEL] -> prints "<VMs per second>
 * <cpu ms per VM>" (CPU = this process's user + system time, all threads),
 * PARALLEL threads each making VMS VMs one after another.
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
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "raw-kvm.h"

#define PORT_WRITES 13

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double cpu_ms(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec * 1e3 + u.ru_utime.tv_usec / 1e3 + u.ru_stime.tv_sec * 1e3 + u.ru_stime.tv_usec / 1e3;
}

struct vcpu_run {
  int fd;
  struct kvm_run* run;
  int writes;
};

static void* run_vcpu(void* arg) {
  struct vcpu_run* v = arg;
  for (;;) {
    if (ioctl(v->fd, KVM_RUN, 0) < 0) return NULL;
    if (v->run->exit_reason != KVM_EXIT_IO) return NULL;
    if (++v->writes == PORT_WRITES) return NULL;
  }
}

static void one_vm(int kvm, int run_size, uint64_t ram_size) {
  int vm = raw_vm(kvm);
  uint8_t* ram;
  uint8_t* raw = raw_ram(vm, ram_size, &ram);
  /* mov dx, 0x3f8; again: out dx, al; jmp again (the vCPU thread stops after PORT_WRITES) */
  static const uint8_t code[] = {0xba, 0xf8, 0x03, 0xee, 0xeb, 0xfd};
  memcpy(ram + 0x1000, code, sizeof code);
  struct kvm_run* run;
  int vcpu = raw_vcpu(kvm, vm, run_size, &run);
  struct vcpu_run v = {.fd = vcpu, .run = run};
  pthread_t th;
  pthread_create(&th, NULL, run_vcpu, &v);
  pthread_join(th, NULL);
  if (v.writes != PORT_WRITES) {
    fprintf(stderr, "guest stopped after %d port writes (exit reason %u)\n", v.writes, run->exit_reason);
    exit(1);
  }
  munmap(run, run_size);
  close(vcpu);
  close(vm);
  munmap(raw, ram_size + HUGE);
}

static int g_kvm, g_run_size, g_vms;
static uint64_t g_ram_size;

static void* worker(void* arg) {
  (void)arg;
  for (int i = 0; i < g_vms; i++) one_vm(g_kvm, g_run_size, g_ram_size);
  return NULL;
}

int main(int argc, char** argv) {
  g_vms = argc > 1 ? atoi(argv[1]) : 50;
  g_ram_size = (uint64_t)(argc > 2 ? atoi(argv[2]) : 64) << 20;
  int parallel = argc > 3 ? atoi(argv[3]) : 1;
  if (g_vms < 1 || g_ram_size == 0 || parallel < 1 || parallel > 64) {
    fprintf(stderr, "usage: raw-churn VMS RAM_MIB [PARALLEL 1-64]\n");
    return 2;
  }
  g_kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (g_kvm < 0) die("/dev/kvm");
  g_run_size = ioctl(g_kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  for (int i = 0; i < 3; i++) one_vm(g_kvm, g_run_size, g_ram_size);
  double t0 = now_ms(), c0 = cpu_ms();
  pthread_t th[64];
  for (int i = 0; i < parallel; i++) pthread_create(&th[i], NULL, worker, NULL);
  for (int i = 0; i < parallel; i++) pthread_join(th[i], NULL);
  double n = (double)g_vms * parallel;
  printf("%.2f %.3f\n", n / ((now_ms() - t0) / 1e3), (cpu_ms() - c0) / n);
  return 0;
}
