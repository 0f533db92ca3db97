/**
 * The arm64 partition snapshot proof, run inside the emulated arm64 KVM host
 * by in-host.ts: the tiny two-vCPU guest of lib/testing/arm64-counting-guest.ts
 * is paused inside vCPU 0's PAUSE_AT-th feed read, its state (every
 * register, MP states, the GICv3) and RAM saved; then the original resumes,
 * and two fresh partitions restored from that state (RAM mapped
 * copy-on-write from the file) run at once, as clones. Each must report
 * what an uninterrupted run reports. Two negative controls show the test
 * sees what it claims to: a restore whose GIC state is a fresh VM's, and one
 * without the counter registers, must each report something else.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GIC_DIST_START, gicRedistributorRange, RAM_START } from '../../lib/arch/aarch64/layout';
import { KVM_REG_ARM_PTIMER_CNT, KVM_REG_ARM_TIMER_CNT } from '../../lib/hv/arm64-regs';
import type { Arm64PartitionState } from '../../lib/hv/arm64-state';
import { openHypervisor } from '../../lib/hv/hypervisor';
import type { Arm64Partition } from '../../lib/hv/partition';
import { checkArm64PartitionState, stateFromJson, stateToJson } from '../../lib/snapshot/index';
import { ARM64_COUNTING_DEVICE, ARM64_COUNTING_ENTRY, Arm64CountingDevice, loadArm64CountingGuest, type Arm64CountingReport } from '../../lib/testing/arm64-counting-guest';

const ROUNDS0 = 60;
const ROUNDS1 = 400;
const PAUSE_AT = 23;
const VCPUS = 2;
const RAM = 2 * 2 ** 20;
/**
 * How long the original waits, made but not started, before it runs. Its virtual counter runs from
 * the vCPU's creation, so every value the guest reads (and keeps in x21 to compare the next one
 * with) is at least this far from 0, where a fresh VM's counter starts: a restore that lost the
 * counters shows the guest time going back (the withoutCounters control) unless the restore itself
 * took longer than this. (A pause after the guest's last read did not do that: the read before the
 * snapshot stayed small, and a slow restore in a loaded host outgrew it, CI 2026-12-07.)
 */
const PAUSED_MS = 4000;
/** A run that has not reported in this long is stuck: fail with what it reported so far. */
const RUN_TIMEOUT_MS = 120_000;

function partition(): Arm64Partition {
  return openHypervisor().createArm64Partition({ vcpus: VCPUS, gicDistributor: GIC_DIST_START, gicRedistributor: gicRedistributorRange(VCPUS).start });
}

function layoutOf(p: Arm64Partition) {
  return { gicDistributor: GIC_DIST_START, gicRedistributor0: gicRedistributorRange(VCPUS).start, vcpu1Affinity: Number(p.mpidr(1) & 0xff_ffffn) };
}

function run(p: Arm64Partition, dev: Arm64CountingDevice, done: Promise<Arm64CountingReport>): Promise<Arm64CountingReport> {
  p.mmio.register(ARM64_COUNTING_DEVICE, 0x1000, dev);
  p.start();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no report in ${RUN_TIMEOUT_MS} ms; so far ${JSON.stringify(dev.report)}, reads ${dev.reads}`)), RUN_TIMEOUT_MS);
  });
  return Promise.race([done, late]).finally(() => clearTimeout(timer));
}

async function uninterrupted(): Promise<Arm64CountingReport> {
  const p = partition();
  try {
    p.addRam({ gpa: RAM_START, size: RAM });
    loadArm64CountingGuest(p.memory, ROUNDS0, ROUNDS1, layoutOf(p));
    p.setCoreRegs(0, ARM64_COUNTING_ENTRY);
    let resolve!: (r: Arm64CountingReport) => void;
    const done = new Promise<Arm64CountingReport>((r) => (resolve = r));
    return await run(p, new Arm64CountingDevice(resolve), done);
  } finally {
    p.destroy();
  }
}

interface Saved {
  state: Arm64PartitionState;
  ramFile: string;
  reads: [number, number];
  /** What the original reported after resuming from the pause. */
  original: Arm64CountingReport;
}

async function snapshotMidway(dir: string): Promise<Saved> {
  const p = partition();
  try {
    p.addRam({ gpa: RAM_START, size: RAM });
    loadArm64CountingGuest(p.memory, ROUNDS0, ROUNDS1, layoutOf(p));
    p.setCoreRegs(0, ARM64_COUNTING_ENTRY);
    let paused: Promise<void> | undefined;
    let reached!: () => void;
    const atPause = new Promise<void>((r) => (reached = r));
    let resolve!: (r: Arm64CountingReport) => void;
    const done = new Promise<Arm64CountingReport>((r) => (resolve = r));
    const dev = new Arm64CountingDevice(resolve, (feed, n) => {
      // Asked while vCPU 0 waits for this read's answer: it pauses with the load unfinished in KVM.
      if (feed === 0 && n === PAUSE_AT) {
        paused = p.pause();
        reached();
      }
    });
    await new Promise((r) => setTimeout(r, PAUSED_MS));
    const finished = run(p, dev, done);
    await atPause;
    await paused;
    // Through the file format's codec and shape check, as a snapshot on disk goes.
    const file = path.join(dir, 'hv.json');
    fs.writeFileSync(file, stateToJson(p.saveState()));
    const state = checkArm64PartitionState(stateFromJson(fs.readFileSync(file), file), file);
    const ramFile = path.join(dir, 'ram');
    const fd = fs.openSync(ramFile, 'w');
    try {
      p.writeRamTo([fd]);
    } finally {
      fs.closeSync(fd);
    }
    const reads: [number, number] = [...dev.reads];
    p.resume();
    return { state, ramFile, reads, original: await finished };
  } finally {
    p.destroy();
  }
}

async function restoreAndFinish(saved: Saved, state = saved.state): Promise<Arm64CountingReport> {
  const p = partition();
  try {
    const fd = fs.openSync(saved.ramFile, 'r');
    try {
      p.addRam({ gpa: RAM_START, size: RAM, privateFile: fd });
    } finally {
      fs.closeSync(fd);
    }
    p.restoreState(state);
    let resolve!: (r: Arm64CountingReport) => void;
    const done = new Promise<Arm64CountingReport>((r) => (resolve = r));
    const dev = new Arm64CountingDevice(resolve);
    dev.reads = [...saved.reads];
    return await run(p, dev, done);
  } finally {
    p.destroy();
  }
}

/** A fresh, never-run partition's GIC state: what a restore without the GIC would leave. */
function freshGic(): Arm64PartitionState['gic'] {
  const p = partition();
  try {
    return p.saveState().gic;
  } finally {
    p.destroy();
  }
}

export async function snapshotTiny(): Promise<Record<string, unknown>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arm64-snapshot-'));
  try {
    const expected = await uninterrupted();
    const saved = await snapshotMidway(dir);
    const ramBefore = fs.readFileSync(saved.ramFile);
    const [a, b] = await Promise.all([restoreAndFinish(saved), restoreAndFinish(saved)]);
    const v = saved.state.vcpus;
    const controls = {
      withoutGic: await restoreAndFinish(saved, { ...saved.state, gic: freshGic() }),
      withoutCounters: await restoreAndFinish(saved, { ...saved.state, vcpus: v.map((c) => ({ ...c, regs: c.regs.filter((r) => r.id !== KVM_REG_ARM_TIMER_CNT && r.id !== KVM_REG_ARM_PTIMER_CNT) })) }),
    };
    return {
      expected,
      original: saved.original,
      restored: a,
      clone: b,
      controls,
      atSnapshot: { reads: saved.reads, mpStates: v.map((c) => c.mpState), regs: v.map((c) => c.regs.length), vregBytes: v[0]!.regs.filter((r) => r.value instanceof Uint8Array).map((r) => (r.value as Uint8Array).length), nrIrqs: saved.state.gic.dist.nrIrqs },
      // The clones' writes went to their private copies, not into the snapshot's file.
      ramFileUnchanged: fs.readFileSync(saved.ramFile).equals(ramBefore),
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
