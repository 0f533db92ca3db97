/**
 * arm64 partition state as plain values, the way KVM hands it out: each
 * vCPU's registers by KVM_REG id (KVM_GET_REG_LIST names them), its MP state
 * and KVM_ARM_VCPU_INIT choice, and the in-kernel GICv3's registers by name.
 * kvm-arm64-partition.ts reads and writes it; lib/snapshot checks its shape.
 * 64-bit values are bigints so no bit is lost.
 */

/** One register: up to 64 bits as a bigint, wider ones (the 128-bit FP/SIMD vregs) as their bytes. */
export interface Arm64RegValue {
  /** The KVM_REG id (architecture, size and register fields; arm64-regs.ts). */
  id: bigint;
  value: bigint | Uint8Array;
}

export interface Arm64VcpuState {
  /** KVM_ARM_VCPU_INIT's target (KVM_ARM_PREFERRED_TARGET on the host that saved it). */
  target: number;
  /** KVM_ARM_VCPU_INIT feature bit numbers the vCPU was created with. */
  features: number[];
  /** KVM_GET_MP_STATE: 0 runnable, 5 stopped (PSCI off), 9 suspended. */
  mpState: number;
  /** Every register KVM_GET_REG_LIST listed, in its order. */
  regs: Arm64RegValue[];
}

/**
 * The GICv3 redistributor of one vCPU (its SGI and PPI state, the SGI_base
 * frame) and its CPU interface. LPIs are not here: they need an ITS, which
 * nodevmm's arm64 machine does not have.
 */
export interface Arm64GicCpuState {
  igroupr0: number;
  isenabler0: number;
  ispendr0: number;
  isactiver0: number;
  /** GICR_IPRIORITYR0-7: eight priority bytes per word, INTIDs 0-31. */
  ipriorityr: number[];
  /** GICR_ICFGR1: the PPIs' trigger modes (ICFGR0, the SGIs', is fixed). */
  icfgr1: number;
  /** The PPIs' input line levels (KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO, bit n = INTID n). */
  lineLevel: number;
  /** The CPU interface's system registers (KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS). */
  icc: {
    sre: bigint;
    ctlr: bigint;
    igrpen0: bigint;
    igrpen1: bigint;
    pmr: bigint;
    bpr0: bigint;
    bpr1: bigint;
    /** ICC_AP0R<n>_EL1 / ICC_AP1R<n>_EL1: as many as the priority bits in ICC_CTLR_EL1 give (1, 2 or 4). */
    ap0r: bigint[];
    ap1r: bigint[];
  };
}

/** The GICv3 distributor: its control registers and, per SPI (INTIDs 32 to nrIrqs-1), each register's words. */
export interface Arm64GicDistState {
  /** Interrupts the distributor implements (GICD_TYPER.ITLinesNumber): SGIs, PPIs and SPIs. */
  nrIrqs: number;
  iidr: number;
  ctlr: number;
  /** One bit per SPI: (nrIrqs - 32) / 32 words each. */
  igroupr: number[];
  isenabler: number[];
  ispendr: number[];
  isactiver: number[];
  /** Eight bits per SPI: (nrIrqs - 32) / 4 words. */
  ipriorityr: number[];
  /** Two bits per SPI: (nrIrqs - 32) / 16 words. */
  icfgr: number[];
  /** GICD_IROUTER<n> of each SPI (64-bit: its affinity route). */
  irouter: bigint[];
  /** The SPIs' input line levels, one bit per SPI like igroupr. */
  lineLevel: number[];
}

export interface Arm64GicState {
  version: 3;
  dist: Arm64GicDistState;
  /** One per vCPU, in vCPU order. */
  cpus: Arm64GicCpuState[];
}

export interface Arm64PartitionState {
  arch: 'aarch64';
  gic: Arm64GicState;
  vcpus: Arm64VcpuState[];
}
