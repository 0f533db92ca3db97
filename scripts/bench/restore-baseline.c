/*
 * Baseline for scripts/bench-snapshot.js: what a C VMM pays this machine's
 * KVM to restore the tiny counting guest (lib/testing/counting-guest.ts) to
 * its first exit, with the same ioctls in the same order as nodevmm's
 * restore (KvmPartition with `ram`, restoreState, start):
 *
 *   open the RAM file, mmap it MAP_PRIVATE (2 MiB aligned, THP-advised),
 *   KVM_CREATE_VM, the RAM's memory slot, TSS and identity-map addresses,
 *   KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2, KVM_CREATE_VCPU (+ CPUID), then
 *   PIT, PIC and IOAPIC state, the vCPU's CPUID, MP state, registers,
 *   special registers, XSAVE, XCRs, debug registers, LAPIC, MSRs and events,
 *   kvmclock, and KVM_RUN on a new thread until the guest's next port read.
 *
 * The state comes from this program's own snapshot of the same guest: it
 * loads the guest's fresh RAM image (written by the benchmark), sets the
 * long-mode registers lib/testing/tiny-guests.ts setupLongMode sets, runs to
 * the 5th read of the feed port, completes that read (immediate_exit) and
 * saves everything with the KVM_GET_* ioctls, the RAM into a file.
 *
 * With `late`, the memory slot is added after the irqchip and the vCPU
 * instead (the order nodevmm used before): on KVM-PVM that slot waits for
 * an SRCU grace period the kernel ends on a timer tick.
 *
 * Usage: restore-baseline IMAGE RAM_BYTES WORKDIR SAMPLES [late]
 *   -> prints the median restore-to-first-exit in ms.
 */
#define _GNU_SOURCE
#include <errno.h>
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

#define HUGE (2ull << 20)
#define FEED_PORT 0x510
#define CODE 0x100000
#define GDT_START 0x1000
#define PML4_START 0x4000
#define MAX_MSRS 512

static void die(const char* what) {
  perror(what);
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

struct cpuid_buf {
  struct kvm_cpuid2 h;
  struct kvm_cpuid_entry2 e[256];
};
struct msr_buf {
  struct kvm_msrs h;
  struct kvm_msr_entry e[MAX_MSRS];
};

/* Everything the restore puts back. */
struct saved {
  struct kvm_pit_state2 pit;
  struct kvm_irqchip chip[3];
  struct kvm_clock_data clock;
  struct cpuid_buf cpuid;
  struct kvm_mp_state mp;
  struct kvm_regs regs;
  struct kvm_sregs sregs;
  void* xsave;
  int xsave_size;
  struct kvm_xcrs xcrs;
  struct kvm_debugregs dregs;
  struct kvm_lapic_state lapic;
  struct msr_buf msrs;
  struct kvm_vcpu_events events;
};

struct vm {
  int vm, vcpu;
  struct kvm_run* run;
  uint8_t* ram;
};

/* A VM as nodevmm's x86 machine makes it; with `ram_fd` >= 0 its RAM is that file mapped private, added before the irqchip unless `late`. */
static struct vm make_vm(int kvm, int run_size, uint64_t size, int ram_fd, int late, struct cpuid_buf* supported) {
  struct vm v;
  /* Reserve 2 MiB-aligned, then map the RAM over it (native/guest_ram.cc does the same). */
  uint8_t* raw = mmap(0, size + HUGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) die("mmap reserve");
  uint8_t* at = (uint8_t*)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
  if (at > raw) munmap(raw, at - raw);
  if (raw + size + HUGE > at + size) munmap(at + size, raw + size + HUGE - (at + size));
  int flags = MAP_PRIVATE | MAP_NORESERVE | MAP_FIXED | (ram_fd < 0 ? MAP_ANONYMOUS : 0);
  v.ram = mmap(at, size, PROT_READ | PROT_WRITE, flags, ram_fd, 0);
  if (v.ram == MAP_FAILED) die("mmap ram");
  madvise(v.ram, size, MADV_HUGEPAGE);
  madvise(v.ram, size, MADV_DONTDUMP);
  v.vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (v.vm < 0) die("KVM_CREATE_VM");
  struct kvm_userspace_memory_region r = {.slot = 0, .guest_phys_addr = 0, .memory_size = size, .userspace_addr = (uint64_t)v.ram};
  if (!late && ioctl(v.vm, KVM_SET_USER_MEMORY_REGION, &r) < 0) die("KVM_SET_USER_MEMORY_REGION");
  if (ioctl(v.vm, KVM_SET_TSS_ADDR, 0xfffbd000ul) < 0) die("KVM_SET_TSS_ADDR");
  uint64_t idmap = 0xfffbc000ull;
  if (ioctl(v.vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0) die("KVM_SET_IDENTITY_MAP_ADDR");
  if (ioctl(v.vm, KVM_CREATE_IRQCHIP, 0) < 0) die("KVM_CREATE_IRQCHIP");
  struct kvm_pit_config pit = {.flags = 0};
  if (ioctl(v.vm, KVM_CREATE_PIT2, &pit) < 0) die("KVM_CREATE_PIT2");
  v.vcpu = ioctl(v.vm, KVM_CREATE_VCPU, 0);
  if (v.vcpu < 0) die("KVM_CREATE_VCPU");
  v.run = mmap(0, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v.vcpu, 0);
  if (v.run == MAP_FAILED) die("mmap kvm_run");
  if (ioctl(v.vcpu, KVM_SET_CPUID2, supported) < 0) die("KVM_SET_CPUID2");
  if (late && ioctl(v.vm, KVM_SET_USER_MEMORY_REGION, &r) < 0) die("KVM_SET_USER_MEMORY_REGION");
  return v;
}

static void free_vm(struct vm* v, int run_size, uint64_t size) {
  munmap(v->run, run_size);
  close(v->vcpu);
  close(v->vm);
  munmap(v->ram, size);
}

/* KVM_GET_MSRS stops at the first MSR it refuses: skip it and go on (lib/hv/kvm-partition.ts readableMsrs). */
static void save_msrs(int vcpu, const struct kvm_msr_list* list, struct msr_buf* out) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < list->nmsrs && n < MAX_MSRS;) {
    struct msr_buf b = {.h.nmsrs = 0};
    uint32_t k = 0;
    for (uint32_t j = i; j < list->nmsrs && k < MAX_MSRS; j++) b.e[k++].index = list->indices[j];
    b.h.nmsrs = k;
    int got = ioctl(vcpu, KVM_GET_MSRS, &b);
    if (got < 0) die("KVM_GET_MSRS");
    for (int j = 0; j < got && n < MAX_MSRS; j++) out->e[n++] = b.e[j];
    i += got + 1;
  }
  out->h.nmsrs = n;
}

struct runner {
  int fd;
  struct kvm_run* run;
  int ok;
};

static void* run_to_feed(void* arg) {
  struct runner* r = arg;
  for (;;) {
    if (ioctl(r->fd, KVM_RUN, 0) < 0) return NULL;
    if (r->run->exit_reason == KVM_EXIT_IO && r->run->io.port == FEED_PORT) {
      r->ok = 1;
      return NULL;
    }
    if (r->run->exit_reason != KVM_EXIT_IO && r->run->exit_reason != KVM_EXIT_MMIO) return NULL;
  }
}

static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

static void set_seg(struct kvm_segment* s, uint16_t sel, uint8_t type, uint8_t l, uint8_t db) {
  memset(s, 0, sizeof *s);
  s->selector = sel;
  s->limit = 0xffffffff;
  s->type = type;
  s->present = 1;
  s->s = 1;
  s->l = l;
  s->db = db;
  s->g = 1;
}

int main(int argc, char** argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: restore-baseline IMAGE RAM_BYTES WORKDIR SAMPLES [late]\n");
    return 2;
  }
  const char* image = argv[1];
  uint64_t size = strtoull(argv[2], 0, 0);
  const char* work = argv[3];
  int samples = atoi(argv[4]);
  int late = argc > 5 && !strcmp(argv[5], "late");
  int warmup = 3;
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("/dev/kvm");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  static struct cpuid_buf supported = {.h.nent = 256};
  if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &supported) < 0) die("KVM_GET_SUPPORTED_CPUID");
  struct {
    struct kvm_msr_list h;
    uint32_t idx[1024];
  } list = {.h.nmsrs = 1024};
  if (ioctl(kvm, KVM_GET_MSR_INDEX_LIST, &list) < 0) die("KVM_GET_MSR_INDEX_LIST");
  int xsave2 = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);

  /* 1. Cold run of the guest to its 5th feed read, then save it. */
  static struct saved s;
  char ram_file[4096];
  snprintf(ram_file, sizeof ram_file, "%s/restore-baseline-ram", work);
  {
    struct vm v = make_vm(kvm, run_size, size, -1, 0, &supported);
    int img = open(image, O_RDONLY);
    if (img < 0) die(image);
    /* Only its data: reading the holes of a 3 GiB image would fill the guest's RAM with zero pages. */
    for (off_t data = lseek(img, 0, SEEK_DATA); data >= 0 && (uint64_t)data < size; data = lseek(img, data, SEEK_DATA)) {
      off_t hole = lseek(img, data, SEEK_HOLE);
      if (hole < 0 || (uint64_t)hole > size) hole = size;
      for (off_t off = data; off < hole;) {
        ssize_t n = pread(img, v.ram + off, hole - off, off);
        if (n <= 0) die("read image");
        off += n;
      }
      data = hole;
    }
    close(img);
    struct kvm_sregs sr;
    if (ioctl(v.vcpu, KVM_GET_SREGS, &sr) < 0) die("KVM_GET_SREGS");
    set_seg(&sr.cs, 0x08, 0xb, 1, 0);
    set_seg(&sr.ds, 0x10, 0x3, 0, 1);
    sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
    sr.gdt.base = GDT_START;
    sr.gdt.limit = 0x1f;
    sr.cr0 = 0x80000011;
    sr.cr3 = PML4_START;
    sr.cr4 = 0x20;
    sr.efer = 0xd01;
    if (ioctl(v.vcpu, KVM_SET_SREGS, &sr) < 0) die("KVM_SET_SREGS");
    struct kvm_regs rg = {.rip = CODE, .rflags = 2, .rsp = 0x80000};
    if (ioctl(v.vcpu, KVM_SET_REGS, &rg) < 0) die("KVM_SET_REGS");
    int reads = 0;
    while (reads < 5) {
      if (ioctl(v.vcpu, KVM_RUN, 0) < 0) die("KVM_RUN");
      if (v.run->exit_reason != KVM_EXIT_IO || v.run->io.port != FEED_PORT || v.run->io.direction != KVM_EXIT_IO_IN) {
        fprintf(stderr, "the guest stopped before its 5th read (exit reason %u)\n", v.run->exit_reason);
        return 1;
      }
      reads++;
      uint32_t value = 7u * reads;
      memcpy((uint8_t*)v.run + v.run->io.data_offset, &value, v.run->io.size);
    }
    /* Complete the read without running on (api.rst: immediate_exit before a save). */
    v.run->immediate_exit = 1;
    if (ioctl(v.vcpu, KVM_RUN, 0) == 0 || errno != EINTR) die("KVM_RUN immediate_exit");
    v.run->immediate_exit = 0;
    if (ioctl(v.vcpu, KVM_GET_MP_STATE, &s.mp) < 0) die("KVM_GET_MP_STATE");
    if (ioctl(v.vcpu, KVM_GET_REGS, &s.regs) < 0) die("KVM_GET_REGS");
    if (ioctl(v.vcpu, KVM_GET_SREGS, &s.sregs) < 0) die("KVM_GET_SREGS");
    s.xsave_size = xsave2 > 0 ? xsave2 : (int)sizeof(struct kvm_xsave);
    s.xsave = calloc(1, s.xsave_size);
    if (ioctl(v.vcpu, xsave2 > 0 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, s.xsave) < 0) die("KVM_GET_XSAVE");
    if (ioctl(v.vcpu, KVM_GET_XCRS, &s.xcrs) < 0) die("KVM_GET_XCRS");
    if (ioctl(v.vcpu, KVM_GET_DEBUGREGS, &s.dregs) < 0) die("KVM_GET_DEBUGREGS");
    if (ioctl(v.vcpu, KVM_GET_LAPIC, &s.lapic) < 0) die("KVM_GET_LAPIC");
    s.cpuid.h.nent = 256;
    if (ioctl(v.vcpu, KVM_GET_CPUID2, &s.cpuid) < 0) die("KVM_GET_CPUID2");
    save_msrs(v.vcpu, &list.h, &s.msrs);
    if (ioctl(v.vcpu, KVM_GET_VCPU_EVENTS, &s.events) < 0) die("KVM_GET_VCPU_EVENTS");
    for (int c = 0; c < 3; c++) {
      s.chip[c].chip_id = c;
      if (ioctl(v.vm, KVM_GET_IRQCHIP, &s.chip[c]) < 0) die("KVM_GET_IRQCHIP");
    }
    if (ioctl(v.vm, KVM_GET_PIT2, &s.pit) < 0) die("KVM_GET_PIT2");
    if (ioctl(v.vm, KVM_GET_CLOCK, &s.clock) < 0) die("KVM_GET_CLOCK");
    int out = open(ram_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) die(ram_file);
    if (ftruncate(out, size) < 0) die("ftruncate");
    static const uint8_t zero[4096];
    for (uint64_t off = 0; off < size; off += 4096) {
      if (!memcmp(v.ram + off, zero, 4096)) continue; /* holes, as writeRamTo leaves them */
      if (pwrite(out, v.ram + off, 4096, off) != 4096) die("write ram file");
    }
    close(out);
    free_vm(&v, run_size, size);
  }

  /* 2. Restore it, again and again, timing each to the guest's next feed read. */
  double* ms = calloc(samples, sizeof(double));
  for (int i = 0; i < samples + warmup; i++) {
    uint64_t t0 = now_ns();
    int fd = open(ram_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die(ram_file);
    struct vm v = make_vm(kvm, run_size, size, fd, late, &supported);
    close(fd);
    if (ioctl(v.vm, KVM_SET_PIT2, &s.pit) < 0) die("KVM_SET_PIT2");
    for (int c = 0; c < 3; c++)
      if (ioctl(v.vm, KVM_SET_IRQCHIP, &s.chip[c]) < 0) die("KVM_SET_IRQCHIP");
    if (ioctl(v.vcpu, KVM_SET_CPUID2, &s.cpuid) < 0) die("KVM_SET_CPUID2 (saved)");
    if (ioctl(v.vcpu, KVM_SET_MP_STATE, &s.mp) < 0) die("KVM_SET_MP_STATE");
    if (ioctl(v.vcpu, KVM_SET_REGS, &s.regs) < 0) die("KVM_SET_REGS");
    if (ioctl(v.vcpu, KVM_SET_SREGS, &s.sregs) < 0) die("KVM_SET_SREGS");
    if (ioctl(v.vcpu, KVM_SET_XSAVE, s.xsave) < 0) die("KVM_SET_XSAVE");
    if (ioctl(v.vcpu, KVM_SET_XCRS, &s.xcrs) < 0) die("KVM_SET_XCRS");
    if (ioctl(v.vcpu, KVM_SET_DEBUGREGS, &s.dregs) < 0) die("KVM_SET_DEBUGREGS");
    if (ioctl(v.vcpu, KVM_SET_LAPIC, &s.lapic) < 0) die("KVM_SET_LAPIC");
    if (ioctl(v.vcpu, KVM_SET_MSRS, &s.msrs) != (int)s.msrs.h.nmsrs) die("KVM_SET_MSRS");
    if (ioctl(v.vcpu, KVM_SET_VCPU_EVENTS, &s.events) < 0) die("KVM_SET_VCPU_EVENTS");
    struct kvm_clock_data clock = {.clock = s.clock.clock};
    if (ioctl(v.vm, KVM_SET_CLOCK, &clock) < 0) die("KVM_SET_CLOCK");
    struct runner r = {.fd = v.vcpu, .run = v.run};
    pthread_t th;
    pthread_create(&th, NULL, run_to_feed, &r);
    pthread_join(th, NULL);
    uint64_t t1 = now_ns();
    if (!r.ok) {
      fprintf(stderr, "the restored guest did not reach its next read (exit reason %u)\n", v.run->exit_reason);
      return 1;
    }
    free_vm(&v, run_size, size);
    if (i >= warmup) ms[i - warmup] = (double)(t1 - t0) / 1e6;
  }
  unlink(ram_file);
  qsort(ms, samples, sizeof(double), cmp);
  printf("%.3f\n", ms[samples / 2]);
  return 0;
}
