/**
 * The x86_64 Linux Direct machine, built by one linear recipe (Firecracker's
 * build_microvm_for_boot): partition → RAM → ACPI → kernel/initrd/zero page
 * → devices → vCPU state. Every phase is timed. The chipset mirrors
 * OpenVMM's UnenlightenedLinuxDirect: LAPIC/IOAPIC/PIC/PIT in the hypervisor
 * (irqchip 'kernel') or LAPICs in the hypervisor and the IOAPIC and PIT as
 * TypeScript models, no 8259 (irqchip 'userspace'), ACPI PM block at 0x400
 * (SCI 9), CMOS RTC, 16550 UARTs COM1-COM4, port 0x80; no PCI. Addresses
 * come from lib/arch/x86_64/layout.ts.
 */
import { buildX86AcpiTables, type X86AcpiTables } from '../acpi/x86-tables';
import { ACPI_PLATFORM, CMOS_RTC, COM_RESOURCES, I8042_COMMAND_PORT, IOAPIC, IOAPIC_PINS, IOAPIC_SIZE, KVM_IDENTITY_MAP_START, KVM_TSS_START, PIT_PORT, PIT_ROUTE, PM_BASE, POST_PORT, SCI_IRQ, SYSTEM_CONTROL_PORT_B, ramAroundFourGiB, ramRangesFor } from '../arch/x86_64/layout';
import { AcpiPm, ACPI_PM_BLOCK_SIZE } from '../devices/acpi-pm';
import { CMOS_INDEX_OFFSET, CmosRtc } from '../devices/cmos-rtc';
import { I8042Reset } from '../devices/i8042-reset';
import { BatchingSink } from '../devices/serial-sinks';
import { Uart16550 } from '../devices/uart16550';
import { Pit, PIT_PORT_COUNT } from '../devices/irqchip/i8254';
import { Ioapic, REDIR_MASK_BIT, REDIR_REMOTE_IRR_BIT, REDIR_TRIGGER_LEVEL_BIT } from '../devices/irqchip/ioapic';
import { NodevmmError } from '../errors';
import { openHypervisor } from '../hv/hypervisor';
import type { X86Irqchip, X86Partition } from '../hv/partition';
import type { X86CpuidEntry, X86PartitionState, X86VcpuInitState } from '../hv/x86-state';
import { SnapshotError } from '../errors';
import { cpuIncompatibility } from '../snapshot/cpu-compat';
import { loadLinuxDirectX86, type LinuxDirectX86Result } from '../loader/linux-direct';
import { alignUp, GiB } from '../util/bytes';
import type { ComPort, ResolvedVmConfig } from './config';
import { IrqLines } from './irq-lines';
import { ShadowedUart, uartRegistration } from './shadowed-uart';
import { attachPartitionVirtio, virtioSlots, type AttachedVirtio } from './virtio-devices';
import { assertVcpusStill, DEFAULT_QUIESCE_MS, phaseTimer, type BootImages, type Machine, type MachineHooks } from './machine';
import { StateReader } from '../devices/device-state';

export type { BootImages, MachineHooks } from './machine';

/** The COM ports the config turns on, in COM1-COM4 order. */
export function enabledComPorts(cfg: Pick<ResolvedVmConfig, 'serial'>): ComPort[] {
  return (Object.keys(COM_RESOURCES) as ComPort[]).filter((c) => cfg.serial[c]);
}
export interface X86Machine extends Machine {
  readonly partition: X86Partition;
  pm: AcpiPm;
  rtc: CmosRtc;
  uarts: Partial<Record<ComPort, Uart16550>>;
  acpi: X86AcpiTables;
  boot: LinuxDirectX86Result | undefined;
}

function physAddrBits(): number {
  const leaf = openHypervisor().supportedCpuid().find((e) => e.function === 0x80000008);
  const bits = leaf ? leaf.eax & 0xff : 36;
  return bits >= 32 && bits <= 52 ? bits : 36;
}

/**
 * Build the machine from a snapshot instead of a boot: RAM is the
 * snapshot's files mapped copy-on-write (no tables or kernel written), and
 * the partition gets the saved hypervisor state where a boot would set the
 * BSP's registers. The caller then restores the device models' state.
 */
export interface X86MachineRestore {
  /** An open fd of each RAM region's file, in ramRangesFor(cfg.memory) order (the caller closes them after the build). */
  ramFds: readonly number[];
  hypervisor: X86PartitionState;
  /** The CPUID the snapshotted guest saw (vCPU 0): this host must offer all of it. */
  guestCpuid?: readonly X86CpuidEntry[] | undefined;
}

export function buildX86Machine(cfg: ResolvedVmConfig, images: BootImages | undefined, hooks: MachineHooks, loadOther?: (p: X86Partition, acpi: X86AcpiTables) => X86VcpuInitState, restore?: X86MachineRestore): X86Machine {
  const { timings, phase } = phaseTimer();

  // 1. Partition and vCPUs, with the interrupt controllers where the config (or the hypervisor) puts them.
  const spin = cfg.dispatchSpinUs !== undefined ? { dispatchSpinUs: cfg.dispatchSpinUs } : {};
  const hv = openHypervisor();
  const irqchip = chooseIrqchip(cfg.irqchip, hv.x86Irqchips(), hv.name);
  // 2. RAM below the MMIO gap and above 4 GiB, mapped as the partition is made (X86PartitionOptions.ram: cheaper so on KVM).
  // Computed once here; the loader (E820, boot page tables) and the CMOS take them from here.
  const ram = ramRangesFor(cfg.memory);
  // Shared (a memfd) only where virtiofsd must map it: anonymous RAM gets transparent huge pages.
  const backing = (i: number) => (restore ? { privateFile: restore.ramFds[i]! } : { shared: cfg.shares.length > 0 });
  const ramOptions = ram.map((r, i) => ({ gpa: r.gpa, size: r.size, name: r.gpa < 4 * GiB ? 'ram-low' : 'ram-high', ...backing(i) }));
  const partition = hv.createX86Partition({ vcpus: cfg.vcpus, tssAddress: KVM_TSS_START, identityMapAddress: KVM_IDENTITY_MAP_START, irqchip, ram: ramOptions, ...spin });
  const sinks: BatchingSink[] = [];
  let virtio: AttachedVirtio | undefined;
  let pit: Pit | undefined;
  let ioapic: Ioapic | undefined;
  try {
    if (restore?.guestCpuid) {
      const why = cpuIncompatibility(restore.guestCpuid, partition.vcpus[0]!.getCpuid());
      if (why) throw new SnapshotError(`${why}: restore the snapshot on a host with the same cpu`, { field: 'guestCpuid' });
    }
    phase('partition');

    // 3. ACPI tables: they only depend on the machine shape.
    const ports = enabledComPorts(cfg);
    const slots = virtioSlots(cfg);
    const acpi = buildX86AcpiTables({
      vcpus: cfg.vcpus,
      serialPorts: ports.map((c) => ({ name: c.toUpperCase(), port: COM_RESOURCES[c].port, irq: COM_RESOURCES[c].irq })),
      virtioMmio: slots,
      ...ACPI_PLATFORM,
      // With the userspace irqchip there is no 8259: only the IOAPIC takes ISA interrupts.
      legacyPic: irqchip === 'kernel',
    });
    // A restored guest's RAM holds the tables it booted with (and may have reclaimed their pages since).
    if (!restore) {
      partition.memory.write(acpi.tablesGpa, acpi.blob);
      partition.memory.write(acpi.rsdpGpa, acpi.rsdp);
    }
    phase('acpi');

    // 4. Kernel, initrd, command line, zero page / start_info, GDT, page tables.
    let boot: LinuxDirectX86Result | undefined;
    let bsp: X86VcpuInitState = {};
    let apMsrs: LinuxDirectX86Result['apMsrs'] = [];
    if (restore) {
      // Nothing to load: the kernel is in the snapshot's RAM.
    } else if (images) {
      boot = loadLinuxDirectX86(partition.memory, {
        kernel: images.kernel,
        initrd: images.initrd,
        cmdline: cfg.cmdline,
        protocol: cfg.boot,
        ramRanges: ram,
        acpi: { rsdpGpa: acpi.rsdpGpa },
        acpiRange: { gpa: acpi.tablesGpa, size: alignUp(acpi.blob.length, 4096) },
        physAddrBits: physAddrBits(),
      });
      bsp = boot.bsp;
      apMsrs = boot.apMsrs;
    } else if (loadOther) {
      bsp = loadOther(partition, acpi);
    } else {
      throw new Error('buildX86Machine needs boot images or a loader');
    }
    phase('load');

    // 5. Devices, the userspace interrupt controllers first (every line goes through them).
    let setLine = (irq: number, level: boolean) => partition.setIrqLine(irq, level);
    if (irqchip === 'userspace') {
      const bus = partition.localApicBus;
      if (!bus) throw new NodevmmError('ERR_IRQCHIP', `the ${hv.name} partition offers no local APIC bus for the userspace irqchip`);
      const chip = new Ioapic({ id: IOAPIC.id, pins: IOAPIC_PINS, deliver: (m) => bus.signalMsi(m), onRoutesChanged: (r) => bus.setPinRoutes(r) });
      ioapic = chip;
      bus.onEoi((vector) => chip.eoi(vector));
      partition.mmio.register(IOAPIC.address, IOAPIC_SIZE, chip);
      // ISA IRQ -> GSI as the MADT's interrupt source override says: the PIT's IRQ0 is pin 2, the rest are identity.
      setLine = (irq, level) => chip.setLevel(irq === PIT_ROUTE.irq ? PIT_ROUTE.gsi : irq, level);
    }
    const irqs = new IrqLines((irq, level) => setLine(irq, level));
    if (irqchip === 'userspace') {
      pit = new Pit({ irq0: irqs.line(PIT_ROUTE.irq) });
      partition.pio.register(PIT_PORT, PIT_PORT_COUNT, pit);
      partition.pio.register(SYSTEM_CONTROL_PORT_B, 1, pit.systemControlPort());
    }
    const uarts: Partial<Record<ComPort, Uart16550>> = {};
    const shadowedUarts: ShadowedUart[] = [];
    for (const c of ports) {
      const port = hooks.serial[c];
      const sink = new BatchingSink((chunk: Uint8Array) => port?.deliver(chunk));
      sinks.push(sink);
      const uart = new Uart16550({ name: c, irq: irqs.line(COM_RESOURCES[c].irq), sink, onRxSpace: () => port?.rxSpace() });
      const postIer = cfg.vcpus === 1;
      const s = new ShadowedUart(uart, postIer);
      s.shadow = partition.pio.register(COM_RESOURCES[c].port, 8, s, uartRegistration(postIer)).shadow;
      s.resync();
      shadowedUarts.push(s);
      port?.attach({ enqueue: (b) => s.enqueue(b) });
      uarts[c] = uart;
    }
    const pm = new AcpiPm({
      sci: irqs.line(SCI_IRQ),
      onSleep: (slpTyp) => {
        // Our DSDT's \_S5 is {0, 0}: SLP_TYP 0 is soft-off. Other states are not offered.
        if (slpTyp === 0) hooks.onPowerOff();
      },
      onReset: () => hooks.onReset(),
    });
    partition.pio.register(PM_BASE, ACPI_PM_BLOCK_SIZE, pm);
    const rtc = new CmosRtc({ irq: irqs.line(CMOS_RTC.irq), memory: ramAroundFourGiB(ram) });
    // The index port's writes are posted: what one selects matters only to the next data-port
    // access, which goes to JS after every write posted before it (Linux's RTC reads select
    // an index before each data byte: ~70 writes a boot the vCPU no longer waits for).
    partition.pio.register(CMOS_RTC.port, 2, rtc, { posted: [CMOS_INDEX_OFFSET] }).shadow?.enable(false, true);
    // Linux's outb_p() delays by writing port 0x80: answer it on the vCPU thread.
    partition.pio.registerConstant(POST_PORT, 1, 'post-code', 0xff);
    partition.pio.register(I8042_COMMAND_PORT, 1, new I8042Reset({ onReset: () => hooks.onReset() }));
    virtio = attachPartitionVirtio(cfg, slots, partition, (gsi) => irqs.line(gsi), hooks);
    phase('devices');

    // 6. vCPU state: the BSP enters the kernel; APs wait for INIT/SIPI in the in-kernel LAPIC.
    // Restored: every vCPU, the interrupt controllers, the PIT and the clock as they were saved.
    if (restore) {
      partition.restoreState(restore.hypervisor);
    } else {
      const v0 = partition.vcpus[0]!;
      if (bsp.sregs) v0.setSregs(bsp.sregs);
      if (bsp.regs) v0.setRegs(bsp.regs);
      if (bsp.msrs?.length) v0.setMsrs(bsp.msrs);
      for (const v of partition.vcpus.slice(1)) if (apMsrs.length) v.setMsrs(apMsrs);
    }
    phase('vcpus');

    return {
      partition,
      pm,
      rtc,
      uarts,
      acpi,
      boot,
      virtio,
      timings,
      pressPowerButton: () => pm.pressPowerButton(),
      describeVcpus: () => describeX86Vcpus(partition),
      describeInterrupts: () => (ioapic ? [describeIoapic(ioapic)] : []),
      describeSerial: () =>
        Object.entries(uarts).map(([name, u]) => {
          const s = u!.snapshot();
          return `${name} ier ${hex(s.ier)} lcr ${hex(s.lcr)} mcr ${hex(s.mcr)} thre-pending ${s.threPending} rx ${u!.rxPending()}${s.rxBlocked ? ' (host waiting)' : ''} irq ${u!.irqAsserted() ? 'high' : 'low'}`;
        }),
      flush: () => {
        sinks.forEach((s) => s.flush());
        virtio!.flush();
      },
      quiesceDevices: async (timeoutMs = DEFAULT_QUIESCE_MS) => {
        sinks.forEach((s) => s.flush());
        await virtio!.quiesce(timeoutMs);
      },
      snapshotDevices: () => {
        assertVcpusStill(partition, 'a device snapshot');
        // Guest output the UARTs took goes out before the state that follows it.
        sinks.forEach((s) => s.flush());
        const serial: Record<string, unknown> = {};
        for (const c of ports) serial[c] = uarts[c]!.snapshot();
        // No state: the POST port reads a constant, and the i8042 answers status 0 and acts only on the reset command.
        return { arch: 'x86_64', serial, pm: pm.snapshot(), rtc: rtc.snapshot(), virtio: virtio!.snapshot() };
      },
      restoreDevices: (state: Record<string, unknown>) => {
        assertVcpusStill(partition, 'a device restore');
        const r = new StateReader('', state);
        r.oneOf('arch', ['x86_64']);
        const serial = r.child('serial');
        for (const k of serial.keys()) if (!(ports as readonly string[]).includes(k)) throw serial.error(k, 'the snapshot has this port, this machine does not');
        for (const c of ports) if (!serial.has(c)) throw serial.error(c, 'is missing: this machine has the port, the snapshot does not');
        const serialStates = ports.map((c) => serial.raw(c));
        serial.done();
        const pmState = r.raw('pm');
        const rtcState = r.raw('rtc');
        const virtioState = r.raw('virtio');
        r.done();
        ports.forEach((c, i) => uarts[c]!.restoreState(serialStates[i], c));
        // The native register shadows answer the guest's polling: they must show the restored registers.
        for (const s of shadowedUarts) s.resync();
        pm.restoreState(pmState, 'pm');
        rtc.restoreState(rtcState, 'rtc');
        virtio!.restore(virtioState, 'virtio');
      },
      dispose: () => {
        pit?.dispose();
        for (const s of sinks) s.flush();
        virtio!.dispose();
        for (const c of ports) hooks.serial[c]?.attach(undefined);
        partition.destroy();
      },
    };
  } catch (e) {
    pit?.dispose();
    virtio?.dispose();
    partition.destroy();
    throw e;
  }
}

/** The config's irqchip if this hypervisor offers it (one sentence if not), else the hypervisor's first choice. */
export function chooseIrqchip(wanted: X86Irqchip | undefined, offered: readonly X86Irqchip[], hvName: string): X86Irqchip {
  if (wanted === undefined) return offered[0] ?? 'kernel';
  if (!offered.includes(wanted)) {
    throw new NodevmmError('ERR_CONFIG', `irqchip '${wanted}' is not available on this host's ${hvName} (it offers ${offered.map((o) => `'${o}'`).join(', ')})`);
  }
  return wanted;
}

const hex = (v: bigint | number) => `0x${v.toString(16)}`;

/** The userspace IOAPIC's pins that say why an interrupt did or did not arrive: asserted, pending, unmasked (vector), awaiting EOI. */
export function describeIoapic(ioapic: Ioapic): string {
  const s = ioapic.snapshot();
  const pins = (mask: number) => (mask ? [...Array(ioapic.pins).keys()].filter((p) => mask & (1 << p)).join(',') : '-');
  const unmasked = s.redirection.flatMap(([lo], pin) => (lo & REDIR_MASK_BIT ? [] : [`${pin}:${hex(lo & 0xff)}${lo & REDIR_TRIGGER_LEVEL_BIT ? 'L' : 'E'}`]));
  const waiting = s.redirection.flatMap(([lo], pin) => (lo & REDIR_REMOTE_IRR_BIT ? [pin] : []));
  return `ioapic asserted ${pins(s.levels)} pending ${pins(s.irr)} unmasked ${unmasked.join(',') || '-'} awaiting-eoi ${waiting.join(',') || '-'}`;
}

/** Each vCPU's RIP, RFLAGS, MP state and LAPIC, and the exit it waits on JS for. */
function describeX86Vcpus(p: X86Partition): string[] {
  return p.vcpus.map((v) => {
    const ex = v.pendingExit();
    const waiting = ex ? ` waiting for JS on ${ex.kind} ${ex.write ? 'write' : 'read'}${ex.size} at ${hex(ex.address)}` : '';
    // A vCPU still in its run call holds its mutex: reading its registers would block this thread.
    if (v.state === 'running') return `vcpu${v.index}${waiting} (still running, registers not read)`;
    try {
      const r = v.getRegs();
      return `vcpu${v.index}${waiting} rip ${hex(r.rip)} rsp ${hex(r.rsp)} rflags ${hex(r.rflags)} mp_state ${v.getMpState()} ${describeLapic(v.getLapic())}`;
    } catch (e) {
      return `vcpu${v.index}${waiting} (${(e as Error).message})`;
    }
  });
}

/**
 * The LAPIC state that says why a vCPU waits: the highest vector in service
 * and requested, and the timer (mode, initial and current count). From the
 * kvm_lapic_state register page (Intel SDM vol. 3, table 11-1).
 */
function describeLapic(page: Uint8Array): string {
  const dv = new DataView(page.buffer, page.byteOffset, page.byteLength);
  const reg = (off: number) => dv.getUint32(off, true);
  const highest = (base: number) => {
    for (let i = 7; i >= 0; i--) {
      const w = reg(base + i * 16);
      if (w) return `0x${(i * 32 + 31 - Math.clz32(w)).toString(16)}`;
    }
    return '-';
  };
  const lvtt = reg(0x320);
  const mode = ['oneshot', 'periodic', 'deadline', 'reserved'][(lvtt >>> 17) & 3];
  return `lapic isr ${highest(0x100)} irr ${highest(0x200)} tpr 0x${reg(0x80).toString(16)} timer ${mode}${lvtt & 0x10000 ? ' masked' : ''} vector 0x${(lvtt & 0xff).toString(16)} init ${reg(0x380)} cur ${reg(0x390)}`;
}
