// One native thread per vCPU with Firecracker's state machine: Created ->
// Paused <-> Running -> Exited -> Joined, the exit mailbox and posted-write
// ring it shares with JS, and the stop protocol (exit_mailbox.h). It enters
// the guest only through a VcpuBackend (hypervisor.h) and reaches its VM only
// through a VmChannel (vm_channel.h), so it compiles for any backend.
#pragma once

#if !defined(_WIN32)
#include <pthread.h>
#endif

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "exit_mailbox.h"
#include "hypervisor.h"
#include "vm_channel.h"

namespace nodevmm {

enum class VcpuState { kCreated, kPaused, kRunning, kExited, kJoined };
enum VcpuRequest : int32_t { kRequestNone = 0, kRequestPause = 1, kRequestStop = 2 };

class VcpuThread final : public IoHandler {
 public:
  // `backend` must outlive this object (its owner declares it first).
  VcpuThread(VmChannel* channel, VcpuBackend* backend, uint32_t index);
  ~VcpuThread();

  bool Start(std::string* err);
  void Resume();
  void Pause();
  // Abort the mailbox (terminal), end the run loop, kick the thread out of the guest.
  void Stop();
  void Join();
  VcpuState state() const { return state_.load(); }
  uint32_t index() const { return index_; }
  VcpuShared* shared() { return shared_.get(); }
  std::shared_ptr<VcpuShared> shared_ref() { return shared_; }
  // IoHandler: one port/MMIO exit through routes, shadows, posted writes or JS.
  bool HandleIo(const DecodedExit& exit) override;

 private:
  void ThreadMain();
  bool DispatchToJs(uint32_t kind, bool is_write, uint32_t size, uint64_t address, uint8_t* data);
  bool PostWrite(uint32_t kind, uint32_t size, uint64_t address, uint64_t value);
  void Kick();

  VmChannel* channel_;
  VcpuBackend* backend_;
  uint32_t index_;
  std::shared_ptr<VcpuShared> shared_;
  std::thread thread_;
#if !defined(_WIN32)
  pthread_t tid_{};
#endif
  // Guards tid_/thread_alive_ so a kick never targets a finished thread.
  std::mutex kick_mu_;
  bool thread_alive_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<VcpuState> state_{VcpuState::kCreated};
  std::atomic<int32_t> request_{kRequestNone};
  bool resume_requested_ = false;
  bool started_ = false;
  // Iterations to spin for JS's answer before sleeping (vcpu_thread.cc); vCPU thread only.
  int spin_ = 4000;
};

#if !defined(_WIN32)
// The kick signal (KVM); its handler does nothing but interrupt the guest entry.
int KickSignal();
void InstallKickHandler();
#endif

}  // namespace nodevmm
