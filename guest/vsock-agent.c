/*
 * nodevmm's exec agent over virtio-vsock, run inside the guest:
 *
 *   gcc -static -O2 -o nodevmm-vsock-agent guest/vsock-agent.c
 *   nodevmm-vsock-agent PORT &          (then createVm({ vsock: { cid, agentPort: PORT } }))
 *
 * One connection per command (lib/vm/vsock-exec.ts is the host side): the host
 * sends the command and shuts down its write side; the agent runs it with
 * /bin/sh -c, stdin from /dev/null, stdout and stderr merged, and answers with
 * frames of [type u8][length u32 le][payload]: 'o' output bytes (any number),
 * then one 'x' with the exit status as an i32 le (128 + signal when killed).
 * If the host goes away, the command's process group is killed.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
/* Before linux/vm_sockets.h, which uses struct sockaddr without including it (the aarch64 cross headers do not pull it in). */
#include <sys/socket.h>
#include <linux/vm_sockets.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#define MAX_COMMAND (1 << 20)

static int send_all(int fd, const void *p, size_t n) {
  const char *b = p;
  while (n > 0) {
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

static int frame(int fd, char type, const void *p, uint32_t n) {
  unsigned char h[5] = {(unsigned char)type, n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >> 24) & 0xff};
  return send_all(fd, h, sizeof h) < 0 || send_all(fd, p, n) < 0 ? -1 : 0;
}

static void serve(int c) {
  char *cmd = malloc(MAX_COMMAND + 1);
  size_t len = 0;
  if (!cmd) return;
  for (;;) {
    ssize_t n = read(c, cmd + len, MAX_COMMAND - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += (size_t)n;
    if (len == MAX_COMMAND) break;
  }
  cmd[len] = 0;
  int out[2];
  if (pipe(out) < 0) return;
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    close(out[0]);
    close(out[1]);
    close(c);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  close(out[1]);
  char buf[32768];
  int lost = pid < 0;
  for (;;) {
    ssize_t n = read(out[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (!lost && frame(c, 'o', buf, (uint32_t)n) < 0) {
      lost = 1;
      kill(-pid, SIGKILL);
    }
  }
  close(out[0]);
  int status = 0, code = 127;
  if (pid > 0 && waitpid(pid, &status, 0) == pid) code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  unsigned char x[4] = {code & 0xff, (code >> 8) & 0xff, (code >> 16) & 0xff, (code >> 24) & 0xff};
  if (!lost) frame(c, 'x', x, sizeof x);
  free(cmd);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: nodevmm-vsock-agent PORT\n");
    return 2;
  }
  signal(SIGCHLD, SIG_DFL);
  int s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = (unsigned)atoi(argv[1])};
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 8) < 0) {
    fprintf(stderr, "nodevmm-vsock-agent: cannot listen on vsock port %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  for (;;) {
    int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    // One child per connection, so a long command does not block the next exec.
    pid_t p = fork();
    if (p == 0) {
      close(s);
      serve(c);
      _exit(0);
    }
    close(c);
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
  }
}
