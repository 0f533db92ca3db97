// Closer threads for fds whose close waits in the kernel (deferred_close.h).
#include "deferred_close.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace nodevmm {

namespace {
// Closes that may overlap: KVM's grace-period waits of several VMs overlap
// as well, so a churning process is not held to one close at a time.
constexpr size_t kMaxClosers = 4;

struct Closer {
  std::thread thread;
  std::shared_ptr<std::atomic<bool>> done;
};

struct Closers {
  std::mutex mu;
  std::vector<Closer> running;
};

// Never destroyed: a joinable std::thread in a static destructor at exit
// would call std::terminate. Threads still closing at exit end with the
// process, whose exit closes their fds.
Closers& Registry() {
  static Closers* c = new Closers();
  return *c;
}

// Caller holds mu.
size_t ReapLocked(Closers& c) {
  for (size_t i = 0; i < c.running.size();) {
    if (c.running[i].done->load(std::memory_order_acquire)) {
      c.running[i].thread.join();
      c.running[i] = std::move(c.running.back());
      c.running.pop_back();
    } else {
      i++;
    }
  }
  return c.running.size();
}
}  // namespace

void CloseLater(int fd) {
  if (fd < 0) return;
  Closers& c = Registry();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (ReapLocked(c) < kMaxClosers) {
      auto done = std::make_shared<std::atomic<bool>>(false);
      // The closer starts with every signal blocked (it inherits the mask):
      // process signals stay with Node's threads and nothing interrupts close().
      sigset_t all, old;
      sigfillset(&all);
      pthread_sigmask(SIG_SETMASK, &all, &old);
      bool started = false;
      try {
        std::thread t([fd, done] {
          close(fd);
          done->store(true, std::memory_order_release);
        });
        c.running.push_back(Closer{std::move(t), done});
        started = true;
      } catch (const std::system_error&) {
        // No thread to be had: close inline below.
      }
      pthread_sigmask(SIG_SETMASK, &old, nullptr);
      if (started) return;
    }
  }
  close(fd);
}

size_t ReapClosers() {
  Closers& c = Registry();
  std::lock_guard<std::mutex> lock(c.mu);
  return ReapLocked(c);
}

void JoinAllClosers() {
  Closers& c = Registry();
  std::vector<Closer> all;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    all.swap(c.running);
  }
  for (Closer& x : all) x.thread.join();
}

}  // namespace nodevmm
