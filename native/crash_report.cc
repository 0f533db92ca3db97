// A last word from a process that dies of a fault: on SIGSEGV, SIGBUS,
// SIGILL or SIGFPE, write which thread faulted, where (pc, fault address)
// and a native backtrace to stderr, then let the signal take its course
// (the previous handler, or the default action: exit 139, core dump if
// enabled). For crashes seen only in environments where no debugger or core
// file is at hand (the emulated arm64 host of the e2e-arm64 tier). When to
// install it is decided in TypeScript (lib/hv/native.ts, NODEVMM_CRASH_REPORT).
//
//   installCrashReport() -> true the first time, false after
#include <execinfo.h>
#include <napi.h>
#include <signal.h>
#include <sys/prctl.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>

namespace nodevmm {

namespace {

constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE};
constexpr int kSignalCount = sizeof(kSignals) / sizeof(kSignals[0]);
struct sigaction g_previous[kSignalCount];
std::atomic<bool> g_installed{false};
std::atomic<int> g_reporting{0};

// Async-signal-safe formatting: write(2) of fixed buffers only.
void Put(const char* s) {
  ssize_t r = write(2, s, std::strlen(s));
  (void)r;
}
void PutHex(uint64_t v) {
  char buf[19] = "0x";
  for (int i = 0; i < 16; i++) buf[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 0xf];
  buf[18] = 0;
  Put(buf);
}
void PutDec(long v) {
  char buf[24];
  int i = sizeof buf - 1;
  buf[i] = 0;
  bool neg = v < 0;
  unsigned long u = neg ? -static_cast<unsigned long>(v) : static_cast<unsigned long>(v);
  do {
    buf[--i] = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u && i > 1);
  if (neg) buf[--i] = '-';
  Put(buf + i);
}

uint64_t FaultPc(void* uc) {
  auto* u = static_cast<ucontext_t*>(uc);
#if defined(__x86_64__)
  return static_cast<uint64_t>(u->uc_mcontext.gregs[REG_RIP]);
#elif defined(__aarch64__)
  return u->uc_mcontext.pc;
#else
  (void)u;
  return 0;
#endif
}

void OnFault(int sig, siginfo_t* si, void* uc) {
  int index = 0;
  while (index < kSignalCount && kSignals[index] != sig) index++;
  // One report per process: a fault inside the report goes straight on.
  if (g_reporting.fetch_add(1) == 0) {
    char name[17] = {0};
    prctl(PR_GET_NAME, name, 0, 0, 0);
    Put("\nNODEVMM-CRASH signal ");
    PutDec(sig);
    Put(" code ");
    PutDec(si->si_code);
    Put(" addr ");
    PutHex(reinterpret_cast<uint64_t>(si->si_addr));
    Put(" pc ");
    PutHex(FaultPc(uc));
    Put(" thread ");
    PutDec(static_cast<long>(gettid()));
    Put(" \"");
    Put(name);
    Put("\"\n");
    void* frames[64];
    int n = backtrace(frames, 64);
    backtrace_symbols_fd(frames, n, 2);
    Put("NODEVMM-CRASH end\n");
  }
  // Hand the fault back: restore what was there before and return, so the
  // faulting instruction runs again under it (V8's trap handler, or the
  // default action that kills the process and dumps core).
  if (index < kSignalCount) sigaction(sig, &g_previous[index], nullptr);
  else signal(sig, SIG_DFL);
  // A signal sent by kill() rather than raised by an instruction would not
  // come back on its own.
  if (si->si_code <= 0) raise(sig);
}

Napi::Value InstallCrashReport(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (g_installed.exchange(true)) return Napi::Boolean::New(env, false);
  // backtrace() loads libgcc's unwinder on first use (malloc, dlopen): do
  // that now, not inside a signal handler.
  void* warm[2];
  backtrace(warm, 2);
  struct sigaction sa {};
  sa.sa_sigaction = OnFault;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  for (int i = 0; i < kSignalCount; i++) sigaction(kSignals[i], &sa, &g_previous[i]);
  return Napi::Boolean::New(env, true);
}

}  // namespace

void InitCrashReport(Napi::Env env, Napi::Object exports) {
  exports.Set("installCrashReport", Napi::Function::New(env, InstallCrashReport, "installCrashReport"));
}

}  // namespace nodevmm
