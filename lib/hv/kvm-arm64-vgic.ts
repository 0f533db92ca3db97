/**
 * Save and restore of KVM's in-kernel GICv3 through its device attributes:
 * which registers, and in which order. The distributor's and
 * redistributors' registers (KVM_DEV_ARM_VGIC_GRP_DIST_REGS, REDIST_REGS,
 * 32-bit words; 64-bit registers as two words), the CPU interfaces'
 * system registers (CPU_SYSREGS) and the input line levels (LEVEL_INFO).
 * The kernel gives userspace the raw pending latch through ISPENDR and
 * ignores ICPENDR writes; set/clear pairs (enable, active) are restored by
 * clearing the bits the saved value lacks and setting the ones it has.
 * Spec: Linux Documentation/virt/kvm/devices/arm-vgic-v3.rst; register
 * offsets from the GICv3 architecture (ARM IHI 0069), 12.9 and 12.11.
 * QEMU's arm_gicv3_kvm.c restores in the same order (trigger modes before
 * line levels before pending bits; the CPU interface last).
 */
import { NodevmmError } from '../errors';
import {
  KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS,
  KVM_DEV_ARM_VGIC_GRP_DIST_REGS,
  KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO,
  KVM_DEV_ARM_VGIC_GRP_REDIST_REGS,
  iccApRegCount,
  spiWords,
  vgicIrqCount,
  vgicMpidrField,
  vgicSysregInstr,
} from './arm64-regs';
import type { Arm64GicCpuState, Arm64GicDistState, Arm64GicState } from './arm64-state';

/** Device attribute access on the VGIC's fd (KVM_GET/SET_DEVICE_ATTR), 64-bit values. */
export interface VgicAttrs {
  get(group: number, attr: bigint): bigint;
  set(group: number, attr: bigint, value: bigint): void;
}

/** Distributor register offsets (GICD_*). */
const GICD = { ctlr: 0x0, typer: 0x4, iidr: 0x8, igroupr: 0x80, isenabler: 0x100, icenabler: 0x180, ispendr: 0x200, isactiver: 0x300, icactiver: 0x380, ipriorityr: 0x400, icfgr: 0xc00, irouter: 0x6000 } as const;
/** Redistributor SGI_base frame registers (GICR_*), relative to RD_base: the frame is 64 KiB above it. */
const SGI = 0x10000;
const GICR = { igroupr0: SGI + 0x80, isenabler0: SGI + 0x100, icenabler0: SGI + 0x180, ispendr0: SGI + 0x200, isactiver0: SGI + 0x300, icactiver0: SGI + 0x380, ipriorityr: SGI + 0x400, icfgr1: SGI + 0xc04 } as const;
/** CPU interface system registers (op0 3, op1 0, CRn 12 or 4). */
const ICC = {
  pmr: vgicSysregInstr(3, 0, 4, 6, 0),
  bpr0: vgicSysregInstr(3, 0, 12, 8, 3),
  ap0r: (n: number) => vgicSysregInstr(3, 0, 12, 8, 4 + n),
  ap1r: (n: number) => vgicSysregInstr(3, 0, 12, 9, n),
  bpr1: vgicSysregInstr(3, 0, 12, 12, 3),
  ctlr: vgicSysregInstr(3, 0, 12, 12, 4),
  sre: vgicSysregInstr(3, 0, 12, 12, 5),
  igrpen0: vgicSysregInstr(3, 0, 12, 12, 6),
  igrpen1: vgicSysregInstr(3, 0, 12, 12, 7),
};
const u32 = (v: bigint) => Number(v & 0xffff_ffffn);

/** The GICv3 state of a VM whose vCPUs are all out of KVM_RUN; `mpidrs[i]` is vCPU i's MPIDR_EL1. */
export function saveVgicV3(a: VgicAttrs, mpidrs: readonly bigint[]): Arm64GicState {
  const dist = (off: number) => u32(a.get(KVM_DEV_ARM_VGIC_GRP_DIST_REGS, BigInt(off)));
  const nrIrqs = vgicIrqCount(dist(GICD.typer));
  // Per-SPI words start where INTID 32 is: bit registers one word in, IPRIORITYR 8 words, ICFGR 2.
  const words = (base: number, bits: number) => Array.from({ length: spiWords(nrIrqs, bits) }, (_, i) => dist(base + (32 * bits) / 8 + 4 * i));
  const spis = Array.from({ length: nrIrqs - 32 }, (_, i) => 32 + i);
  const d: Arm64GicDistState = {
    nrIrqs,
    iidr: dist(GICD.iidr),
    ctlr: dist(GICD.ctlr),
    igroupr: words(GICD.igroupr, 1),
    isenabler: words(GICD.isenabler, 1),
    ispendr: words(GICD.ispendr, 1),
    isactiver: words(GICD.isactiver, 1),
    ipriorityr: words(GICD.ipriorityr, 8),
    icfgr: words(GICD.icfgr, 2),
    irouter: spis.map((n) => BigInt(dist(GICD.irouter + 8 * n)) | (BigInt(dist(GICD.irouter + 8 * n + 4)) << 32n)),
    // SPIs read the same through any vCPU's mpidr.
    lineLevel: Array.from({ length: spiWords(nrIrqs, 1) }, (_, i) => u32(a.get(KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO, vgicMpidrField(mpidrs[0]!) | BigInt(32 + 32 * i)))),
  };
  const cpus = mpidrs.map((mpidr): Arm64GicCpuState => {
    const who = vgicMpidrField(mpidr);
    const redist = (off: number) => u32(a.get(KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, who | BigInt(off)));
    const icc = (instr: number) => a.get(KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, who | BigInt(instr));
    const ctlr = icc(ICC.ctlr);
    const aps = iccApRegCount(ctlr);
    return {
      igroupr0: redist(GICR.igroupr0),
      isenabler0: redist(GICR.isenabler0),
      ispendr0: redist(GICR.ispendr0),
      isactiver0: redist(GICR.isactiver0),
      ipriorityr: Array.from({ length: 8 }, (_, i) => redist(GICR.ipriorityr + 4 * i)),
      icfgr1: redist(GICR.icfgr1),
      lineLevel: u32(a.get(KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO, who)),
      icc: {
        sre: icc(ICC.sre),
        ctlr,
        igrpen0: icc(ICC.igrpen0),
        igrpen1: icc(ICC.igrpen1),
        pmr: icc(ICC.pmr),
        bpr0: icc(ICC.bpr0),
        bpr1: icc(ICC.bpr1),
        ap0r: Array.from({ length: aps }, (_, n) => icc(ICC.ap0r(n))),
        ap1r: Array.from({ length: aps }, (_, n) => icc(ICC.ap1r(n))),
      },
    };
  });
  return { version: 3, dist: d, cpus };
}

/**
 * Put a saved GICv3 state on a VM whose VGIC is initialised and whose vCPUs
 * (their MPIDRs restored) have not run. The order: GICD_IIDR first (the
 * kernel's documented rule: it selects the behaviour the rest is read
 * with), the distributor's control register, each redistributor, then the
 * distributor's per-SPI registers (group, priority, trigger mode and route
 * before line level, pending, active and enable), and each CPU interface
 * last (ICC_SRE and ICC_CTLR before the registers they shape). A value the
 * kernel refuses ends the restore naming the register.
 */
export function restoreVgicV3(a: VgicAttrs, mpidrs: readonly bigint[], s: Arm64GicState): void {
  const set = (group: number, attr: bigint, value: bigint | number, what: string) => {
    try {
      a.set(group, attr, BigInt(value));
    } catch (e) {
      throw new NodevmmError('ERR_SNAPSHOT_RESTORE', `kvm refused the saved ${what}: ${(e as Error).message}`, { cause: e });
    }
  };
  const typer = u32(a.get(KVM_DEV_ARM_VGIC_GRP_DIST_REGS, BigInt(GICD.typer)));
  const here = vgicIrqCount(typer);
  if (here !== s.dist.nrIrqs) throw new NodevmmError('ERR_SNAPSHOT_RESTORE', `the snapshot's GIC has ${s.dist.nrIrqs} interrupts and this VM's ${here}`);
  if (s.cpus.length !== mpidrs.length) throw new NodevmmError('ERR_SNAPSHOT_RESTORE', `the snapshot's GIC has ${s.cpus.length} CPU interfaces and this VM ${mpidrs.length} vcpus`);
  const d = s.dist;
  const dist = (off: number, v: bigint | number, what: string) => set(KVM_DEV_ARM_VGIC_GRP_DIST_REGS, BigInt(off), v, `GICD ${what}`);
  dist(GICD.iidr, d.iidr, 'IIDR');
  dist(GICD.ctlr, d.ctlr, 'CTLR');

  s.cpus.forEach((c, i) => {
    const who = vgicMpidrField(mpidrs[i]!);
    const redist = (off: number, v: number, what: string) => set(KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, who | BigInt(off), v, `GICR ${what} of vcpu ${i}`);
    redist(GICR.igroupr0, c.igroupr0, 'IGROUPR0');
    c.ipriorityr.forEach((v, n) => redist(GICR.ipriorityr + 4 * n, v, `IPRIORITYR${n}`));
    redist(GICR.icfgr1, c.icfgr1, 'ICFGR1');
    set(KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO, who, c.lineLevel, `PPI line levels of vcpu ${i}`);
    redist(GICR.ispendr0, c.ispendr0, 'ISPENDR0');
    redist(GICR.icactiver0, ~c.isactiver0 >>> 0, 'ICACTIVER0');
    redist(GICR.isactiver0, c.isactiver0, 'ISACTIVER0');
    redist(GICR.icenabler0, ~c.isenabler0 >>> 0, 'ICENABLER0');
    redist(GICR.isenabler0, c.isenabler0, 'ISENABLER0');
  });

  const words = (base: number, bits: number, values: readonly number[], what: string) =>
    values.forEach((v, i) => dist(base + (32 * bits) / 8 + 4 * i, v, `${what} word ${i}`));
  words(GICD.igroupr, 1, d.igroupr, 'IGROUPR');
  words(GICD.ipriorityr, 8, d.ipriorityr, 'IPRIORITYR');
  words(GICD.icfgr, 2, d.icfgr, 'ICFGR');
  d.irouter.forEach((v, i) => {
    const n = 32 + i;
    dist(GICD.irouter + 8 * n, v & 0xffff_ffffn, `IROUTER${n}`);
    dist(GICD.irouter + 8 * n + 4, v >> 32n, `IROUTER${n}`);
  });
  const first = vgicMpidrField(mpidrs[0]!);
  d.lineLevel.forEach((v, i) => set(KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO, first | BigInt(32 + 32 * i), v, `SPI line levels from INTID ${32 + 32 * i}`));
  words(GICD.ispendr, 1, d.ispendr, 'ISPENDR');
  words(GICD.icactiver, 1, d.isactiver.map((v) => ~v >>> 0), 'ICACTIVER');
  words(GICD.isactiver, 1, d.isactiver, 'ISACTIVER');
  words(GICD.icenabler, 1, d.isenabler.map((v) => ~v >>> 0), 'ICENABLER');
  words(GICD.isenabler, 1, d.isenabler, 'ISENABLER');

  s.cpus.forEach((c, i) => {
    const who = vgicMpidrField(mpidrs[i]!);
    const icc = (instr: number, v: bigint, what: string) => set(KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, who | BigInt(instr), v, `ICC_${what}_EL1 of vcpu ${i}`);
    const r = c.icc;
    icc(ICC.sre, r.sre, 'SRE');
    icc(ICC.ctlr, r.ctlr, 'CTLR');
    icc(ICC.igrpen0, r.igrpen0, 'IGRPEN0');
    icc(ICC.igrpen1, r.igrpen1, 'IGRPEN1');
    icc(ICC.pmr, r.pmr, 'PMR');
    icc(ICC.bpr0, r.bpr0, 'BPR0');
    icc(ICC.bpr1, r.bpr1, 'BPR1');
    r.ap0r.forEach((v, n) => icc(ICC.ap0r(n), v, `AP0R${n}`));
    r.ap1r.forEach((v, n) => icc(ICC.ap1r(n), v, `AP1R${n}`));
  });
}
