/**
 * One config and one Vm for both architectures: arm64 resolves with the same
 * defaults as x86 (memory, vCPUs), its own console and serial ports, and the
 * x86-only options refused with one sentence; a config for the other
 * architecture is refused; PSCI system events stop the Vm as x86's do.
 */
import test from 'ava';
import { parseRunArgs } from '../../../lib/cli/args';
import { ConfigError } from '../../../lib/errors';
import { agentPortInCmdline, ARCH_PROFILES, DEFAULTS, guestTty, hostArch, resolveVmConfig } from '../../../lib/vm/config';
import type { VcpuStop } from '../../../lib/hv/partition';
import { Vm } from '../../../lib/vm/vm';
import { agentCmdline } from '../../../lib/testing/harness';

/** The issues a ConfigError lists, as "path: message"; [] when `f` does not throw. */
function issues(f: () => unknown): string[] {
  try {
    f();
  } catch (e) {
    if (e instanceof ConfigError) return e.issues.map((i) => `${i.path}: ${i.message}`);
    throw e;
  }
  return [];
}

test('the architecture defaults to the host, and x86 and arm64 share the defaults', (t) => {
  t.is(resolveVmConfig({ kernel: 'k' }).arch, hostArch());
  const x86 = resolveVmConfig({ kernel: 'k' }, 'x86_64');
  const arm = resolveVmConfig({ kernel: 'k' }, 'aarch64');
  t.is(arm.memory, DEFAULTS.memory);
  t.is(arm.memory, x86.memory);
  t.is(arm.vcpus, x86.vcpus);
  t.is(arm.onReset, x86.onReset);
  t.is(arm.cmdline, 'panic=-1 console=ttyAMA0');
  t.is(x86.cmdline, 'panic=-1 console=ttyS0');
  t.deepEqual(arm.serial, { com1: true, com2: true, com3: false, com4: false });
  t.deepEqual(x86.serial, { com1: true, com2: true, com3: true, com4: true });
});

test('a config for the other architecture is refused with one sentence', (t) => {
  t.deepEqual(issues(() => resolveVmConfig({ kernel: 'k', arch: 'aarch64' }, 'x86_64')), ["arch: \"aarch64\" cannot run on this x86_64 host: KVM runs guests of the host's own architecture only"]);
  t.deepEqual(issues(() => resolveVmConfig({ kernel: 'k', arch: 'x86_64' }, 'aarch64')), ["arch: \"x86_64\" cannot run on this aarch64 host: KVM runs guests of the host's own architecture only"]);
  t.deepEqual(issues(() => resolveVmConfig({ kernel: 'k', arch: 'riscv64' as never }, 'x86_64')), ['arch: "riscv64" must be x86_64 or aarch64']);
  t.is(resolveVmConfig({ kernel: 'k', arch: 'aarch64' }, 'aarch64').arch, 'aarch64');
});

test('arm64 refuses what its machine does not have: com3/com4, IGVM, x86 boot protocols; it takes virtio-fs shares', (t) => {
  t.deepEqual(issues(() => resolveVmConfig({ kernel: 'k', serial: { com3: true } }, 'aarch64')), ['serial.com3: aarch64 machines have no com3: their serial ports are com1, com2']);
  t.deepEqual(issues(() => resolveVmConfig({ igvm: 'x.igvm' }, 'aarch64')), ['igvm: IGVM images boot on x86_64 only; boot an aarch64 guest from a kernel Image (kernel)']);
  t.deepEqual(issues(() => resolveVmConfig({ kernel: 'k', boot: 'pvh' }, 'aarch64')), ['boot: "pvh" is an x86_64 boot protocol; arm64 kernels boot one way (leave boot at auto)']);
  t.deepEqual(resolveVmConfig({ kernel: 'k', shares: [{ path: '/srv', tag: 'data' }] }, 'aarch64').shares, [{ path: '/srv', tag: 'data', readOnly: false }]);
  t.is(resolveVmConfig({ kernel: 'k', shares: [] }, 'aarch64').shares.length, 0);
  // Turning a port off is fine, and so is saying com3 is absent.
  t.deepEqual(resolveVmConfig({ kernel: 'k', serial: { com2: false, com3: false } }, 'aarch64').serial, { com1: true, com2: false, com3: false, com4: false });
});

test('arm64 takes virtio-net and vsock like x86', (t) => {
  const c = resolveVmConfig({ kernel: 'k', net: [{ tap: 'tap0' }], vsock: { cid: 3, agentPort: 1024 }, disks: [{ path: 'd' }], rng: true, virtioConsole: true }, 'aarch64');
  t.is(c.net.length, 1);
  t.deepEqual(c.vsock, { cid: 3, agentPort: 1024 });
});

test('nodevmm run leaves the serial ports it was not told about to the architecture', (t) => {
  const a = parseRunArgs(['--kernel', 'k', '--com2', 'none']);
  t.deepEqual(resolveVmConfig(a.config, 'aarch64').serial, { com1: true, com2: false, com3: false, com4: false });
  t.deepEqual(resolveVmConfig(a.config, 'x86_64').serial, { com1: true, com2: false, com3: true, com4: true });
  t.deepEqual(issues(() => resolveVmConfig(parseRunArgs(['--kernel', 'k', '--com3', 'file:/tmp/x']).config, 'aarch64')), ['serial.com3: aarch64 machines have no com3: their serial ports are com1, com2']);
});

test('the guest names of the serial ports follow the architecture', (t) => {
  t.is(guestTty('x86_64', 'com2'), 'ttyS1');
  t.is(guestTty('aarch64', 'com1'), 'ttyAMA0');
  t.is(guestTty('aarch64', 'com2'), 'ttyAMA1');
  t.throws(() => guestTty('aarch64', 'com3'), { instanceOf: ConfigError });
  t.is(ARCH_PROFILES.aarch64.serialPorts.length, 2);
  // The test init's exec agent goes where the guest calls COM2.
  t.is(agentCmdline('x86_64'), 'nodevmm.agent=ttyS1');
  t.is(agentCmdline('aarch64'), 'nodevmm.agent=ttyAMA1');
  t.is(agentCmdline('aarch64', 'hvc0'), 'nodevmm.agent=hvc0');
});

test("exec's default port is the one the command line gives the agent, the virtio console only when configured", (t) => {
  t.is(agentPortInCmdline('x86_64', 'panic=-1 nodevmm.agent=ttyS1 nodevmm.shell=1', false), 'com2');
  t.is(agentPortInCmdline('x86_64', 'nodevmm.agent=ttyS3', false), 'com4');
  t.is(agentPortInCmdline('aarch64', 'quiet nodevmm.agent=ttyAMA1', false), 'com2');
  t.is(agentPortInCmdline('x86_64', 'nodevmm.agent=hvc0', true), 'hvc0');
  // Not there: exec falls back to com2 (and says no agent answered there).
  t.is(agentPortInCmdline('x86_64', 'nodevmm.agent=hvc0', false), undefined);
  t.is(agentPortInCmdline('aarch64', 'nodevmm.agent=ttyAMA3', false), undefined);
  t.is(agentPortInCmdline('x86_64', 'xnodevmm.agent=ttyS0 console=ttyS0', false), undefined);
  t.is(agentPortInCmdline('x86_64', 'panic=-1', true), undefined);
});

/** A Vm that never started (no KVM needed): its vCPU-stop mapping is the one a running arm64 guest goes through. */
function stopOf(stop: Omit<VcpuStop, 'vcpu' | 'message'>): Promise<string> {
  const vm = new Vm(resolveVmConfig({ kernel: 'k' }, 'aarch64'), {});
  (vm as unknown as { onVcpuStop(s: VcpuStop): void }).onVcpuStop({ vcpu: 0, message: 'm', ...stop });
  return vm.waitForStop().then((r) => r.reason);
}

test('PSCI SYSTEM_OFF stops the vm as poweroff, SYSTEM_RESET as reset (onReset stop), a crash as internal-error', async (t) => {
  t.is(await stopOf({ kind: 'system-event', systemEvent: 'shutdown' }), 'poweroff');
  t.is(await stopOf({ kind: 'system-event', systemEvent: 'reset' }), 'reset');
  t.is(await stopOf({ kind: 'system-event', systemEvent: 'crash' }), 'internal-error');
  t.is(await stopOf({ kind: 'host-error' }), 'host-error');
});
