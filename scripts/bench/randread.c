/*
 * 4 KiB random reads at queue depth 1 with O_DIRECT, for the virtio-blk
 * benchmark (scripts/bench-virtio.js). It runs inside the guest, built static
 * on the host; busybox has nothing like fio.
 *
 *   randread DEVICE SECONDS  ->  prints GUEST-RANDREAD-IOPS=<n> GUEST-RANDREAD-OPS=<n>
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: randread DEVICE SECONDS\n");
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
  void *buf;
  if (posix_memalign(&buf, 4096, 4096) != 0) return 1;
  const uint64_t blocks = bytes / 4096;
  uint64_t x = 0x9e3779b97f4a7c15ull, ops = 0;
  const double seconds = atof(argv[2]), start = now();
  double elapsed = 0;
  while (elapsed < seconds) {
    for (int i = 0; i < 64; i++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
      if (pread(fd, buf, 4096, (off_t)((x % blocks) * 4096)) != 4096) {
        perror("pread");
        return 1;
      }
      ops++;
    }
    elapsed = now() - start;
  }
  printf("GUEST-RANDREAD-IOPS=%.0f\nGUEST-RANDREAD-OPS=%llu\n", ops / elapsed, (unsigned long long)ops);
  return 0;
}
