// Sleeping on a 32-bit word until another thread changes it, the primitive
// the exit mailbox's slow path needs: futex(2) on Linux, WaitOnAddress on
// Windows (8 and later, synchronization.lib). Hypervisor-neutral.
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
#else
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace nodevmm {

// Sleep while *word == expected (spurious wakeups allowed: callers loop).
inline void WaitWhileEquals(std::atomic<int32_t>* word, int32_t expected) {
#if defined(_WIN32)
  // SAFETY: word is a 4-byte aligned atomic int that outlives the wait.
  WaitOnAddress(reinterpret_cast<volatile VOID*>(word), &expected, sizeof expected, INFINITE);
#else
  // SAFETY: word is a 4-byte aligned atomic int inside a live VcpuShared.
  syscall(SYS_futex, reinterpret_cast<int32_t*>(word), FUTEX_WAIT, expected, nullptr, nullptr, 0);
#endif
}

// Wake every thread asleep in WaitWhileEquals on `word`.
inline void WakeAll(std::atomic<int32_t>* word) {
#if defined(_WIN32)
  WakeByAddressAll(reinterpret_cast<PVOID>(word));
#else
  syscall(SYS_futex, reinterpret_cast<int32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
#endif
}

}  // namespace nodevmm
