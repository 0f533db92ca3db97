/**
 * Tier 1: a whole x86 machine's device state (UARTs, ACPI PM, RTC, virtio
 * disk, rng and console) saved from a machine whose guest ran and paused,
 * and taken by a second machine built from the same config before any of
 * its vCPUs ran, on this machine's /dev/kvm.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempDir } from '../temp-dir';
import { kvmSkipReason } from '../../lib/testing/kvm-test-helpers';
import { tinyPvhKernel } from '../../lib/testing/tiny-pvh';
import { resolveVmConfig } from '../../lib/vm/config';
import { buildX86Machine, type X86Machine } from '../../lib/vm/x86-machine';
import { SerialPort } from '../../lib/vm/serial-port';
import { NodevmmError } from '../../lib/errors';
import { settledProcessResources } from '../../lib/testing/kvm-test-helpers';
import { caseSeed, prng } from '../unit/fuzz/prng';
import { mutateJson, type Json } from '../unit/fuzz/json-mutations';

const skip = kvmSkipReason();
const kvm = skip ? test.skip : test;
// Counts the process's fds and threads: ava runs serial tests first, one at a time.
const kvmAlone = skip ? test.skip : test.serial;
if (skip) console.log(`# SKIP kvm tier: ${skip}`);

function machine(t: { teardown(f: () => void): void }, disk: string): { m: X86Machine; com1: SerialPort } {
  const cfg = resolveVmConfig({ kernel: 'tiny', boot: 'pvh', memory: '64M', serial: { com1: true, com2: true, com3: false, com4: false }, disks: [{ path: disk, readonly: true }], rng: true, virtioConsole: true });
  const com1 = new SerialPort('com1', 1 << 16);
  const m = buildX86Machine(cfg, { kernel: tinyPvhKernel('DEVICES-UP\n', { powerOff: false }) }, { serial: { com1 }, onPowerOff: () => {}, onReset: () => {} });
  t.teardown(() => m.dispose());
  return { m, com1 };
}

/** The saved state without the PM timer, which counts on while the test runs. */
function steady(s: Record<string, unknown>): unknown {
  const c = JSON.parse(JSON.stringify(s)) as { pm: { timer: number } };
  c.pm.timer = 0;
  return c;
}

kvm('a paused machine saves its device state as JSON, and a fresh machine from the same config takes it before its vCPUs run', async (t) => {
  const disk = path.join(tempDir(t, 'nodevmm-devstate-'), 'disk.img');
  fs.writeFileSync(disk, Buffer.alloc(1 << 20));
  const a = machine(t, disk);
  a.m.partition.start();
  await a.com1.expect(/DEVICES-UP/, { timeoutMs: 10_000 });
  t.throws(() => a.m.snapshotDevices(), { code: 'ERR_SNAPSHOT', message: /^a device snapshot needs a paused VM, but vcpu0 is running$/ });
  await a.m.partition.pause();
  await a.m.quiesceDevices(1000);
  const saved = a.m.snapshotDevices();
  const json = JSON.parse(JSON.stringify(saved)) as Record<string, unknown>;
  t.deepEqual(json, saved, 'plain JSON data: nothing lost in a round trip');
  t.deepEqual(Object.keys(json), ['arch', 'serial', 'pm', 'rtc', 'virtio']);
  t.deepEqual(Object.keys(json.serial as object), ['com1', 'com2']);
  t.deepEqual(
    (json.virtio as Array<{ name: string }>).map((v) => v.name),
    ['vda', 'rng', 'console'],
  );

  const b = machine(t, disk);
  b.m.restoreDevices(json);
  t.deepEqual(steady(b.m.snapshotDevices()), steady(saved), 'the second machine saves what it took');
  t.throws(() => machine(t, disk).m.restoreDevices({ ...json, arch: 'aarch64' }), { code: 'ERR_DEVICE_STATE', message: 'snapshot device state arch: expected one of x86_64, got "aarch64"' });
  const { com2: _, ...oneUart } = json.serial as Record<string, unknown>;
  t.throws(() => machine(t, disk).m.restoreDevices({ ...json, serial: oneUart }), { message: 'snapshot device state serial.com2: is missing: this machine has the port, the snapshot does not' });
  t.throws(() => machine(t, disk).m.restoreDevices({ ...json, serial: { ...(json.serial as object), com3: {} } }), { message: 'snapshot device state serial.com3: the snapshot has this port, this machine does not' });
  t.throws(() => machine(t, disk).m.restoreDevices({ ...json, virtio: 'x' }), { message: 'snapshot device state virtio: expected an array of slots, got "x"' });
  // The restored machine runs: its vCPUs start from the fresh boot state here (the core restores vCPU state), and the UART still works.
  b.m.partition.start();
  await b.com1.expect(/DEVICES-UP/, { timeoutMs: 10_000 });
  t.throws(() => b.m.restoreDevices(json), { code: 'ERR_SNAPSHOT', message: 'a device restore needs a paused VM, but vcpu0 is running' });
});

kvmAlone('mutated whole-machine device states are taken or refused with one sentence by fresh machines, which dispose without a leak', async (t) => {
  const disk = path.join(tempDir(t, 'nodevmm-devstate-'), 'disk.img');
  fs.writeFileSync(disk, Buffer.alloc(1 << 20));
  const a = machine(t, disk);
  a.m.partition.start();
  await a.com1.expect(/DEVICES-UP/, { timeoutMs: 10_000 });
  await a.m.partition.pause();
  const valid = JSON.parse(JSON.stringify(a.m.snapshotDevices())) as Json;
  const before = await settledProcessResources();
  let refused = 0;
  for (let i = 0; i < 60; i++) {
    const seed = caseSeed(0x48d, i);
    const state = mutateJson(valid, prng(seed));
    const cfg = resolveVmConfig({ kernel: 'tiny', boot: 'pvh', memory: '64M', serial: { com1: true, com2: true, com3: false, com4: false }, disks: [{ path: disk, readonly: true }], rng: true, virtioConsole: true });
    const m = buildX86Machine(cfg, { kernel: tinyPvhKernel('X\n', { powerOff: false }) }, { serial: {}, onPowerOff: () => {}, onReset: () => {} });
    try {
      m.restoreDevices(state as Record<string, unknown>);
    } catch (e) {
      refused++;
      if (!(e instanceof NodevmmError) || e.code !== 'ERR_DEVICE_STATE' || !e.message.startsWith('snapshot device state ') || e.message.includes('\n') || e.message.length > 400) {
        t.fail(`seed ${seed}: ${(e as Error).name} ${(e as Error).message}`);
      }
    } finally {
      m.dispose();
    }
  }
  t.true(refused > 20, `${refused} of 60 refused`);
  // Image fds close once the disks are idle, on a later turn.
  await new Promise((r) => setTimeout(r, 100));
  const after = await settledProcessResources();
  t.is(after.fds, before.fds, 'no fd left behind');
  t.is(after.threads, before.threads, 'no thread left behind');
});
