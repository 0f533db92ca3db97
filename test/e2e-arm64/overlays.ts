/**
 * Disks many VMs share, for arm64 guests, run inside the emulated arm64 KVM
 * host by in-host.ts: two VMs run at once from one read-only (0444) raw base
 * image, each through a temporary overlay (`overlay: 'temp'`). Both read the
 * base's pattern, then each writes its own mark to the same sector and 4 MiB
 * of random data, and only then each reads both back with O_DIRECT: each
 * sees its own mark, not the other's, and its data intact. While they run
 * this process holds one unlinked overlay per VM with the writes in it and
 * the base is unchanged; after both powered off no overlay is left open,
 * none was left in the overlay directory, and the base is byte-identical.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createVm, type Vm } from '../../lib/index';
import { agentCmdline } from '../../lib/testing/index';

const BASE_PATTERN = 'arm64-base-pattern';
const MARK_SECTOR = 2048;
/** 4 MiB of guest data from this 64 KiB block on. */
const DATA_BLOCK = 64;
const EXEC = { timeoutMs: 120_000, port: 'com2' as const };

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

async function sh(vm: Vm, command: string): Promise<string> {
  const r = await vm.exec(command, EXEC);
  if (r.exitCode !== 0) throw new Error(`guest command ${JSON.stringify(command)} exited ${r.exitCode}: ${r.stdout}`);
  return r.stdout.trim();
}

/** This process's open files that are temporary overlays in `dir` (unlinked at creation), with their allocated bytes. */
function openOverlays(dir: string): number[] {
  const out: number[] = [];
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const target = fs.readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(`${dir}/nodevmm-overlay-`)) out.push(fs.statSync(`/proc/self/fd/${fd}`).blocks * 512);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

export async function overlays(kernel: string, initrd: Uint8Array, step: (what: string) => void, tee: (vm: Vm) => void): Promise<Record<string, unknown>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arm64-overlays-'));
  const overlayDir = path.join(dir, 'overlays');
  fs.mkdirSync(overlayDir);
  const savedOverlayDir = process.env.NODEVMM_OVERLAY_DIR;
  process.env.NODEVMM_OVERLAY_DIR = overlayDir;
  const vms: Vm[] = [];
  try {
    const base = path.join(dir, 'base.img');
    const image = Buffer.alloc(16 << 20);
    image.write(BASE_PATTERN, 0, 'latin1');
    fs.writeFileSync(base, image);
    // An overlay never opens its base for writing: a base this user may not write works.
    fs.chmodSync(base, 0o444);
    const before = sha256(base);
    const stayUp = Buffer.from('while :; do sleep 3600; done').toString('base64');
    for (let i = 0; i < 2; i++) {
      const vm = await createVm({ kernel, initrd, memory: '256M', cmdline: `quiet ${agentCmdline('aarch64')} nodevmm.cmd=${stayUp}`, disks: [{ path: base, overlay: 'temp' }] });
      vms.push(vm);
      tee(vm);
    }
    // Both boot at once.
    await Promise.all(vms.map(async (vm) => {
      await vm.start();
      await vm.expect(/GUEST-INIT-OK/, { timeoutMs: 120_000 });
    }));
    step('overlays: both booted');
    const waitVda = 'i=0; while [ ! -e /dev/vda ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; [ -e /dev/vda ]';
    const baseRead = await Promise.all(vms.map((vm) => sh(vm, `${waitVda} && dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | head -c ${BASE_PATTERN.length}`)));
    // Every write lands before any read-back: each VM reads its sector after the other wrote its own there.
    const sums = await Promise.all(
      vms.map((vm, i) =>
        sh(vm, [
          `printf 'vm-${i}-mark' | dd of=/dev/vda bs=512 seek=${MARK_SECTOR} count=1 conv=sync oflag=direct 2>/dev/null`,
          `dd if=/dev/urandom of=/dev/vda bs=64k seek=${DATA_BLOCK} count=64 oflag=direct 2>/dev/null`,
          `dd if=/dev/vda bs=64k skip=${DATA_BLOCK} count=64 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1`,
        ].join(' && ')),
      ),
    );
    const marks = await Promise.all(vms.map((vm) => sh(vm, `dd if=/dev/vda bs=512 skip=${MARK_SECTOR} count=1 iflag=direct 2>/dev/null | tr -d '\\0'`)));
    const dataOk = await Promise.all(
      vms.map(async (vm, i) => (await sh(vm, `echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=64k skip=${DATA_BLOCK} count=64 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1`)) === sums[i]),
    );
    const whileRunning = { overlays: openOverlays(overlayDir), baseUnchanged: sha256(base) === before, overlayDirEntries: fs.readdirSync(overlayDir).length };
    step('overlays: written and read back');
    const stops = await Promise.all(
      vms.map((vm) => {
        vm.serial(2).write('sync; poweroff -f\n');
        return vm.waitForStop();
      }),
    );
    // The overlays are closed once the disks' last requests finished: a bounded wait.
    let left = openOverlays(overlayDir).length;
    for (let i = 0; i < 50 && left; i++) {
      await new Promise((r) => setTimeout(r, 100));
      left = openOverlays(overlayDir).length;
    }
    return {
      baseRead,
      marks,
      dataOk,
      whileRunning,
      stops: stops.map((s) => s.reason),
      overlaysLeft: left,
      overlayDirEntries: fs.readdirSync(overlayDir).length,
      baseUnchanged: sha256(base) === before,
      baseMarkSector: fs.readFileSync(base).subarray(MARK_SECTOR * 512, MARK_SECTOR * 512 + 16).toString('hex'),
    };
  } finally {
    await Promise.all(vms.map((vm) => vm.kill()));
    if (savedOverlayDir === undefined) delete process.env.NODEVMM_OVERLAY_DIR;
    else process.env.NODEVMM_OVERLAY_DIR = savedOverlayDir;
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
