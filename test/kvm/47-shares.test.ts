/**
 * Tier 1: whole VMs with virtio-fs shares on this machine's /dev/kvm (the
 * tiny PVH guest never probes the device, so this is the VM's handling of
 * its virtiofsd, not the data path: see test/unit/vm/virtiofs-ring.test.ts
 * and test/e2e/virtio-fs.test.ts for that). A daemon that dies stops the VM
 * with host-error; a stop takes every daemon down; a share that cannot start
 * fails start() with one sentence and leaves nothing behind.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createVm } from '../../lib/vm/vm';
import { kvmSkipReason } from '../../lib/testing/kvm-test-helpers';
import { tinyPvhKernel } from '../../lib/testing/tiny-pvh';
import { findVirtiofsd } from '../../lib/vm/virtiofs';
import { hostMappingAt } from '../../lib/testing/host-mapping';

const skip = kvmSkipReason() ?? (!findVirtiofsd() ? 'virtiofsd is not installed' : spawnSync('unshare', ['--mount', '--pid', '--fork', 'true']).status !== 0 ? 'no namespaces for virtiofsd' : undefined);
const kvm = skip ? test.skip : test.serial;
if (skip) console.log(`# SKIP shares: ${skip}`);

const kernel = tinyPvhKernel('SHARES\n', { powerOff: false });

function dirs(t: { teardown(f: () => void): void }, n: number): string[] {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-kvm-shares-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  return Array.from({ length: n }, (_, i) => {
    const d = path.join(root, `d${i}`);
    fs.mkdirSync(d);
    return d;
  });
}

/** Pids of processes whose command line names `dir` (virtiofsd, its launcher, its sandbox child). */
function daemonsOf(dir: string): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      if (/^\d+ \(.*\) Z/.test(stat)) continue;
      if (fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(dir)) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

async function until(f: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (f()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return f();
}

kvm('a VM with two shares runs a virtiofsd per share and stops every one with the VM', async (t) => {
  const [a, b] = dirs(t, 2);
  const vm = await createVm({ kernel, boot: 'pvh', memory: '64M', shares: [{ path: a!, tag: 'a' }, { path: b!, tag: 'b', readOnly: true }] });
  await vm.start();
  await vm.expect('SHARES');
  t.true(daemonsOf(a!).length > 0 && daemonsOf(b!).length > 0, 'one daemon per share');
  // virtiofsd maps guest RAM from its fds: with shares the RAM is a memfd mapped shared.
  for (const r of vm.partition.ramMappings()) {
    t.true(r.fd >= 0);
    t.regex(fs.readlinkSync(`/proc/self/fd/${r.fd}`), /^\/memfd:ram-low/);
    t.is(hostMappingAt(r.hostAddress)?.perms, 'rw-s');
  }
  await vm.kill();
  t.true(await until(() => daemonsOf(a!).length + daemonsOf(b!).length === 0, 5000), `left: ${[...daemonsOf(a!), ...daemonsOf(b!)].join(', ')}`);
});

kvm('a virtiofsd that dies stops the VM with host-error naming the share and how the daemon died', async (t) => {
  const [a] = dirs(t, 1);
  const vm = await createVm({ kernel, boot: 'pvh', memory: '64M', shares: [{ path: a!, tag: 'work' }] });
  await vm.start();
  await vm.expect('SHARES');
  // The oldest process naming the directory is the one nodevmm started (the others are its children).
  const pid = Math.min(...daemonsOf(a!));
  process.kill(pid, 'SIGKILL');
  const stop = await vm.waitForStop();
  t.is(stop.reason, 'host-error');
  t.regex(stop.message, /^virtio-fs share "work" failed: virtiofsd \(pid \d+\) was killed by SIGKILL/);
  t.true(await until(() => daemonsOf(a!).length === 0, 5000));
});

kvm('a share whose daemon cannot start fails start() with one sentence and leaves no daemon of the other shares', async (t) => {
  const [a, b] = dirs(t, 2);
  const vm = await createVm({ kernel, boot: 'pvh', memory: '64M', shares: [{ path: a!, tag: 'ok' }, { path: b!, tag: 'gone' }] });
  // The directory vanishes between createVm and start: the second share cannot start.
  fs.rmdirSync(b!);
  await t.throwsAsync(vm.start(), { code: 'ERR_SHARE', message: `share "gone" (${b}): the directory does not exist` });
  t.is(vm.state, 'stopped');
  t.is((await vm.waitForStop()).reason, 'host-error');
  t.true(await until(() => daemonsOf(a!).length === 0, 5000), 'the first share was stopped again');
});
