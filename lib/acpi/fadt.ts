/**
 * The Fixed ACPI Description Table, revision 6 (276 bytes), for a PC that is
 * *not* HW-reduced: it points the OS at our PM register block (PM1a event and
 * control, the PM timer, GPE0, the reset register), the SCI, the DSDT and the
 * FACS. It does not model the PM device; the register offsets below are the
 * contract that device must honour. Spec: ACPI 6.5 §5.2.9 (Table 5.9 fields,
 * Table 5.10 flags, Table 5.11 IA-PC boot architecture flags), §4.8 (PM block).
 */
import { ByteWriter } from '../util/bytes';
import { checkUint } from './checks';
import { AccessSize, encodeGas, encodeSdt, Gas, GAS_NONE, ioGas } from './sdt';

export const FADT_REVISION = 6;
/** FADT 6.5: the minor version has its own byte since ACPI 5.1. */
export const FADT_MINOR_VERSION = 5;
export const FADT_SIZE = 276;

/** Offsets inside the PM I/O block (OpenVMM's layout, which Linux guests already accept). */
export const PM1_EVT_OFFSET = 0x00;
export const PM1_EVT_LEN = 4; // PM1_STS (2) + PM1_EN (2)
export const PM1_CNT_OFFSET = 0x04;
export const PM1_CNT_LEN = 2;
export const PM_TMR_OFFSET = 0x08;
export const PM_TMR_LEN = 4;
export const GPE0_OFFSET = 0x0c;
export const GPE0_BLK_LEN = 4; // GPE0_STS (2) + GPE0_EN (2): 16 GPEs
export const RESET_REG_OFFSET = 0x33;
/** Written to RESET_REG to reboot. */
export const RESET_VALUE = 0x01;

/** FADT Flags (Table 5.10), by bit. */
export const FADT_FLAG = {
  WBINVD: 1 << 0,
  PROC_C1: 1 << 2,
  PWR_BUTTON: 1 << 4,
  SLP_BUTTON: 1 << 5,
  TMR_VAL_EXT: 1 << 8,
  RESET_REG_SUP: 1 << 10,
  HW_REDUCED_ACPI: 1 << 20,
} as const;

/** IAPC_BOOT_ARCH (Table 5.11), by bit. */
export const IAPC_BOOT_ARCH = {
  LEGACY_DEVICES: 1 << 0,
  I8042: 1 << 1,
  VGA_NOT_PRESENT: 1 << 2,
  MSI_NOT_SUPPORTED: 1 << 3,
  PCIE_ASPM_CONTROLS: 1 << 4,
  CMOS_RTC_NOT_PRESENT: 1 << 5,
} as const;

/** Latencies above 100 and 1000 us mean "C2/C3 not supported" (Table 5.9), so the OS stays in C1 (HLT). */
const P_LVL2_LAT_NONE = 101;
const P_LVL3_LAT_NONE = 1001;

export interface FadtOptions {
  dsdtGpa: number;
  /** GPA of the FACS, below 4 GiB; it goes in the 32-bit FIRMWARE_CTRL, which then forbids X_FIRMWARE_CTRL. */
  facsGpa: number;
  /** Base I/O port of the PM block (0x400). */
  pmBase: number;
  /** ISA IRQ of the SCI (9); the MADT must override it to level/active-high. */
  sci: number;
  /** Whether a CMOS RTC answers at 0x70; if not, Linux must not probe it. Default true. */
  cmosRtc?: boolean;
}

/**
 * Flags we set, and why:
 * - WBINVD: the (virtual) CPU's WBINVD works, which ACPI 1.0+ requires for x86.
 * - PROC_C1: HLT is the C1 state on every vCPU.
 * - SLP_BUTTON: set means "no fixed-feature sleep button"; we have none at all.
 * - TMR_VAL_EXT: the PM timer is 32 bits wide, so it wraps every ~20 minutes, not every 4.7 s.
 * - RESET_REG_SUP: RESET_REG works, so Linux's default `reboot=acpi` path reaches our PM device.
 * PWR_BUTTON stays clear: the power button is a *fixed* feature, so the VMM can ask
 * for a clean shutdown by setting PM1_STS.PWRBTN_STS and raising the SCI.
 */
export const FADT_FLAGS =
  FADT_FLAG.WBINVD | FADT_FLAG.PROC_C1 | FADT_FLAG.SLP_BUTTON | FADT_FLAG.TMR_VAL_EXT | FADT_FLAG.RESET_REG_SUP;

export function encodeFadt(opts: FadtOptions): Uint8Array {
  checkUint(opts.dsdtGpa, 32, 'fadt dsdt');
  checkUint(opts.facsGpa, 32, 'fadt firmware_ctrl');
  checkUint(opts.sci, 16, 'fadt sci_int');
  checkUint(opts.pmBase, 16, 'fadt pm base');
  checkUint(opts.pmBase + RESET_REG_OFFSET, 16, 'fadt reset_reg address');
  const pm = opts.pmBase;
  // Register widths match the *_LEN fields exactly: ACPICA warns on any mismatch.
  const pm1aEvt = ioGas(pm + PM1_EVT_OFFSET, 8 * PM1_EVT_LEN, AccessSize.Word);
  const pm1aCnt = ioGas(pm + PM1_CNT_OFFSET, 8 * PM1_CNT_LEN, AccessSize.Word);
  const pmTmr = ioGas(pm + PM_TMR_OFFSET, 8 * PM_TMR_LEN, AccessSize.Dword);
  const gpe0 = ioGas(pm + GPE0_OFFSET, 8 * GPE0_BLK_LEN, AccessSize.Byte);
  const resetReg: Gas = ioGas(pm + RESET_REG_OFFSET, 8, AccessSize.Byte);
  // LEGACY_DEVICES: the UARTs and RTC are ISA devices the OS must drive. No I8042 bit:
  // Linux then skips probing the keyboard controller we do not have.
  const bootArch =
    IAPC_BOOT_ARCH.LEGACY_DEVICES | IAPC_BOOT_ARCH.VGA_NOT_PRESENT | (opts.cmosRtc === false ? IAPC_BOOT_ARCH.CMOS_RTC_NOT_PRESENT : 0);

  const w = new ByteWriter(FADT_SIZE);
  w.u32(opts.facsGpa); // 36 FIRMWARE_CTRL
  w.u32(opts.dsdtGpa); // 40 DSDT (X_DSDT holds the same value)
  w.u8(0); // 44 reserved (INT_MODEL in ACPI 1.0)
  w.u8(0); // 45 Preferred_PM_Profile: unspecified
  w.u16(opts.sci); // 46 SCI_INT
  // 48 SMI_CMD = 0: there is no SMM and the PM device starts with SCI_EN set, so the
  // hardware is always in ACPI mode. ACPICA then skips the ACPI_ENABLE handshake,
  // and ACPI_ENABLE/ACPI_DISABLE (52, 53) are meaningless and left 0.
  w.u32(0).u8(0).u8(0);
  w.u8(0); // 54 S4BIOS_REQ
  w.u8(0); // 55 PSTATE_CNT
  w.u32(pm + PM1_EVT_OFFSET); // 56 PM1a_EVT_BLK
  w.u32(0); // 60 PM1b_EVT_BLK
  w.u32(pm + PM1_CNT_OFFSET); // 64 PM1a_CNT_BLK
  w.u32(0); // 68 PM1b_CNT_BLK
  w.u32(0); // 72 PM2_CNT_BLK
  w.u32(pm + PM_TMR_OFFSET); // 76 PM_TMR_BLK
  w.u32(pm + GPE0_OFFSET); // 80 GPE0_BLK
  w.u32(0); // 84 GPE1_BLK
  w.u8(PM1_EVT_LEN).u8(PM1_CNT_LEN).u8(0).u8(PM_TMR_LEN); // 88..91
  w.u8(GPE0_BLK_LEN).u8(0).u8(0); // 92 GPE0_BLK_LEN, GPE1_BLK_LEN, GPE1_BASE
  w.u8(0); // 95 CST_CNT: no _CST notification
  w.u16(P_LVL2_LAT_NONE).u16(P_LVL3_LAT_NONE); // 96, 98
  w.u16(0).u16(0); // 100 FLUSH_SIZE, FLUSH_STRIDE (unused with WBINVD)
  w.u8(0).u8(0); // 104 DUTY_OFFSET, DUTY_WIDTH: no throttling
  w.u8(0).u8(0).u8(0); // 106 DAY_ALRM, MON_ALRM, CENTURY: no RTC alarm or century register
  w.u16(bootArch); // 109 IAPC_BOOT_ARCH
  w.u8(0); // 111 reserved
  w.u32(FADT_FLAGS); // 112 Flags
  w.bytes(encodeGas(resetReg)); // 116 RESET_REG
  w.u8(RESET_VALUE); // 128 RESET_VALUE
  w.u16(0); // 129 ARM_BOOT_ARCH
  w.u8(FADT_MINOR_VERSION); // 131
  w.u64(0); // 132 X_FIRMWARE_CTRL: must be 0 when FIRMWARE_CTRL is set
  w.u64(opts.dsdtGpa); // 140 X_DSDT
  w.bytes(encodeGas(pm1aEvt)); // 148 X_PM1a_EVT_BLK
  w.bytes(encodeGas(GAS_NONE)); // 160 X_PM1b_EVT_BLK
  w.bytes(encodeGas(pm1aCnt)); // 172 X_PM1a_CNT_BLK
  w.bytes(encodeGas(GAS_NONE)); // 184 X_PM1b_CNT_BLK
  w.bytes(encodeGas(GAS_NONE)); // 196 X_PM2_CNT_BLK
  w.bytes(encodeGas(pmTmr)); // 208 X_PM_TMR_BLK
  w.bytes(encodeGas(gpe0)); // 220 X_GPE0_BLK
  w.bytes(encodeGas(GAS_NONE)); // 232 X_GPE1_BLK
  w.bytes(encodeGas(GAS_NONE)); // 244 SLEEP_CONTROL_REG (HW-reduced only)
  w.bytes(encodeGas(GAS_NONE)); // 256 SLEEP_STATUS_REG (HW-reduced only)
  w.u64(0); // 268 Hypervisor Vendor Identity
  return encodeSdt({ signature: 'FACP', revision: FADT_REVISION }, w.finish());
}
