/**
 * arm64 Linux Direct boot: puts the initrd, the kernel Image and the DTB into
 * guest RAM where OpenVMM puts them (initrd at RAM+16 MiB, kernel at the next
 * 2 MiB boundary + text_offset, DTB on the next page after image_size) and
 * returns the boot CPU's registers. It does not create vCPUs: the backend
 * must start secondaries powered off (KVM_ARM_VCPU_POWER_OFF) so that the
 * guest brings them up through PSCI CPU_ON.
 * Spec: Linux Documentation/arch/arm64/booting.rst §2-§5; openvmm-facts §2.2-2.3.
 */
import { ConfigError } from '../../errors';
import type { GuestMemory } from '../../memory/guest-memory';
import { alignUp, hex } from '../../util/bytes';
import { arm64DefaultDevices, buildArm64DeviceTree, type Arm64VirtioMmio } from './fdt';
import { checkArm64ImageBootable, parseArm64Image } from './image';
import { DTB_MAX_SIZE, INITRD_OFFSET, KERNEL_ALIGN, PAGE_SIZE, RAM_START, arm64RamRanges } from './layout';

/** PSTATE on entry: M[3:0] = 0b0101 (EL1h), D, A, I, F (bits 9-6) masked (booting.rst §5). */
export const ARM64_BOOT_PSTATE = 0x3c5n;

export interface Arm64LinuxDirectOptions {
  /** A flat, uncompressed arm64 `Image`. */
  kernel: Uint8Array;
  initrd?: Uint8Array;
  cmdline: string;
  /** MPIDR_EL1 per vCPU as KVM reports it (index 0 boots). */
  cpuMpidrs: readonly bigint[];
  /** Guest RAM size; ranges come from arm64RamRanges and must be mapped in `mem`. */
  memoryBytes: number;
  psciVersion?: '0.2' | '1.0';
  /** virtio-mmio slots the caller wires on its MMIO bus; each gets a device-tree node. */
  virtioMmio?: readonly Arm64VirtioMmio[];
}

export interface Arm64BootRegs {
  pc: bigint;
  /** Physical address of the DTB; x1-x3 must be 0. */
  x0: bigint;
  pstate: bigint;
}

export interface Arm64LinuxDirectLoadResult {
  entry: number;
  kernelGpa: number;
  /** Bytes reserved for the kernel: image_size (BSS included) rounded to a page. */
  kernelSize: number;
  dtbGpa: number;
  dtbSize: number;
  initrdRange?: { start: number; end: number };
  bootRegs: Arm64BootRegs;
}

function layoutError(path: string, message: string): ConfigError {
  return new ConfigError([{ path, message }]);
}

/** Loads kernel, initrd and DTB into `mem`; throws FormatError for bad images, ConfigError when they do not fit. */
export function loadLinuxDirectArm64(mem: GuestMemory, o: Arm64LinuxDirectOptions): Arm64LinuxDirectLoadResult {
  const header = parseArm64Image(o.kernel);
  checkArm64ImageBootable(header);
  const ram = arm64RamRanges(o.memoryBytes);
  for (const r of ram) {
    if (!mem.isRam(r.gpa, r.size)) throw layoutError('memory', `guest memory does not map ram [${hex(r.gpa)}, ${hex(r.gpa + r.size)})`);
  }
  // Everything goes in the first range; arm64RamRanges always starts it at RAM_START.
  const low = ram[0]!;
  const lowEnd = low.gpa + low.size;

  const initrdStart = RAM_START + INITRD_OFFSET;
  const initrdEnd = initrdStart + (o.initrd?.length ?? 0);
  const kernelBase = alignUp(initrdEnd, KERNEL_ALIGN);
  const kernelGpa = kernelBase + header.text_offset;
  // image_size covers text, data and BSS; pre-3.17 kernels leave it 0, then
  // the file length is all we know. Never reserve less than the file itself.
  const kernelSize = alignUp(Math.max(header.image_size, o.kernel.length), PAGE_SIZE);
  const dtbGpa = alignUp(kernelGpa + kernelSize, PAGE_SIZE);

  const dtb = buildArm64DeviceTree({
    cpuMpidrs: o.cpuMpidrs,
    memory: ram,
    cmdline: o.cmdline,
    ...(o.initrd ? { initrd: { start: initrdStart, end: initrdEnd } } : {}),
    psciVersion: o.psciVersion ?? '0.2',
    ...arm64DefaultDevices(o.cpuMpidrs.length),
    ...(o.virtioMmio ? { virtioMmio: o.virtioMmio } : {}),
  });
  if (dtb.length > DTB_MAX_SIZE) throw layoutError('cpus', `device tree is ${dtb.length} bytes; booting.rst allows at most ${DTB_MAX_SIZE}`);
  const need = dtbGpa + dtb.length;
  if (need > lowEnd) {
    throw layoutError(
      'memory',
      `initrd, kernel and device tree need ram up to ${hex(need)}, but ram below the mmio gap ends at ${hex(lowEnd)}; add memory or shrink the initrd`,
    );
  }

  if (o.initrd) mem.write(initrdStart, o.initrd);
  mem.write(kernelGpa, o.kernel);
  // The kernel clears its own BSS; we zero the rest of image_size anyway (as
  // OpenVMM does) so a reboot that reuses guest RAM sees what a first boot sees.
  mem.fill(kernelGpa + o.kernel.length, kernelSize - o.kernel.length, 0);
  mem.write(dtbGpa, dtb);

  return {
    entry: kernelGpa,
    kernelGpa,
    kernelSize,
    dtbGpa,
    dtbSize: dtb.length,
    ...(o.initrd ? { initrdRange: { start: initrdStart, end: initrdEnd } } : {}),
    bootRegs: { pc: BigInt(kernelGpa), x0: BigInt(dtbGpa), pstate: ARM64_BOOT_PSTATE },
  };
}
