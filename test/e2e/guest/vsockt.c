/*
 * Guest side of test/e2e/virtio-vsock.test.ts (busybox has no vsock):
 *   vsockt echo PORT        listen on PORT, print GUEST-VSOCK-LISTENING=PORT,
 *                           echo one connection's bytes back until EOF, then
 *                           print GUEST-VSOCK-ECHOED=<bytes>
 *   vsockt send PORT BYTES  connect to the host (cid 2) at PORT and send BYTES
 *                           bytes of the pattern (i * 7 + 3) & 0xff, then close
 * Built static at test time with gcc -static.
 */
#include <errno.h>
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(const char *what) {
  printf("GUEST-VSOCK-ERROR=%s: %s\n", what, strerror(errno));
  fflush(stdout);
  return 1;
}

static int echo(unsigned port) {
  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (s < 0) return fail("socket");
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
  if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) return fail("bind");
  if (listen(s, 1) < 0) return fail("listen");
  printf("GUEST-VSOCK-LISTENING=%u\n", port);
  fflush(stdout);
  int c = accept(s, NULL, NULL);
  if (c < 0) return fail("accept");
  static char buf[65536];
  long total = 0;
  for (;;) {
    ssize_t n = read(c, buf, sizeof buf);
    if (n < 0) return fail("read");
    if (n == 0) break;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(c, buf + off, n - off);
      if (w < 0) return fail("write");
      off += w;
    }
    total += n;
  }
  shutdown(c, SHUT_WR);
  close(c);
  close(s);
  printf("GUEST-VSOCK-ECHOED=%ld\n", total);
  fflush(stdout);
  return 0;
}

static int send_to_host(unsigned port, long bytes) {
  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (s < 0) return fail("socket");
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST, .svm_port = port};
  if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) return fail("connect");
  static unsigned char buf[65536];
  long sent = 0;
  while (sent < bytes) {
    long n = bytes - sent < (long)sizeof buf ? bytes - sent : (long)sizeof buf;
    for (long i = 0; i < n; i++) buf[i] = (unsigned char)(((sent + i) * 7 + 3) & 0xff);
    for (long off = 0; off < n;) {
      ssize_t w = write(s, buf + off, n - off);
      if (w < 0) return fail("write");
      off += w;
    }
    sent += n;
  }
  close(s);
  printf("GUEST-VSOCK-SENT=%ld\n", sent);
  fflush(stdout);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "echo")) return echo((unsigned)atoi(argv[2]));
  if (argc == 4 && !strcmp(argv[1], "send")) return send_to_host((unsigned)atoi(argv[2]), atol(argv[3]));
  fprintf(stderr, "usage: vsockt echo PORT | vsockt send PORT BYTES\n");
  return 2;
}
