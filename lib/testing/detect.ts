/**
 * Tells which kind of /dev/kvm this machine has: none, KVM-PVM (a software
 * hypervisor that runs small hand-made guests but not unmodified Linux), or a
 * real hardware-backed KVM (kvm_intel or kvm_amd). The test runner uses it to
 * pick between running the end-to-end tier here or in the emulated KVM host.
 * It reads /dev and /sys/module only; it does not open or probe /dev/kvm.
 */
import * as fs from 'node:fs';

export type KvmKind = 'pvm' | 'real' | 'none';

export interface KvmDetection {
  present: boolean;
  kind: KvmKind;
  reason: string;
}

const REAL_KVM_MODULES = ['kvm_intel', 'kvm_amd'];

export function detectKvm(root = '/'): KvmDetection {
  const at = (p: string) => (root === '/' ? p : root.replace(/\/$/, '') + p);
  let isCharDevice = false;
  try {
    isCharDevice = fs.statSync(at('/dev/kvm')).isCharacterDevice();
  } catch {
    return { present: false, kind: 'none', reason: '/dev/kvm does not exist' };
  }
  if (!isCharDevice) return { present: false, kind: 'none', reason: '/dev/kvm is not a character device' };
  try {
    fs.accessSync(at('/dev/kvm'), fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return { present: false, kind: 'none', reason: '/dev/kvm exists but is not readable and writable by this user' };
  }
  if (fs.existsSync(at('/sys/module/kvm_pvm'))) {
    return { present: true, kind: 'pvm', reason: '/dev/kvm is KVM-PVM (/sys/module/kvm_pvm), which cannot run unmodified Linux guests' };
  }
  const real = REAL_KVM_MODULES.find((m) => fs.existsSync(at(`/sys/module/${m}`)));
  if (real) return { present: true, kind: 'real', reason: `/dev/kvm is backed by ${real}` };
  // Built-in kvm_intel/kvm_amd still show up in /sys/module when they have parameters;
  // without either, do not promise that unmodified Linux will run.
  return { present: true, kind: 'pvm', reason: '/dev/kvm exists but neither kvm_intel nor kvm_amd is loaded, so treat it as unable to run Linux' };
}
