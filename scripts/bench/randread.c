/*
 * 4 KiB random reads with O_DIRECT at a fixed queue depth, for the virtio-blk
 * benchmark (scripts/bench-virtio.js). It runs inside the guest, built static
 * on the host; busybox has nothing like fio. Depth 1 uses pread; deeper
 * queues keep DEPTH reads in flight through Linux native AIO (io_submit,
 * as fio's libaio engine), each completion answered by a new read.
 *
 *   randread DEVICE SECONDS [DEPTH]  ->  prints GUEST-RANDREAD-IOPS=<n> GUEST-RANDREAD-OPS=<n>
 *   (with DEPTH > 1: GUEST-RANDREAD-QD<DEPTH>-IOPS=<n> ...)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH 64

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t x = 0x9e3779b97f4a7c15ull;
static uint64_t next_block(uint64_t blocks) {
  x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
  return x % blocks;
}

static int depth_one(int fd, uint64_t blocks, double seconds, uint64_t *ops, double *elapsed) {
  void *buf;
  if (posix_memalign(&buf, 4096, 4096) != 0) return 1;
  const double start = now();
  while (*elapsed < seconds) {
    for (int i = 0; i < 64; i++) {
      if (pread(fd, buf, 4096, (off_t)(next_block(blocks) * 4096)) != 4096) {
        perror("pread");
        return 1;
      }
      (*ops)++;
    }
    *elapsed = now() - start;
  }
  return 0;
}

static int depth_n(int fd, uint64_t blocks, double seconds, int depth, uint64_t *ops, double *elapsed) {
  aio_context_t ctx = 0;
  if (syscall(SYS_io_setup, depth, &ctx) != 0) {
    perror("io_setup");
    return 1;
  }
  static struct iocb cbs[MAX_DEPTH];
  struct iocb *one[1];
  struct io_event ev[MAX_DEPTH];
  char *bufs;
  if (posix_memalign((void **)&bufs, 4096, (size_t)depth * 4096) != 0) return 1;
  const double start = now();
  for (int i = 0; i < depth; i++) {
    memset(&cbs[i], 0, sizeof cbs[i]);
    cbs[i].aio_fildes = fd;
    cbs[i].aio_lio_opcode = IOCB_CMD_PREAD;
    cbs[i].aio_buf = (uint64_t)(uintptr_t)(bufs + (size_t)i * 4096);
    cbs[i].aio_nbytes = 4096;
    cbs[i].aio_offset = (int64_t)(next_block(blocks) * 4096);
    cbs[i].aio_data = i;
    one[0] = &cbs[i];
    if (syscall(SYS_io_submit, ctx, 1, one) != 1) {
      perror("io_submit");
      return 1;
    }
  }
  int inflight = depth;
  while (inflight > 0) {
    long n = syscall(SYS_io_getevents, ctx, 1, depth, ev, NULL);
    if (n < 0) {
      perror("io_getevents");
      return 1;
    }
    *elapsed = now() - start;
    for (long k = 0; k < n; k++) {
      if (ev[k].res != 4096) {
        fprintf(stderr, "aio read returned %lld\n", (long long)ev[k].res);
        return 1;
      }
      (*ops)++;
      inflight--;
      if (*elapsed >= seconds) continue;
      struct iocb *cb = &cbs[ev[k].data];
      cb->aio_offset = (int64_t)(next_block(blocks) * 4096);
      one[0] = cb;
      if (syscall(SYS_io_submit, ctx, 1, one) != 1) {
        perror("io_submit");
        return 1;
      }
      inflight++;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: randread DEVICE SECONDS [DEPTH 1-%d]\n", MAX_DEPTH);
    return 2;
  }
  const int depth = argc == 4 ? atoi(argv[3]) : 1;
  if (depth < 1 || depth > MAX_DEPTH) {
    fprintf(stderr, "randread: depth %s is not 1 to %d\n", argv[3], MAX_DEPTH);
    return 2;
  }
  int fd = open(argv[1], O_RDONLY | O_DIRECT);
  if (fd < 0) {
    perror(argv[1]);
    return 1;
  }
  uint64_t bytes = 0;
  if (ioctl(fd, BLKGETSIZE64, &bytes) != 0 || bytes < 4096) {
    perror("BLKGETSIZE64");
    return 1;
  }
  const uint64_t blocks = bytes / 4096;
  uint64_t ops = 0;
  double elapsed = 0;
  const double seconds = atof(argv[2]);
  if ((depth == 1 ? depth_one(fd, blocks, seconds, &ops, &elapsed) : depth_n(fd, blocks, seconds, depth, &ops, &elapsed)) != 0) return 1;
  char tag[32] = "";
  if (depth > 1) snprintf(tag, sizeof tag, "QD%d-", depth);
  printf("GUEST-RANDREAD-%sIOPS=%.0f\nGUEST-RANDREAD-%sOPS=%llu\n", tag, ops / elapsed, tag, (unsigned long long)ops);
  return 0;
}
