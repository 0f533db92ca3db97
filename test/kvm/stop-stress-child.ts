/**
 * Child process of 60-stop-protocol.test.ts: creates two-vCPU VMs and
 * destroys them at random moments, round after round, printing one line per
 * finished round. A stop that hangs blocks this process's only thread inside
 * the native Join(), where no JS timer can fire, so the parent watches the
 * lines and kills us when one is late.
 *
 *   node stop-stress-child.js <mode> <rounds> <seed>
 *   mode: timer   destroy from a timer or an immediate, while both vCPUs exit
 *         device  destroy from vCPU 1's device handler, while vCPU 0 waits for its answer
 *         throw   vCPU 1's device handler throws (the host-error path stops the vCPUs), then destroy
 *         rep     vCPU 0 runs `rep insb` (a string of port reads in one exit), destroyed from a timer
 *
 * vCPU 0 loops on `in al, dx` from a port a TypeScript device answers; vCPU 1
 * loops on `out dx, al` to another (device and throw modes) or spins in the
 * guest (timer and rep modes).
 */
import { KvmPartition } from '../../lib/hv/kvm-partition';
import { setupRealMode } from '../../lib/testing/tiny-guests';
import { MiB } from '../../lib/util/bytes';

const [mode = 'timer', roundsArg = '100', seedArg = '1'] = process.argv.slice(2);
const rounds = Number(roundsArg);
let seed = Number(seedArg) >>> 0 || 1;
/** xorshift32: the same seed replays the same moments. */
function random(): number {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed / 0x100000000;
}

const IN_PORT = 0x600;
const OUT_PORT = 0x601;
// mov dx, 0x600; L: in al, dx; jmp L
const inLoop = [0xba, IN_PORT & 0xff, IN_PORT >> 8, 0xec, 0xeb, 0xfd];
// mov dx, 0x600; mov di, 0x2000; L: mov cx, 64; rep insb; jmp L  (es:di walks up from 0x2000, 64 KiB at most)
const repInLoop = [0xba, IN_PORT & 0xff, IN_PORT >> 8, 0xbf, 0x00, 0x20, 0xb9, 0x40, 0x00, 0xf3, 0x6c, 0xeb, 0xf9];
// mov dx, 0x601; L: out dx, al; inc al; jmp L
const outLoop = [0xba, OUT_PORT & 0xff, OUT_PORT >> 8, 0xee, 0xfe, 0xc0, 0xeb, 0xfb];
// L: jmp L
const spin = [0xeb, 0xfe];

let totalReads = 0;
let totalWrites = 0;
let stops = 0;

function round(): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = new KvmPartition({ vcpus: 2, irqchip: false });
    p.addRam({ gpa: 0, size: 2 * MiB });
    let reads = 0;
    let writes = 0;
    p.on('vcpu-stop', () => stops++);
    const finish = () => {
      p.destroy();
      totalReads += reads;
      totalWrites += writes;
      resolve();
    };
    // Destroy after a random number of answered exits (0-31): somewhere in the first few hundred microseconds.
    const target = Math.floor(random() * 32);
    p.pio.register(IN_PORT, 1, { name: 'answer', read: () => ++reads & 0xff, write: () => {} });
    p.pio.register(OUT_PORT, 1, {
      name: 'sink',
      read: () => 0,
      write: () => {
        if (++writes < target) return;
        if (mode === 'device') finish();
        else if (mode === 'throw') throw new Error('device fault injected by the stop stress test');
      },
    });
    setupRealMode(p, mode === 'rep' ? repInLoop : inLoop, 0x1000, 0);
    setupRealMode(p, mode === 'device' || mode === 'throw' ? outLoop : spin, 0x1800, 1);
    if (mode === 'throw') {
      // The host-error path has stopped (and joined) the vCPUs; destroy now, or a moment later.
      p.once('vcpu-stop', () => (random() < 0.5 ? finish() : setImmediate(finish)));
    }
    p.start();
    if (mode === 'timer' || mode === 'rep') {
      const r = random();
      if (r < 0.25) setImmediate(finish);
      else if (r < 0.5) queueMicrotask(finish);
      else setTimeout(finish, Math.floor(random() * 3));
    }
    setTimeout(() => reject(new Error(`round never destroyed its vm (mode ${mode}, ${reads} reads, ${writes} writes)`)), 10_000).unref();
  });
}

async function main(): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    await round();
    process.stdout.write(`round ${i}\n`);
  }
  // The parent checks the guests really made the device exits the modes are about.
  process.stdout.write(`done reads ${totalReads} writes ${totalWrites} stops ${stops}\n`);
}

main().catch((e: Error) => {
  process.stdout.write(`error ${e.message}\n`);
  process.exitCode = 1;
});
