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
export const KVM_DEV_ARM_VGIC_GRP_NR_IRQS = 3;
export const KVM_DEV_ARM_VGIC_GRP_CTRL = 4;
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
