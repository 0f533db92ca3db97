// Run-time loading of WinHvPlatform.dll and WinHvEmulation.dll (whp_api.h).
#if defined(_WIN32)

#include "whp_api.h"

#include <cstdio>

namespace nodevmm {

namespace {

// The sentence a user without the optional feature sees (docs/windows.md).
constexpr const char* kNotEnabled =
    "Windows Hypervisor Platform is not available: enable the optional feature HypervisorPlatform";

// From System32 only: a DLL of the same name beside node.exe or in the
// current directory must never be picked up instead.
HMODULE LoadSystemDll(const wchar_t* name) { return LoadLibraryExW(name, nullptr, LOAD_LIBRARY_SEARCH_SYSTEM32); }

template <typename Fn>
bool Resolve(HMODULE dll, const char* name, Fn* out, std::string* missing) {
  FARPROC p = GetProcAddress(dll, name);
  if (!p) {
    if (missing->empty()) *missing = name;
    return false;
  }
  // SAFETY: `name` is the documented export whose prototype Fn was declared from.
  *out = reinterpret_cast<Fn>(reinterpret_cast<void*>(p));
  return true;
}

WhpApi Load() {
  WhpApi api;
  HMODULE platform = LoadSystemDll(L"WinHvPlatform.dll");
  HMODULE emulation = platform ? LoadSystemDll(L"WinHvEmulation.dll") : nullptr;
  if (!platform || !emulation) {
    api.error = kNotEnabled;
    return api;
  }
  std::string missing;
  bool all = true;
#define P(name) all &= Resolve(platform, #name, &api.name, &missing);
#define E(name) all &= Resolve(emulation, #name, &api.name, &missing);
  P(WHvGetCapability)
  P(WHvCreatePartition)
  P(WHvSetupPartition)
  P(WHvDeletePartition)
  P(WHvSetPartitionProperty)
  P(WHvMapGpaRange)
  P(WHvUnmapGpaRange)
  P(WHvTranslateGva)
  P(WHvCreateVirtualProcessor)
  P(WHvDeleteVirtualProcessor)
  P(WHvRunVirtualProcessor)
  P(WHvCancelRunVirtualProcessor)
  P(WHvGetVirtualProcessorRegisters)
  P(WHvSetVirtualProcessorRegisters)
  P(WHvGetVirtualProcessorInterruptControllerState2)
  P(WHvRequestInterrupt)
  E(WHvEmulatorCreateEmulator)
  E(WHvEmulatorDestroyEmulator)
  E(WHvEmulatorTryIoEmulation)
  E(WHvEmulatorTryMmioEmulation)
#undef P
#undef E
  if (!all) {
    api.error = "Windows Hypervisor Platform is too old: its DLLs lack " + missing + " (Windows 10 2004 or later is needed)";
    return api;
  }
  WHV_CAPABILITY cap;
  ZeroMemory(&cap, sizeof cap);
  UINT32 written = 0;
  HRESULT hr = api.WHvGetCapability(WHvCapabilityCodeHypervisorPresent, &cap, sizeof cap, &written);
  if (FAILED(hr) || !cap.HypervisorPresent) {
    api.error = "Windows Hypervisor Platform is installed but no hypervisor is running: enable virtualization in the firmware and the optional feature HypervisorPlatform, then reboot";
    return api;
  }
  api.ok = true;
  return api;
}

}  // namespace

const WhpApi& Whp() {
  static const WhpApi api = Load();
  return api;
}

std::string HresultMessage(const char* call, HRESULT hr) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%08lx", static_cast<unsigned long>(hr));
  return std::string(call) + " failed: HRESULT " + buf;
}

}  // namespace nodevmm

#endif  // _WIN32
