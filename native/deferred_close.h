// Closing the last fd of a KVM VM destroys the VM, and KVM waits there for
// RCU/SRCU grace periods and its PIT worker (~10 ms on KVM-PVM,
// docs/benchmarks.md). CloseLater() hands such an fd to a short-lived
// thread, so the JS thread does not sleep through it; the fd is closed
// within the kernel's time for that close, never later.
#pragma once

#include <cstddef>

namespace nodevmm {

// Closes `fd` on a closer thread; inline when kMaxClosers are busy (which
// bounds the fds in flight and slows a caller that outruns the kernel) or
// no thread can be started.
void CloseLater(int fd);
// Joins the closers that are done; returns how many are still closing.
size_t ReapClosers();
// Waits for every closer (environment teardown).
void JoinAllClosers();

}  // namespace nodevmm
