/**
 * The legacy devices (16550 UART, CMOS RTC, ACPI PM block, i8042 reset
 * port, PL011, debug port) under random port/MMIO accesses: any offset
 * inside and past the range, widths 1/2/4/8 and odd ones, any value,
 * mixed with host input and clock polls. Invariants, each failure naming
 * the seed that replays it (`NODEVMM_FUZZ_SEED=<seed>`): no access throws,
 * none holds the event loop over CALL_LIMIT_MS (a slow case is replayed
 * twice and fails only when slow every time), buffered
 * state stays within its bound, and a well-formed use afterwards works.
 */
import test from 'ava';
import { RecordingIrqLine, type IoDevice } from '../../../lib/devices/types';
import { Uart16550 } from '../../../lib/devices/uart16550';
import { CmosRtc, CMOS_RAM_SIZE } from '../../../lib/devices/cmos-rtc';
import { AcpiPm, ACPI_PM_BLOCK_SIZE, PM_TMR_OFFSET } from '../../../lib/devices/acpi-pm';
import { I8042Reset } from '../../../lib/devices/i8042-reset';
import { Pl011, PL011, PL011_FR } from '../../../lib/devices/pl011';
import { DebugPort } from '../../../lib/devices/debug-port';
import { CALL_LIMIT_MS, caseSeed, prng, type Rng } from './prng';

const ONLY_SEED = process.env.NODEVMM_FUZZ_SEED ? Number(process.env.NODEVMM_FUZZ_SEED) : undefined;

interface Subject {
  device: IoDevice;
  /** Bytes of the decoded range (accesses go up to twice past it). */
  span: number;
  hostEvent?(rnd: Rng): void;
  /** A bound on buffered state that was broken, or undefined. */
  overBound(): string | undefined;
  /** A well-formed use; a complaint, or undefined when it worked. */
  wellFormed(): string | undefined;
}

interface Kind {
  name: string;
  cases: number;
  seed: number;
  make(rnd: Rng): Subject;
}

function sinkRecorder() {
  const out: number[] = [];
  return { out, sink: { write: (b: Uint8Array) => void out.push(...b.subarray(Math.max(0, b.length - 16))) } };
}

const kinds: Kind[] = [
  {
    name: '16550 UART',
    cases: 2000,
    seed: 0x16550,
    make(rnd) {
      const { out, sink } = sinkRecorder();
      const rxCapacity = rnd.pick([16, 64, 4096]);
      const uart = new Uart16550({ irq: new RecordingIrqLine(), sink, rxCapacity });
      return {
        device: uart,
        span: 8,
        hostEvent: (r) => void uart.enqueue(r.bytes(r.int(r.chance(0.1) ? 10_000 : 8))),
        overBound: () => (uart.rxPending() > rxCapacity ? `RX FIFO holds ${uart.rxPending()} bytes, over ${rxCapacity}` : undefined),
        wellFormed() {
          uart.write(3, 1, 0x03); // LCR: 8N1, DLAB off
          uart.write(2, 1, 0x07); // FCR: FIFO on, both cleared
          uart.write(4, 1, 0x0b); // MCR: DTR, RTS, OUT2; no loopback
          uart.write(1, 1, 0x00); // IER
          uart.write(0, 1, 0x41);
          if (out.at(-1) !== 0x41) return `THR byte did not reach the sink (last ${out.at(-1)})`;
          uart.enqueue(Uint8Array.of(0x42));
          if (!(uart.read(5, 1) & 1)) return 'LSR.DR is clear after host input';
          const got = uart.read(0, 1);
          return got === 0x42 ? undefined : `RBR read ${got}`;
        },
      };
    },
  },
  {
    name: 'CMOS RTC',
    cases: 2000,
    seed: 0xc305,
    make() {
      const rtc = new CmosRtc({ irq: new RecordingIrqLine(), memory: { belowFourGiB: 64 << 20, aboveFourGiB: 0 } });
      return {
        device: rtc,
        span: 2,
        hostEvent: () => rtc.poll(),
        overBound: () => (Buffer.from(rtc.snapshot().ram, 'base64').length !== CMOS_RAM_SIZE ? `CMOS RAM has ${Buffer.from(rtc.snapshot().ram, 'base64').length} bytes` : undefined),
        wellFormed() {
          rtc.write(0, 1, 0x40); // a general-purpose RAM byte
          rtc.write(1, 1, 0x5a);
          rtc.write(0, 1, 0x40);
          const got = rtc.read(1, 1);
          return got === 0x5a ? undefined : `CMOS byte 0x40 reads ${got}`;
        },
      };
    },
  },
  {
    name: 'ACPI PM block',
    cases: 2000,
    seed: 0xac91,
    make() {
      let resets = 0;
      const pm = new AcpiPm({ sci: new RecordingIrqLine(), onReset: () => void resets++, onSleep: () => undefined });
      return {
        device: pm,
        span: ACPI_PM_BLOCK_SIZE,
        hostEvent: (r) => (r.chance(0.5) ? pm.pressPowerButton() : pm.raiseGpe(r.int(16))),
        overBound: () => undefined,
        wellFormed() {
          const a = pm.read(PM_TMR_OFFSET, 4);
          const b = pm.read(PM_TMR_OFFSET, 4);
          if (a > 0xff_ffff || b > 0xff_ffff) return `PM timer is wider than 24 bits (${a}, ${b})`;
          const before = resets;
          pm.write(0x33, 1, 1);
          return resets === before + 1 ? undefined : 'the reset register did not request a reset';
        },
      };
    },
  },
  {
    name: 'i8042 reset port',
    cases: 1000,
    seed: 0x8042,
    make() {
      const dev = new I8042Reset({ onReset: () => undefined });
      return {
        device: dev,
        span: 8,
        overBound: () => undefined,
        wellFormed() {
          const before = dev.resetRequests;
          dev.write(0, 1, 0xfe);
          return dev.resetRequests === before + 1 ? undefined : 'command 0xfe did not request a reset';
        },
      };
    },
  },
  {
    name: 'PL011',
    cases: 2000,
    seed: 0x011,
    make() {
      const { out, sink } = sinkRecorder();
      const uart = new Pl011('pl011', new RecordingIrqLine(), sink);
      return {
        device: uart,
        span: 0x1000,
        hostEvent: (r) => uart.pushInput(r.bytes(r.int(r.chance(0.1) ? 10_000 : 8))),
        // The FIFO bound is checked by draining it in wellFormed.
        overBound: () => undefined,
        wellFormed() {
          uart.write(PL011.CR, 4, 0x301);
          uart.write(PL011.DR, 4, 0x41);
          if (out.at(-1) !== 0x41) return `DR byte did not reach the sink (last ${out.at(-1)})`;
          let drained = 0;
          while (!(uart.read(PL011.FR, 4) & PL011_FR.RXFE)) {
            uart.read(PL011.DR, 4);
            if (++drained > 32) return 'the receive FIFO holds more than 32 bytes';
          }
          uart.pushInput(Uint8Array.of(0x42));
          const got = uart.read(PL011.DR, 4) & 0xff;
          return got === 0x42 ? undefined : `DR read ${got}`;
        },
      };
    },
  },
  {
    name: 'debug port',
    cases: 1000,
    seed: 0xdeb,
    make() {
      const port = new DebugPort({ onCode: () => undefined });
      return {
        device: port,
        span: 1,
        overBound: () => undefined,
        wellFormed() {
          port.write(0, 1, 0x80);
          return port.lastCode === 0x80 ? undefined : `last code ${port.lastCode}`;
        },
      };
    },
  },
];

function runCase(kind: Kind, seed: number): { failure?: string; slowest: number } {
  const rnd = prng(seed);
  let slowest = 0;
  let s: Subject;
  try {
    s = kind.make(rnd);
  } catch (e) {
    return { failure: `building the device threw ${(e as Error).message}`, slowest };
  }
  const timed = (what: string, fn: () => unknown): string | undefined => {
    const t0 = performance.now();
    try {
      fn();
    } catch (e) {
      return `${what} threw ${(e as Error)?.name}: ${(e as Error)?.message}`;
    }
    slowest = Math.max(slowest, performance.now() - t0);
    return undefined;
  };
  const steps = 1 + rnd.int(64);
  for (let i = 0; i < steps; i++) {
    const offset = rnd.chance(0.9) ? rnd.int(2 * s.span) : rnd.pick([-1, 2 ** 32, rnd.int(2 ** 32)]);
    const size = rnd.chance(0.9) ? rnd.pick([1, 1, 2, 4, 8]) : rnd.pick([0, 3, 16]);
    const value = rnd.chance(0.5) ? rnd.int(256) : rnd.pick([0, 0xff, 0xffff, 0xffff_ffff, rnd.int(2 ** 32), -1]);
    const k = rnd();
    const failure =
      k < 0.5
        ? timed(`write ${offset}/${size}=${value}`, () => s.device.write(offset, size, value))
        : k < 0.9
          ? timed(`read ${offset}/${size}`, () => s.device.read(offset, size))
          : timed('host event', () => s.hostEvent?.(rnd));
    if (failure) return { failure, slowest };
    const over = s.overBound();
    if (over) return { failure: over, slowest };
  }
  let complaint: string | undefined;
  const failure = timed('well-formed use', () => (complaint = s.wellFormed()));
  if (failure) return { failure, slowest };
  if (complaint) return { failure: `a well-formed use failed afterwards: ${complaint}`, slowest };
  return { slowest };
}

for (const kind of kinds) {
  test(`${kind.name}: random accesses never throw or stall, buffers stay bounded, and the device still works`, (t) => {
    const seeds = ONLY_SEED !== undefined ? [ONLY_SEED] : Array.from({ length: kind.cases }, (_, i) => caseSeed(kind.seed, i));
    let slowest = 0;
    for (const seed of seeds) {
      let r = runCase(kind, seed);
      // Slow in each of 3 runs, or it was the machine (see virtio.test.ts).
      for (let attempt = 1; !r.failure && r.slowest > CALL_LIMIT_MS; attempt++) {
        if (attempt === 3) {
          r = { ...r, failure: `an access took ${r.slowest.toFixed(1)} ms in each of 3 runs` };
          break;
        }
        r = runCase(kind, seed);
      }
      if (r.failure) return t.fail(`${kind.name}: case with seed ${seed} (replay: NODEVMM_FUZZ_SEED=${seed}): ${r.failure}`);
      slowest = Math.max(slowest, r.slowest);
    }
    t.log(`${kind.name}: ${seeds.length} cases, slowest access ${slowest.toFixed(2)} ms`);
    t.pass();
  });
}
