/**
 * The numbers the arm64 KVM ABI speaks in: KVM_GET/SET_ONE_REG ids for the
 * core registers (offsets into struct kvm_regs) and system registers
 * (op0/op1/CRn/CRm/op2), the KVM_IRQ_LINE encoding for GIC interrupts,
 * vCPU feature bits and vGICv3 device attributes. Pure values, no ioctls.
 * Spec: Linux Documentation/virt/kvm/api.rst 4.25 (KVM_IRQ_LINE), 4.68
 * (KVM_SET_ONE_REG, arm64 register ids), devices/arm-vgic-v3.rst;
 * arch/arm64/include/uapi/asm/kvm.h.
 */
import { NodevmmError } from '../errors';

const KVM_REG_ARM64 = 0x6000_0000_0000_0000n;
const KVM_REG_SIZE_U64 = 0x0030_0000_0000_0000n;
const KVM_REG_ARM_CORE = 0x0010n << 16n;
const KVM_REG_ARM64_SYSREG = 0x0013n << 16n;

/** Id of a 64-bit field of struct kvm_regs at byte `offset` (ids count 32-bit words). */
function coreReg(offset: number): bigint {
  return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | BigInt(offset / 4);
}

/** struct user_pt_regs: regs[31], sp, pc, pstate; then kvm_regs.sp_el1, elr_el1. */
export function arm64CoreRegId(name: Arm64CoreReg): bigint {
  if (name === 'sp') return coreReg(31 * 8);
  if (name === 'pc') return coreReg(32 * 8);
  if (name === 'pstate') return coreReg(33 * 8);
  if (name === 'sp_el1') return coreReg(34 * 8);
  if (name === 'elr_el1') return coreReg(35 * 8);
  const m = /^x(\d+)$/.exec(name);
  const n = m ? Number(m[1]) : NaN;
  if (!(n >= 0 && n <= 30)) throw new NodevmmError('ERR_ARM64_REG', `arm64 core register ${JSON.stringify(name)} is not x0-x30, sp, pc, pstate, sp_el1 or elr_el1`);
  return coreReg(n * 8);
}

export type Arm64CoreReg = `x${number}` | 'sp' | 'pc' | 'pstate' | 'sp_el1' | 'elr_el1';
/** A set of core registers to write (those left out keep their values). */
export type Arm64CoreRegs = Partial<Record<Arm64CoreReg, bigint>>;

/** ARM64_SYS_REG(op0, op1, CRn, CRm, op2) from the uapi header. */
export function arm64SysRegId(op0: number, op1: number, crn: number, crm: number, op2: number): bigint {
  const enc = (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2;
  return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG | BigInt(enc);
}

/** MPIDR_EL1 = S3_0_C0_C0_5: the CPU's affinity, which the device tree's cpu `reg` must match. */
export const MPIDR_EL1 = arm64SysRegId(3, 0, 0, 0, 5);

/** KVM_ARM_VCPU_INIT feature bit numbers. */
export const KVM_ARM_VCPU_POWER_OFF = 0;
export const KVM_ARM_VCPU_EL1_32BIT = 1;
export const KVM_ARM_VCPU_PSCI_0_2 = 2;

/** KVM_CREATE_DEVICE type and attribute groups for the in-kernel GICv3. */
export const KVM_DEV_TYPE_ARM_VGIC_V3 = 7;
export const KVM_DEV_ARM_VGIC_GRP_ADDR = 0;
export const KVM_DEV_ARM_VGIC_GRP_DIST_REGS = 1;
export const KVM_DEV_ARM_VGIC_GRP_NR_IRQS = 3;
export const KVM_DEV_ARM_VGIC_GRP_CTRL = 4;
export const KVM_DEV_ARM_VGIC_GRP_REDIST_REGS = 5;
export const KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS = 6;
export const KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO = 7;
export const KVM_DEV_ARM_VGIC_CTRL_INIT = 0;
export const KVM_VGIC_V3_ADDR_TYPE_DIST = 2;
export const KVM_VGIC_V3_ADDR_TYPE_REDIST = 3;

/** KVM_EXIT_SYSTEM_EVENT types (PSCI SYSTEM_OFF, SYSTEM_RESET, crash). */
export const KVM_SYSTEM_EVENT_SHUTDOWN = 1;
export const KVM_SYSTEM_EVENT_RESET = 2;
export const KVM_SYSTEM_EVENT_CRASH = 3;

const KVM_ARM_IRQ_TYPE_SHIFT = 24;
const KVM_ARM_IRQ_TYPE_SPI = 1;
const GIC_SPI_BASE = 32;
const GIC_MAX_INTID = 1019;

/**
 * The `irq` field of KVM_IRQ_LINE for a shared peripheral interrupt with an
 * in-kernel GIC: type SPI in bits 24-27, the INTID (32 + spi) in bits 0-15;
 * the vCPU fields stay 0 because SPIs are routed by the distributor.
 */
export function kvmArmSpiIrq(spi: number): number {
  if (!Number.isInteger(spi) || spi < 0 || spi + GIC_SPI_BASE > GIC_MAX_INTID) {
    throw new NodevmmError('ERR_ARM64_IRQ', `spi ${spi} must be an integer from 0 to ${GIC_MAX_INTID - GIC_SPI_BASE}`);
  }
  return ((KVM_ARM_IRQ_TYPE_SPI << KVM_ARM_IRQ_TYPE_SHIFT) | (GIC_SPI_BASE + spi)) >>> 0;
}

/** KVM_GET/SET_MP_STATE values on arm64: running, powered off (PSCI CPU_OFF or never started), suspended (PSCI SUSPEND). */
export const KVM_MP_STATE_RUNNABLE = 0;
export const KVM_MP_STATE_STOPPED = 5;
export const KVM_MP_STATE_SUSPENDED = 9;

const KVM_REG_ARCH_MASK = 0xff00_0000_0000_0000n;
const KVM_REG_SIZE_MASK = 0x00f0_0000_0000_0000n;
const KVM_REG_ARM_COPROC_MASK = 0x0000_0000_0fff_0000n;
const KVM_REG_ARM_FW = 0x0014n << 16n;

/** The width in bytes a KVM_REG id names (its size field: 1 << size bytes). */
export function arm64RegBytes(id: bigint): number {
  return 1 << Number((id & KVM_REG_SIZE_MASK) >> 52n);
}

/** Is `id` an arm64 register id of a width KVM knows (1 to 256 bytes)? */
export function isArm64RegId(id: bigint): boolean {
  return id >= 0n && id < 1n << 64n && (id & KVM_REG_ARCH_MASK) === KVM_REG_ARM64 && arm64RegBytes(id) <= 256;
}

/**
 * The virtual timer as KVM exposes it (api.rst 4.68): CNTV_CTL, CNTV_CVAL and
 * the virtual counter; the last two ids are swapped against their system
 * register encodings, which the ABI keeps. Writing a counter (virtual or, on
 * newer kernels, physical) sets the VM's counter offset, so a restore writes
 * them after the timers' control and compare values.
 */
export const KVM_REG_ARM_TIMER_CTL = arm64SysRegId(3, 3, 14, 3, 1);
export const KVM_REG_ARM_TIMER_CNT = arm64SysRegId(3, 3, 14, 3, 2);
export const KVM_REG_ARM_TIMER_CVAL = arm64SysRegId(3, 3, 14, 0, 2);
export const KVM_REG_ARM_PTIMER_CNT = arm64SysRegId(3, 3, 14, 0, 1);

/** MIDR_EL1 = S3_0_C0_C0_0: implementer, part number and revision of the CPU the vCPU reports. */
export const MIDR_EL1 = arm64SysRegId(3, 0, 0, 0, 0);

const CORE_NAMES: Record<number, string> = { 31: 'sp', 32: 'pc', 33: 'pstate', 34: 'sp_el1', 35: 'elr_el1' };

/** A register id in words, for error messages: `x5`, `pc`, `core+0x...`, `S3_0_C1_C0_0`, `fw 0x...`, else hex. */
export function describeArm64Reg(id: bigint): string {
  const coproc = id & KVM_REG_ARM_COPROC_MASK;
  const low = Number(id & 0xffffn);
  if (coproc === KVM_REG_ARM_CORE) {
    const word = Number(id & 0xffffn);
    if (word % 2 === 0 && word / 2 <= 35) return word / 2 < 31 ? `x${word / 2}` : CORE_NAMES[word / 2]!;
    return `core register at byte ${word * 4} of struct kvm_regs`;
  }
  if (id === KVM_REG_ARM_TIMER_CNT) return 'KVM_REG_ARM_TIMER_CNT';
  if (id === KVM_REG_ARM_TIMER_CVAL) return 'KVM_REG_ARM_TIMER_CVAL';
  if (coproc === KVM_REG_ARM64_SYSREG) {
    return `S${low >> 14}_${(low >> 11) & 7}_C${(low >> 7) & 15}_C${(low >> 3) & 15}_${low & 7}`;
  }
  if (coproc === KVM_REG_ARM_FW) return `firmware register ${low}`;
  return `register 0x${id.toString(16)}`;
}

/**
 * The `mpidr` field of the VGIC's per-CPU attributes (arm-vgic-v3.rst):
 * Aff3, Aff2, Aff1, Aff0 packed into bits 63-32, from MPIDR_EL1, where Aff3
 * sits at bits 39-32 and the others at 23-0.
 */
export function vgicMpidrField(mpidr: bigint): bigint {
  const aff3 = (mpidr >> 32n) & 0xffn;
  const aff210 = mpidr & 0xff_ffffn;
  return ((aff3 << 24n) | aff210) << 32n;
}

/** A CPU_SYSREGS attribute's `instr` field for the system register op0/op1/CRn/CRm/op2. */
export function vgicSysregInstr(op0: number, op1: number, crn: number, crm: number, op2: number): number {
  return (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2;
}

/** INTIDs 1020-1023 are special; no GIC implements more than 1020 interrupts. */
const MAX_INTIDS = 1020;

/** Interrupts the distributor implements, from GICD_TYPER.ITLinesNumber (32 * (N + 1), at most 1020). */
export function vgicIrqCount(typer: number): number {
  return Math.min(32 * ((typer & 0x1f) + 1), MAX_INTIDS);
}

/** Words of a per-SPI register with `bits` bits per interrupt, for `nrIrqs` interrupts. */
export function spiWords(nrIrqs: number, bits: number): number {
  return Math.ceil(((nrIrqs - 32) * bits) / 32);
}

/** ICC_AP0R/AP1R registers implemented for ICC_CTLR_EL1.PRIbits (bits 10-8: priority bits - 1): 5 bits 1, 6 bits 2, 7 bits 4. */
export function iccApRegCount(ctlr: bigint): number {
  const bits = Number((ctlr >> 8n) & 7n) + 1;
  return bits >= 7 ? 4 : bits === 6 ? 2 : 1;
}
