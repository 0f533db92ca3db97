/** `nodevmm/testing`: helpers for VM-based test suites. */
export { withVm, AGENT_CMDLINE, type WithVmOptions, type TestContextLike } from './harness';
export { ensureGuestArtifacts, findGuestArtifacts, type GuestArtifacts } from './artifacts';
export { detectKvm } from './detect';
export { tinyPvhKernel } from './tiny-pvh';
