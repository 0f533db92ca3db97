/** `nodevmm/testing`: helpers for VM-based test suites. */
export { withVm, AGENT_CMDLINE, agentCmdline, type WithVmOptions, type TestContextLike } from './harness';
export { ensureGuestArtifacts, findGuestArtifacts, type GuestArtifacts } from './artifacts';
export { detectKvm } from './detect';
export { tinyPvhKernel } from './tiny-pvh';
export { findArm64Artifacts, arm64GuestModules, type Arm64Artifacts } from './arm64-kvm-host';
