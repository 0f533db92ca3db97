// The Windows Hypervisor Platform entry points, loaded at run time from
// WinHvPlatform.dll and WinHvEmulation.dll (LoadLibrary/GetProcAddress).
// Both DLLs exist only once the optional feature "Windows Hypervisor
// Platform" (HypervisorPlatform) is enabled, so an addon importing them
// statically would fail to load at all; loaded here, the addon loads
// everywhere and says in one sentence what is missing. Windows only.
#pragma once

#if defined(_WIN32)

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
// Lower case: MinGW's names (Linux file systems are case sensitive); the
// Windows SDK's WinHvPlatform.h is the same file on a case-insensitive disk.
#include <winhvemulation.h>
#include <winhvplatform.h>

#include <string>

namespace nodevmm {

struct WhpApi {
  // False with `error` set (one sentence) when WHP cannot be used here.
  bool ok = false;
  std::string error;
#define NODEVMM_WHP_FN(name) decltype(&::name) name = nullptr;
  NODEVMM_WHP_FN(WHvGetCapability)
  NODEVMM_WHP_FN(WHvCreatePartition)
  NODEVMM_WHP_FN(WHvSetupPartition)
  NODEVMM_WHP_FN(WHvDeletePartition)
  NODEVMM_WHP_FN(WHvSetPartitionProperty)
  NODEVMM_WHP_FN(WHvMapGpaRange)
  NODEVMM_WHP_FN(WHvUnmapGpaRange)
  NODEVMM_WHP_FN(WHvTranslateGva)
  NODEVMM_WHP_FN(WHvCreateVirtualProcessor)
  NODEVMM_WHP_FN(WHvDeleteVirtualProcessor)
  NODEVMM_WHP_FN(WHvRunVirtualProcessor)
  NODEVMM_WHP_FN(WHvCancelRunVirtualProcessor)
  NODEVMM_WHP_FN(WHvGetVirtualProcessorRegisters)
  NODEVMM_WHP_FN(WHvSetVirtualProcessorRegisters)
  NODEVMM_WHP_FN(WHvGetVirtualProcessorInterruptControllerState2)
  NODEVMM_WHP_FN(WHvRequestInterrupt)
  NODEVMM_WHP_FN(WHvEmulatorCreateEmulator)
  NODEVMM_WHP_FN(WHvEmulatorDestroyEmulator)
  NODEVMM_WHP_FN(WHvEmulatorTryIoEmulation)
  NODEVMM_WHP_FN(WHvEmulatorTryMmioEmulation)
#undef NODEVMM_WHP_FN
};

// Loaded once per process (thread-safe); never throws.
const WhpApi& Whp();

// "WHvRunVirtualProcessor failed: HRESULT 0x80370102".
std::string HresultMessage(const char* call, HRESULT hr);

}  // namespace nodevmm

#endif  // _WIN32
