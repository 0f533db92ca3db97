/**
 * A tiny arm64 guest (a few dozen A64 instructions, no kernel) for snapshot
 * tests: state a restore must bring back in every part of the vCPU and GIC.
 * vCPU 0 turns on FP/SIMD, starts vCPU 1 with PSCI CPU_ON, programs the
 * GICv3 (an SPI's enable, priority and pending bits in the distributor, a
 * PPI's priority in its redistributor, ICC_PMR_EL1 in its CPU interface),
 * then for `rounds` rounds reads a value from the feed device (an exit to
 * JS) and mixes it into a general register, an FP register and TPIDR_EL1,
 * checking each round that the virtual counter did not go backwards. vCPU 1
 * mixes its own feed into a register and turns itself off (PSCI CPU_OFF).
 * At the end each reports to the device: the mixes, and the GIC state read
 * back. Interrupted anywhere and continued from a snapshot, it must report
 * what an uninterrupted run reports.
 */
import type { IoDevice } from '../devices/types';
import { RAM_START } from '../arch/aarch64/layout';

/** The feed and report device (MMIO, in the gap below the GIC, outside every device the arm64 machine places). */
export const ARM64_COUNTING_DEVICE = 0xeffe_c000;
/** Second vCPU's entry point. */
const ENTRY1 = RAM_START + 0x1000;

/** Report offsets (32-bit stores) and what they carry. */
export const ARM64_COUNTING_REPORT = {
  mix0: 0x10,
  fp0: 0x18,
  tpidr0: 0x20,
  isenabler1: 0x28,
  spiPriority: 0x2c,
  ispendr1: 0x30,
  ppiPriority: 0x34,
  pmr: 0x38,
  counterWentBack: 0x40,
  done0: 0x48,
  mix1: 0x50,
  done1: 0x54,
} as const;
export type Arm64CountingReport = Partial<Record<keyof typeof ARM64_COUNTING_REPORT, number>>;

// A64 encodings (little-endian words).
const movz = (rd: number, imm: number, shift = 0) => 0xd2800000 | ((shift / 16) << 21) | ((imm & 0xffff) << 5) | rd;
const movk = (rd: number, imm: number, shift: number) => 0xf2800000 | ((shift / 16) << 21) | ((imm & 0xffff) << 5) | rd;
const mov32 = (rd: number, v: number) => [movz(rd, v & 0xffff), movk(rd, v >>> 16, 16)];
const sysreg = (op0: number, op1: number, crn: number, crm: number, op2: number) => ((op0 - 2) << 19) | (op1 << 16) | (crn << 12) | (crm << 8) | (op2 << 5);
const mrs = (rt: number, r: number) => 0xd5300000 | r | rt;
const msr = (r: number, rt: number) => 0xd5100000 | r | rt;
const CPACR_EL1 = sysreg(3, 0, 1, 0, 2);
const TPIDR_EL1 = sysreg(3, 0, 13, 0, 4);
const ICC_PMR_EL1 = sysreg(3, 0, 4, 6, 0);
const CNTVCT_EL0 = sysreg(3, 3, 14, 0, 2);
const ISB = 0xd5033fdf;
const HVC0 = 0xd4000002;
const WFI = 0xd503207f;
const B_BACK1 = 0x17ffffff; // b .-4
const ldrW = (rt: number, rn: number, off: number) => 0xb9400000 | ((off / 4) << 10) | (rn << 5) | rt;
const strW = (rt: number, rn: number, off: number) => 0xb9000000 | ((off / 4) << 10) | (rn << 5) | rt;
const ldrb = (rt: number, rn: number, off: number) => 0x39400000 | (off << 10) | (rn << 5) | rt;
const strb = (rt: number, rn: number, off: number) => 0x39000000 | (off << 10) | (rn << 5) | rt;
const addImm = (rd: number, rn: number, imm: number) => 0x91000000 | (imm << 10) | (rn << 5) | rd;
const addReg = (rd: number, rn: number, rm: number) => 0x8b000000 | (rm << 16) | (rn << 5) | rd;
/** madd wd, wn, wm, wa: wd = wa + wn * wm (32-bit). */
const maddW = (rd: number, rn: number, rm: number, ra: number) => 0x1b000000 | (rm << 16) | (ra << 10) | (rn << 5) | rd;
const cmpImm = (rn: number, imm: number) => 0xf1000000 | (imm << 10) | (rn << 5) | 31;
const cmpReg = (rn: number, rm: number) => 0xeb000000 | (rm << 16) | (rn << 5) | 31;
const movReg = (rd: number, rm: number) => 0xaa0003e0 | (rm << 16) | rd;
const COND = { ne: 1, hs: 2 } as const;
/** b.cond to `words` instructions from here (negative: back). */
const bcond = (cond: number, words: number) => 0x54000000 | ((words & 0x7ffff) << 5) | cond;
const SCVTF_D1_W1 = 0x1e620021; // scvtf d1, w1
const FADD_D0_D0_D1 = 0x1e612800; // fadd d0, d0, d1
const FMOV_D0_XZR = 0x9e6703e0; // fmov d0, xzr
const FCVTZU_W4_D0 = 0x1e790004; // fcvtzu w4, d0

const PSCI_CPU_ON = 0xc4000003;
const PSCI_CPU_OFF = 0x84000002;

/** Where the GIC frames are, and vCPU 1's MPIDR affinity (the CPU_ON target). */
export interface Arm64CountingLayout {
  gicDistributor: number;
  /** vCPU 0's redistributor (RD_base; its SGI frame is 64 KiB above). */
  gicRedistributor0: number;
  vcpu1Affinity: number;
}

function words(ws: number[]): Uint8Array {
  const b = Buffer.alloc(ws.length * 4);
  ws.forEach((w, i) => b.writeUInt32LE(w >>> 0, i * 4));
  return new Uint8Array(b);
}

/** The two vCPUs' code: vCPU 0's at RAM_START, vCPU 1's at RAM_START + 4 KiB. */
export function arm64CountingGuestCode(rounds0: number, rounds1: number, l: Arm64CountingLayout): { code0: Uint8Array; code1: Uint8Array } {
  if (rounds0 < 1 || rounds0 > 4095 || rounds1 < 1 || rounds1 > 4095) throw new RangeError('rounds must be 1 to 4095 (a cmp immediate)');
  const R = ARM64_COUNTING_REPORT;
  const dev = 2; // x2: the device
  const gicd = 9; // x9: distributor
  const gicr = 10; // x10: vCPU 0's SGI frame + 0x400 (GICR_IPRIORITYR)
  const loop = [
    ldrW(1, dev, 0), // w1 = feed 0
    movz(4, 31),
    maddW(20, 20, 4, 1), // w20 = w1 + w20 * 31
    SCVTF_D1_W1,
    FADD_D0_D0_D1, // d0 += w1
    mrs(3, TPIDR_EL1),
    addReg(3, 3, 1),
    msr(TPIDR_EL1, 3), // TPIDR_EL1 += w1
    mrs(6, CNTVCT_EL0),
    cmpReg(6, 21),
    bcond(COND.hs, 2), // counter >= last: skip the flag
    movz(22, 1),
    movReg(21, 6),
    addImm(19, 19, 1),
    cmpImm(19, rounds0),
  ];
  const code0 = [
    movz(0, 0x30, 16),
    msr(CPACR_EL1, 0), // FPEN: FP/SIMD at EL1 and EL0 without traps
    ISB,
    ...mov32(0, PSCI_CPU_ON),
    ...mov32(1, l.vcpu1Affinity),
    ...mov32(2, ENTRY1),
    movz(3, 0),
    HVC0,
    ...mov32(gicd, l.gicDistributor),
    movz(1, 0x100),
    strW(1, gicd, 0x104), // GICD_ISENABLER1: INTID 40
    movz(1, 0xa0),
    strb(1, gicd, 0x428), // GICD_IPRIORITYR: INTID 40 priority 0xa0
    movz(1, 0x200),
    strW(1, gicd, 0x204), // GICD_ISPENDR1: INTID 41 pending (not enabled: never delivered)
    ...mov32(gicr, l.gicRedistributor0 + 0x10400),
    movz(1, 0x80),
    strb(1, gicr, 27), // GICR_IPRIORITYR: PPI 27 priority 0x80
    movz(1, 0xf0),
    msr(ICC_PMR_EL1, 1),
    ...mov32(dev, ARM64_COUNTING_DEVICE),
    movz(19, 0),
    movz(20, 1),
    movz(21, 0),
    movz(22, 0),
    FMOV_D0_XZR,
    msr(TPIDR_EL1, 31), // xzr
    ...loop,
    bcond(COND.ne, -loop.length),
    strW(20, dev, R.mix0),
    FCVTZU_W4_D0,
    strW(4, dev, R.fp0),
    mrs(3, TPIDR_EL1),
    strW(3, dev, R.tpidr0),
    ldrW(5, gicd, 0x104),
    strW(5, dev, R.isenabler1),
    ldrb(5, gicd, 0x428),
    strW(5, dev, R.spiPriority),
    ldrW(5, gicd, 0x204),
    strW(5, dev, R.ispendr1),
    ldrb(5, gicr, 27),
    strW(5, dev, R.ppiPriority),
    mrs(5, ICC_PMR_EL1),
    strW(5, dev, R.pmr),
    strW(22, dev, R.counterWentBack),
    strW(19, dev, R.done0),
    WFI,
    B_BACK1,
  ];
  const loop1 = [ldrW(1, dev, 4), movz(4, 17), maddW(20, 20, 4, 1), addImm(19, 19, 1), cmpImm(19, rounds1)];
  const code1 = [
    ...mov32(dev, ARM64_COUNTING_DEVICE),
    movz(19, 0),
    movz(20, 3),
    ...loop1,
    bcond(COND.ne, -loop1.length),
    strW(20, dev, R.mix1),
    strW(19, dev, R.done1),
    ...mov32(0, PSCI_CPU_OFF),
    HVC0,
    WFI,
    B_BACK1,
  ];
  return { code0: words(code0), code1: words(code1) };
}

/** The guest's two code pages in RAM (RAM must start at RAM_START). */
export function loadArm64CountingGuest(memory: { write(gpa: number, bytes: Uint8Array): void }, rounds0: number, rounds1: number, l: Arm64CountingLayout): void {
  const { code0, code1 } = arm64CountingGuestCode(rounds0, rounds1, l);
  memory.write(RAM_START, code0);
  memory.write(ENTRY1, code1);
}

/** vCPU 0's entry registers: PC at RAM_START, EL1h with DAIF masked. */
export const ARM64_COUNTING_ENTRY = { pc: BigInt(RAM_START), pstate: 0x3c5n };

/**
 * The device: feed 0 (offset 0) answers 7 * (its reads so far), feed 1
 * (offset 4) 13 * (its reads) + 1; writes to the report offsets are
 * recorded, and `onDone` runs once both vCPUs reported done.
 * `reads` is its whole state (a restored run starts from the snapshot's).
 */
export class Arm64CountingDevice implements IoDevice {
  readonly name = 'arm64-counting';
  reads: [number, number] = [0, 0];
  readonly report: Arm64CountingReport = {};
  constructor(
    private readonly onDone: (report: Arm64CountingReport) => void,
    private readonly onRead: (vcpuFeed: 0 | 1, n: number) => void = () => {},
  ) {}
  read(offset: number): number {
    if (offset !== 0 && offset !== 4) return 0xffffffff;
    const f = (offset / 4) as 0 | 1;
    const n = ++this.reads[f];
    this.onRead(f, n);
    return (f === 0 ? n * 7 : n * 13 + 1) >>> 0;
  }
  write(offset: number, _size: number, value: number): void {
    const name = (Object.keys(ARM64_COUNTING_REPORT) as (keyof typeof ARM64_COUNTING_REPORT)[]).find((k) => ARM64_COUNTING_REPORT[k] === offset);
    if (!name) return;
    this.report[name] = value >>> 0;
    if (this.report.done0 !== undefined && this.report.done1 !== undefined && (name === 'done0' || name === 'done1')) this.onDone({ ...this.report });
  }
}
