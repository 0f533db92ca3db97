#!/usr/bin/env node
'use strict';
/**
 * virtio device benchmarks: nodevmm against QEMU's virtio-mmio (microvm) in the
 * same run, same kernel, same initramfs, same image, interleaved, medians and
 * ratios. Needs a real KVM: where /dev/kvm is KVM-PVM run it through the
 * emulated host,
 *
 *   node scripts/kvm-host.js --timeout 1800 -- node scripts/bench-virtio.js blk [--runs N] [--mib N] [--warmup-mib N] [--only nodevmm|qemu] [--trace] [--verbose]
 *
 * blk: one raw image (in the host's page cache, the same file for both VMMs,
 * QEMU with its defaults: cache=writeback, aio=threads), and in the guest
 *   - sequential read:  dd if=/dev/vda of=/dev/null bs=1M iflag=direct
 *   - sequential write: dd if=/dev/zero of=/dev/vda bs=1M oflag=direct conv=fsync
 *   - 4 KiB random reads, O_DIRECT, for 4 s at queue depth 1 (pread) and for
 *     4 s at queue depth 16 (Linux native AIO) (scripts/bench/randread.c,
 *     built static here and put in the initramfs).
 * Each figure is printed as the min / median / max over the runs, with the
 * ratio of the medians and the ratio each run had against its QEMU twin.
 * The guest times dd with /proc/uptime (10 ms resolution; each dd runs for
 * seconds). Before the timed passes, an untimed-for-the-ratio warm-up reads
 * and writes `--warmup-mib` MiB (default 64; 0 for none), as fio's ramp_time
 * does: nodevmm's device code is JIT-compiled JavaScript, and under the
 * emulated host its first few dozen requests run in V8's interpreter at
 * 5-40 ms each. The warm-up passes are timed too and printed as "cold" rows,
 * so the cost of the warm-up stays visible.
 *
 *   node scripts/kvm-host.js --timeout 1800 -- node scripts/bench-virtio.js net [--runs N] [--mib N] [--to-guest-mib N] [--only nodevmm|qemu]
 *
 * net: TCP throughput both ways. The script makes a network namespace with a
 * persistent TAP (10.0.2.1/24) and runs both VMMs and a Node peer inside it.
 * Guest to host: the guest pipes N MiB of zeros through busybox nc to the
 * peer, which times first byte to last. Host to guest: the guest listens
 * with busybox nc (output to /dev/null), the peer connects, sends N MiB and
 * half-closes, and times its connect to the guest's close (nc closes once it
 * has read everything); --to-guest-mib sets that amount apart (default
 * --mib). Each run also prints the guest's NIC interrupts after each pass,
 * the frames it received host to guest and its vCPU's busy share over that
 * pass. QEMU: -netdev tap (vnet_hdr) with virtio-net-device.
 * Needs root (ip netns, ip tuntap).
 *
 *   node scripts/kvm-host.js --timeout 1800 -- node scripts/bench-virtio.js passt [--runs N] [--mib N]
 *
 * passt: TCP throughput both ways through passt, nodevmm (--net user)
 * against QEMU (-netdev stream to the same passt binary with the same
 * arguments), with nodevmm's TAP path as a third column (passtBench).
 *
 *   node scripts/kvm-host.js --timeout 1800 -- node scripts/bench-virtio.js fs [--runs N] [--mib N]
 *
 * fs: virtio-fs through the same virtiofsd binary for both VMMs, started the
 * same way (lib/vm/virtiofs.ts's command line; nodevmm starts its own with
 * --share, for QEMU this script starts one on a socket). QEMU: microvm with
 * guest RAM on a shared memfd backend and vhost-user-fs-device (virtio-mmio,
 * modern: microvm's legacy default is refused by libvhost-user).
 * In the guest, on the mounted share: sequential write, dd bs=1M of N MiB with
 * conv=fsync; then, after dropping the guest's page cache, sequential read of
 * an N MiB file the host wrote (in the host's page cache).
 */
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const { args, flag, numberOption, stringOption } = require('./lib/options');
const mode = args[0];
const RUNS = numberOption('--runs', mode === 'blk' ? 5 : 3);
/** `--only nodevmm|qemu`: measure one VMM (no ratio); `--trace`: nodevmm prints where its exits went. */
const ONLY = stringOption('--only');
const TRACE = flag('--trace');
/** `--verbose`: every VM's console as it comes (to see where a run that never finishes stopped). */
const VERBOSE = flag('--verbose');
/** Extra node flags for the nodevmm process (e.g. NODEVMM_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'). */
const NODE_ARGS = (process.env.NODEVMM_BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
const MIB = numberOption('--mib', mode === 'net' || mode === 'passt' ? 4 : 256);
const WARMUP_MIB = numberOption('--warmup-mib', 64);
/** net: MiB sent host to guest (default --mib); that direction is ~10x faster, so a longer pass steadies it. */
const TO_GUEST_MIB = numberOption('--to-guest-mib', MIB);
/** nodevmm's serial ports as QEMU's command line has them: COM1 on stdio, no COM2-COM4. */
const ONE_UART = ['--com1', 'stdio', '--com2', 'none', '--com3', 'none', '--com4', 'none'];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * A printer of one figure per row: min / median / max for each VMM, the ratio
 * of the medians, and each run's ratio against the QEMU run beside it (runs
 * are interleaved, so run i of each met the same host conditions).
 */
function spreadLine(rows, only, digits, names = ['nodevmm', 'qemu']) {
  const [first, second] = names;
  const spread = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return `${s[0].toFixed(digits)} / ${median(s).toFixed(digits)} / ${s[s.length - 1].toFixed(digits)}`;
  };
  return (name, f, unit) => {
    if (only) return console.log(`  ${name.padEnd(34)} ${only} ${spread(rows[only].map(f))} ${unit}`);
    const n = rows[first].map(f);
    const q = rows[second].map(f);
    const pairs = n.slice(0, q.length).map((v, i) => (v / q[i]).toFixed(2)).join(' ');
    console.log(`  ${name.padEnd(34)} ${first} ${spread(n)}   ${second} ${spread(q)} ${unit}   ratio ${(median(n) / median(q)).toFixed(2)}x (per run: ${pairs})`);
  };
}

/** Run a VMM to its exit; resolve with the guest's GUEST-KEY=value markers. */
function run(cmd, argv, timeoutMs, onOutput) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const on = (d) => {
      out += d;
      if (VERBOSE) process.stderr.write(d);
      onOutput?.(out);
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (status) => {
      clearTimeout(timer);
      const markers = {};
      for (const m of out.replace(/\r/g, '').matchAll(/^GUEST-([A-Z0-9-]+)=(.*)$/gm)) markers[m[1]] = m[2];
      for (const m of out.matchAll(/^nodevmm: (build phases|exits answered in JS).*$/gm)) console.log(`  ${m[0]}`);
      if (!('BENCH-DONE' in markers)) return reject(new Error(`${path.basename(cmd)} exited ${status} before the benchmark finished; output tail:\n${out.slice(-1500)}`));
      resolve(markers);
    });
  });
}

async function blk() {
  const { ensureGuestArtifacts, GUEST_MODULES } = require('../dist/lib/testing/artifacts');
  const { buildTestInitramfs } = require('../dist/lib/initramfs/initramfs');
  const a = await ensureGuestArtifacts({ arch: 'x86_64' });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-bench-virtio-'));
  try {
    const randread = path.join(dir, 'randread');
    const cc = spawnSync('gcc', ['-static', '-O2', '-o', randread, path.join(__dirname, 'bench', 'randread.c')], { encoding: 'utf8' });
    if (cc.status !== 0) throw new Error(`gcc -static failed (apt-get install gcc libc6-dev): ${cc.stderr || cc.error}`);
    const modules = GUEST_MODULES.map((name) => ({ name, data: new Uint8Array(fs.readFileSync(path.join(a.modulesDir, `${name}.ko`))) }));
    const initrd = path.join(dir, 'initrd.cpio.gz');
    fs.writeFileSync(initrd, buildTestInitramfs({ busybox: new Uint8Array(fs.readFileSync(a.busybox)), modules, extraFiles: [{ path: '/bin/randread', data: new Uint8Array(fs.readFileSync(randread)), mode: 0o755 }] }));
    const image = path.join(dir, 'disk.img');
    // Written, not sparse, so both VMMs read the same cached pages.
    fs.writeFileSync(image, Buffer.alloc(MIB * 2 ** 20, 0xa5));
    const script = [
      'i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done',
      'up() { read -r u _ </proc/uptime; echo $u; }',
      ...(WARMUP_MIB > 0
        ? [
            `a=$(up); dd if=/dev/vda of=/dev/null bs=1M count=${WARMUP_MIB} iflag=direct 2>/dev/null; b=$(up); echo "GUEST-WARMREAD-S=$a $b"`,
            `a=$(up); dd if=/dev/zero of=/dev/vda bs=1M count=${WARMUP_MIB} oflag=direct conv=fsync 2>/dev/null; b=$(up); echo "GUEST-WARMWRITE-S=$a $b"`,
          ]
        : []),
      `a=$(up); dd if=/dev/vda of=/dev/null bs=1M count=${MIB} iflag=direct 2>/dev/null; b=$(up); echo "GUEST-SEQREAD-S=$a $b"`,
      `a=$(up); dd if=/dev/zero of=/dev/vda bs=1M count=${MIB} oflag=direct conv=fsync 2>/dev/null; b=$(up); echo "GUEST-SEQWRITE-S=$a $b"`,
      '/bin/randread /dev/vda 4',
      '/bin/randread /dev/vda 4 16',
      'echo GUEST-BENCH-DONE=1',
    ].join('\n');
    const cmdline = `console=ttyS0 panic=-1 nodevmm.cmd=${Buffer.from(script).toString('base64')}`;
    const vmms = {
      nodevmm: () => run(process.execPath, [...NODE_ARGS, path.join(root, 'bin', 'nodevmm.js'), 'run', '--kernel', a.vmlinuz, '--initrd', initrd, '--no-default-cmdline', '--cmdline', cmdline, '-m', '512M', '-p', '1', ...ONE_UART, '--disk', image, ...(TRACE ? ['--trace'] : [])], 300_000),
      qemu: () => run('qemu-system-x86_64', ['-M', 'microvm', '-accel', 'kvm', '-cpu', 'host', '-m', '512M', '-smp', '1', '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-no-reboot', '-kernel', a.vmlinuz, '-initrd', initrd, '-append', cmdline, '-drive', `id=d0,file=${image},format=raw,if=none`, '-device', 'virtio-blk-device,drive=d0'], 300_000),
    };
    const rows = { nodevmm: [], qemu: [] };
    const failures = { nodevmm: 0, qemu: 0 };
    for (let i = 0; i < RUNS; i++) {
      for (const who of ONLY ? [ONLY] : ['nodevmm', 'qemu']) {
        for (let tries = 0; ; tries++) {
          try {
            const m = await vmms[who]();
            const secs = (k) => {
              const [s, e] = (m[k] ?? '').split(' ').map(Number);
              return e - s;
            };
            rows[who].push({
              read: MIB / secs('SEQREAD-S'),
              write: MIB / secs('SEQWRITE-S'),
              iops: Number(m['RANDREAD-IOPS']),
              iops16: Number(m['RANDREAD-QD16-IOPS']),
              coldRead: WARMUP_MIB / secs('WARMREAD-S'),
              coldWrite: WARMUP_MIB / secs('WARMWRITE-S'),
            });
            break;
          } catch (e) {
            // The emulated host's guests occasionally die in early boot (docs/testing.md).
            failures[who]++;
            console.log(`  (${who} run failed${tries < 2 ? ' and was repeated' : ''}: ${e.message.split('\n').slice(0, 8).join('\n    | ')})`);
            if (tries >= 2) throw new Error(`${who} failed three times in a row`);
          }
        }
      }
    }
    console.log(`Debian ${a.kernelVersion}, virtio-blk over virtio-mmio, ${MIB} MiB raw image in the host page cache, 512 MiB guest, 1 vCPU, ${RUNS} interleaved runs, min / median / max; timed after a ${WARMUP_MIB} MiB read and write warm-up`);
    if (failures.nodevmm + failures.qemu) console.log(`  failed runs repeated: nodevmm ${failures.nodevmm}, qemu ${failures.qemu}`);
    const line = spreadLine(rows, ONLY, 0);
    line('sequential read, dd 1 MiB direct', (r) => r.read, 'MiB/s');
    line('sequential write, dd 1 MiB direct', (r) => r.write, 'MiB/s');
    line('4 KiB random read, QD1, direct', (r) => r.iops, 'IOPS');
    line('4 KiB random read, QD16, direct', (r) => r.iops16, 'IOPS');
    if (WARMUP_MIB > 0) {
      line(`cold: first ${WARMUP_MIB} MiB read (warm-up)`, (r) => r.coldRead, 'MiB/s');
      line(`cold: first ${WARMUP_MIB} MiB written (warm-up)`, (r) => r.coldWrite, 'MiB/s');
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The host side, in the namespace. Receives on LISTEN-ADDRESS:5201 (argv[2])
 * and prints bytes and first byte to last per connection (RECV); on a
 * "BYTES HOST PORT" line from its stdin, connects to the guest's listener
 * there, writes that many bytes of zeros, half-closes, and prints bytes and
 * connect to the guest's close (SENT).
 */
const PEER = `
const net = require('node:net');
const expect = Number(process.argv[1]);
const listenAddress = process.argv[2];
net.createServer((s) => {
  let n = 0, t0;
  s.on('data', (d) => {
    t0 ??= process.hrtime.bigint();
    n += d.length;
    if (n >= expect) {
      console.log('RECV ' + n + ' ' + Number(process.hrtime.bigint() - t0) / 1e6);
      s.destroy();
    }
  });
  s.on('error', () => {});
}).listen(5201, listenAddress, () => console.log('LISTENING'));
let line = '';
process.stdin.on('data', (d) => {
  line += d;
  for (let i; (i = line.indexOf('\\n')) >= 0; line = line.slice(i + 1)) {
    const [bytes, host, port] = line.slice(0, i).split(' ').map((x, j) => (j === 1 ? x : Number(x)));
    const chunk = Buffer.alloc(65536);
    const t0 = process.hrtime.bigint();
    // The guest's nc half-closes at once (its stdin is empty): keep sending.
    const s = net.connect({ port, host, allowHalfOpen: true }, () => {
      let left = bytes;
      const pump = () => {
        while (left > 0) {
          const n = Math.min(left, chunk.length);
          left -= n;
          if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return s.once('drain', pump);
        }
        s.end();
      };
      pump();
    });
    s.on('close', (hadError) => console.log((hadError ? 'SENTFAIL ' : 'SENT ') + bytes + ' ' + Number(process.hrtime.bigint() - t0) / 1e6));
    s.on('error', () => {});
    s.resume();
  }
});
`;

/** "cpu user nice system idle iowait irq softirq ...;cpu ..." (two /proc/stat lines) as the busy share and where it went. */
function cpuShare(text) {
  const [a, b] = (text ?? '').split(';').map((l) => l.trim().split(/\s+/).slice(1, 8).map(Number));
  if (!a || !b || a.length < 7 || b.length < 7) return 'unknown';
  const d = b.map((v, i) => v - a[i]);
  const total = d.reduce((x, y) => x + y, 0) || 1;
  const pct = (v) => `${Math.round((100 * v) / total)}%`;
  return `busy ${pct(total - d[3] - d[4])} (user ${pct(d[0] + d[1])}, system ${pct(d[2])}, irq ${pct(d[5])}, softirq ${pct(d[6])}) over ${total} ticks`;
}

async function netBench() {
  const { ensureGuestArtifacts } = require('../dist/lib/testing/artifacts');
  const a = await ensureGuestArtifacts({ arch: 'x86_64' });
  const ns = `nvmm-bench-${process.pid}`;
  const tap = 'nvbench0';
  const sh = (argv) => {
    const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr || r.error}`);
  };
  const inNs = (argv) => ['netns', 'exec', ns, ...argv]; // arguments of `ip`
  sh(['ip', 'netns', 'add', ns]);
  let receiver;
  try {
    sh(['ip', ...inNs(['ip', 'link', 'set', 'lo', 'up'])]);
    sh(['ip', ...inNs(['ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap', 'vnet_hdr'])]);
    sh(['ip', ...inNs(['ip', 'addr', 'add', '10.0.2.1/24', 'dev', tap])]);
    sh(['ip', ...inNs(['ip', 'link', 'set', tap, 'up'])]);
    const bytes = MIB * 2 ** 20;
    const toGuestBytes = TO_GUEST_MIB * 2 ** 20;
    receiver = spawn('ip', inNs([process.execPath, '-e', PEER, String(bytes), '10.0.2.1']), { stdio: ['pipe', 'pipe', 'inherit'] });
    const received = [];
    const sent = [];
    let rbuf = '';
    receiver.stdout.on('data', (d) => {
      rbuf += d;
      for (let i; (i = rbuf.indexOf('\n')) >= 0; rbuf = rbuf.slice(i + 1)) {
        const m = /^(RECV|SENT) (\d+) ([\d.]+)/.exec(rbuf.slice(0, i));
        if (m) (m[1] === 'RECV' ? received : sent).push({ bytes: Number(m[2]), ms: Number(m[3]) });
      }
    });
    await new Promise((resolve, reject) => {
      receiver.stdout.once('data', resolve);
      receiver.once('exit', () => reject(new Error('the receiver exited at once')));
    });
    const script = [
      'ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0',
      'i=0; while ! ping -c 1 -W 1 10.0.2.1 >/dev/null 2>&1 && [ $i -lt 30 ]; do i=$((i+1)); done',
      `dd if=/dev/zero bs=64k count=${MIB * 16} 2>/dev/null | nc 10.0.2.1 5201`,
      // The NIC's interrupts after each pass, and what the guest received (frames as the driver handed them up).
      'irqs() { grep virtio /proc/interrupts | tr -s \' \' | tr \'\\n\' \';\'; }',
      'echo "GUEST-IRQS-TOHOST=$(irqs)"; rx0=$(cat /sys/class/net/eth0/statistics/rx_packets); cpu0=$(head -1 /proc/stat)',
      // Host to guest: listen, say so (the script then tells the peer to send), read to EOF.
      '(nc -l -p 5202 >/dev/null) & sleep 0.5; echo GUEST-LISTENING=1; wait',
      'cpu1=$(head -1 /proc/stat); echo "GUEST-IRQS=$(irqs)"; echo "GUEST-RX-FRAMES=$(($(cat /sys/class/net/eth0/statistics/rx_packets) - rx0))"',
      // The vCPU's time over the host-to-guest pass (/proc/stat's first line before and after, in ticks).
      'echo "GUEST-CPU-TOGUEST=$cpu0;$cpu1"',
      'echo GUEST-BENCH-DONE=1',
    ].join('\n');
    const cmdline = `console=ttyS0 panic=-1 nodevmm.cmd=${Buffer.from(script).toString('base64')}`;
    const mac = '52:54:00:12:34:56';
    const vmms = {
      nodevmm: (onOutput) => run('ip', inNs([process.execPath, ...NODE_ARGS, path.join(root, 'bin', 'nodevmm.js'), 'run', '--kernel', a.vmlinuz, '--initrd', a.testInitramfs, '--no-default-cmdline', '--cmdline', cmdline, '-m', '512M', '-p', '1', ...ONE_UART, '--net', `tap:${tap},mac=${mac}`]), 900_000, onOutput),
      qemu: (onOutput) => run('ip', inNs(['qemu-system-x86_64', '-M', 'microvm', '-accel', 'kvm', '-cpu', 'host', '-m', '512M', '-smp', '1', '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-no-reboot', '-kernel', a.vmlinuz, '-initrd', a.testInitramfs, '-append', cmdline, '-netdev', `tap,id=n0,ifname=${tap},script=no,downscript=no,vnet_hdr=on`, '-device', `virtio-net-device,netdev=n0,mac=${mac}`]), 900_000, onOutput),
    };
    const rows = { nodevmm: [], qemu: [] };
    const mbit = (r) => (r.bytes * 8) / (r.ms / 1000) / 1e6;
    for (let i = 0; i < RUNS; i++) {
      for (const who of ONLY ? [ONLY] : ['nodevmm', 'qemu']) {
        let before = { received: received.length, sent: sent.length };
        let markers;
        // The emulated host's guests occasionally die in early boot (docs/testing.md): up to two tries.
        for (let tries = 0; tries < 2 && !markers; tries++) {
          before = { received: received.length, sent: sent.length };
          try {
            let asked = false;
            markers = await vmms[who]((text) => {
              if (asked || !text.includes('GUEST-LISTENING=1')) return;
              asked = true;
              receiver.stdin.write(`${toGuestBytes} 10.0.2.15 5202\n`);
            });
          } catch (e) {
            console.log(`  (${who} run failed${tries < 1 ? ' and is repeated' : ''}: ${e.message.split('\n').slice(0, 8).join('\n    | ')})`);
          }
        }
        if (!markers) continue;
        // The peer's report of the guest's close may trail the VM's exit by a moment.
        for (let k = 0; k < 50 && sent.length === before.sent; k++) await new Promise((res) => setTimeout(res, 20));
        console.log(`  (${who} run ${i + 1}: guest interrupts after guest-to-host ${markers['IRQS-TOHOST']} after host-to-guest ${markers.IRQS}; host-to-guest frames ${markers['RX-FRAMES']}, vCPU ${cpuShare(markers['CPU-TOGUEST'])})`);
        const r = received[before.received];
        const s = sent[before.sent];
        if (r && s) {
          rows[who].push({ toHost: mbit(r), toGuest: mbit(s) });
          console.log(`  (${who} run ${i + 1}: guest to host ${mbit(r).toFixed(2)} Mbit/s, host to guest ${mbit(s).toFixed(2)} Mbit/s)`);
        } else console.log(`  (${who} run: the peer got no complete transfer ${r ? 'to' : 'from'} the guest)`);
      }
    }
    console.log(`Debian ${a.kernelVersion}, virtio-net over virtio-mmio on a TAP (vnet_hdr), 512 MiB guest, 1 vCPU, ${MIB} MiB guest to host and ${TO_GUEST_MIB} MiB host to guest over TCP (busybox nc), ${RUNS} interleaved runs, min / median / max`);
    if (ONLY ? !rows[ONLY]?.length : !rows.nodevmm.length || !rows.qemu.length) throw new Error('no successful runs for one of the VMMs');
    const line = spreadLine(rows, ONLY, 2);
    line('TCP guest to host', (r) => r.toHost, 'Mbit/s');
    line('TCP host to guest', (r) => r.toGuest, 'Mbit/s');
  } finally {
    receiver?.kill();
    spawnSync('ip', ['netns', 'del', ns]);
  }
}

/**
 * passt: TCP throughput both ways through the same passt binary started the
 * same way (lib/devices/passt.ts's arguments), nodevmm (--net user: passt
 * on a socketpair, --fd) against QEMU (-netdev stream to passt's UNIX
 * socket, --socket), and nodevmm's own TAP path in the same run. In a
 * network namespace the script makes: a TAP with 10.0.2.15/24 and a default
 * route via 10.0.2.2 that serves passt only as its address template, a
 * second TAP (10.0.3.1/24, vnet_hdr) for the TAP runs, and the Node peer
 * listening on every address. The guest sets 10.0.2.15 (what passt's DHCP
 * would give it) or 10.0.3.15 statically; guest to host goes to the gateway
 * (passt: the host's loopback); host to guest through passt's forward of
 * 127.0.0.1:5203 to guest port 5202, or straight to 10.0.3.15:5202.
 */
async function passtBench() {
  const { ensureGuestArtifacts } = require('../dist/lib/testing/artifacts');
  const { findExecutable } = require('../dist/lib/util/helper-process');
  const { PASST_GUEST_MTU } = require('../dist/lib/devices/passt');
  const a = await ensureGuestArtifacts({ arch: 'x86_64' });
  const passt = findExecutable('passt');
  if (!passt) throw new Error('passt is not installed (apt-get install passt)');
  const ns = `nvmm-passt-${process.pid}`;
  const tap = 'nvbench0';
  const sh = (argv) => {
    const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr || r.error}`);
  };
  const inNs = (argv) => ['netns', 'exec', ns, ...argv]; // arguments of `ip`
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-bench-passt-'));
  // passt started by root switches to nobody, perhaps before it binds its socket here.
  fs.chmodSync(dir, 0o1777);
  sh(['ip', 'netns', 'add', ns]);
  let receiver;
  let daemon;
  try {
    for (const cmd of [
      'ip link set lo up',
      'ip tuntap add dev nvpt0 mode tap',
      'ip link set nvpt0 up',
      'ip addr add 10.0.2.15/24 dev nvpt0',
      'ip route add default via 10.0.2.2 dev nvpt0',
      `ip tuntap add dev ${tap} mode tap vnet_hdr`,
      `ip addr add 10.0.3.1/24 dev ${tap}`,
      `ip link set ${tap} up`,
    ]) sh(['ip', ...inNs(cmd.split(' '))]);
    const bytes = MIB * 2 ** 20;
    receiver = spawn('ip', inNs([process.execPath, '-e', PEER, String(bytes), '0.0.0.0']), { stdio: ['pipe', 'pipe', 'inherit'] });
    const received = [];
    const sent = [];
    let rbuf = '';
    receiver.stdout.on('data', (d) => {
      rbuf += d;
      for (let i; (i = rbuf.indexOf('\n')) >= 0; rbuf = rbuf.slice(i + 1)) {
        const m = /^(RECV|SENT) (\d+) ([\d.]+)/.exec(rbuf.slice(0, i));
        if (m) (m[1] === 'RECV' ? received : sent).push({ bytes: Number(m[2]), ms: Number(m[3]) });
      }
    });
    await new Promise((resolve, reject) => {
      receiver.stdout.once('data', resolve);
      receiver.once('exit', () => reject(new Error('the receiver exited at once')));
    });
    const cmdline = (addr, gw, settle) => {
      const script = [
        `ip link set eth0 up; ip addr add ${addr}/24 dev eth0; ip route add default via ${gw}`,
        settle,
        `dd if=/dev/zero bs=64k count=${MIB * 16} 2>/dev/null | timeout 120 nc ${gw} 5201; echo GUEST-TOHOST-EXIT=$?`,
        // Host to guest, ended by byte count in the guest: passt does not carry the peer's half-close to a
        // guest whose nc has half-closed first (busybox nc shuts down its write side at its stdin's end), so
        // nc's stdin is a pipe that never ends, its output goes through a FIFO (held open read-write here so
        // nc's open does not wait for a reader) to head -c N, and once head has all N bytes the guest kills
        // nc, whose close the peer times. Bounded, so a stalled transfer is reported, not waited for.
        'mkfifo /tmp/tg; exec 3<>/tmp/tg',
        'sleep 100000 | nc -l -p 5202 >/tmp/tg & ncpid=$!',
        'sleep 0.5; echo GUEST-LISTENING=1',
        `n=$(timeout 120 head -c ${bytes} <&3 | wc -c); kill $ncpid 2>/dev/null; echo GUEST-TOGUEST-BYTES=$n`,
        // The NIC's interrupts over both passes (how many times the driver was called), per VMM.
        'echo "GUEST-IRQS=$(grep virtio /proc/interrupts | tr -s \' \' | tr \'\\n\' \';\')"',
        'sleep 1; echo GUEST-BENCH-DONE=1',
      ].join('\n');
      return `console=ttyS0 panic=-1 nodevmm.cmd=${Buffer.from(script).toString('base64')}`;
    };
    // passt answers ARP itself; the host's TAP needs its neighbour entry first.
    const viaPasst = cmdline('10.0.2.15', '10.0.2.2', 'sleep 1');
    const viaTap = cmdline('10.0.3.15', '10.0.3.1', 'i=0; while ! ping -c 1 -W 1 10.0.3.1 >/dev/null 2>&1 && [ $i -lt 30 ]; do i=$((i+1)); done');
    const mac = '52:54:00:12:34:56';
    const FWD = 'tcp:127.0.0.1:5203-:5202';
    /** Per VM: a boot (~20-60 s in the emulated host) and two transfers; a guest that died in early boot is given up on. */
    const VM_MS = 300_000;
    const guestArgs = (cmd) => ['--kernel', a.vmlinuz, '--initrd', a.testInitramfs, '--no-default-cmdline', '--cmdline', cmd, '-m', '512M', '-p', '1', ...ONE_UART];
    const qemuArgs = (cmd) => ['-M', 'microvm', '-accel', 'kvm', '-cpu', 'host', '-m', '512M', '-smp', '1', '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-no-reboot', '-kernel', a.vmlinuz, '-initrd', a.testInitramfs, '-append', cmd];
    const vmms = {
      nodevmm: (onOutput) => run('ip', inNs([process.execPath, ...NODE_ARGS, path.join(root, 'bin', 'nodevmm.js'), 'run', ...guestArgs(viaPasst), '--net', `user,hostfwd=${FWD},mac=${mac}`, ...(TRACE ? ['--trace'] : [])]), VM_MS, onOutput),
      qemu: async (onOutput) => {
        const socket = path.join(dir, 'passt.sock');
        fs.rmSync(socket, { force: true });
        // nodevmm's passt arguments with --socket in place of --fd 3.
        daemon = spawn('ip', inNs([passt, '--foreground', '--stderr', '--quiet', '--one-off', '--socket', socket, '--mtu', String(PASST_GUEST_MTU), '-t', '127.0.0.1/5203:5202']), { stdio: ['ignore', 'ignore', 'inherit'] });
        for (let i = 0; i < 500 && !fs.existsSync(socket); i++) await new Promise((r) => setTimeout(r, 20));
        try {
          return await run('ip', inNs(['qemu-system-x86_64', ...qemuArgs(viaPasst), '-netdev', `stream,id=n0,server=off,addr.type=unix,addr.path=${socket}`, '-device', `virtio-net-device,netdev=n0,mac=${mac}`]), VM_MS, onOutput);
        } finally {
          daemon.kill('SIGKILL');
        }
      },
      tap: (onOutput) => run('ip', inNs([process.execPath, path.join(root, 'bin', 'nodevmm.js'), 'run', ...guestArgs(viaTap), '--net', `tap:${tap},mac=${mac}`]), VM_MS, onOutput),
    };
    const target = { nodevmm: '127.0.0.1 5203', qemu: '127.0.0.1 5203', tap: '10.0.3.15 5202' };
    const rows = { nodevmm: [], qemu: [], tap: [] };
    const mbit = (r) => (r.bytes * 8) / (r.ms / 1000) / 1e6;
    for (let i = 0; i < RUNS; i++) {
      for (const who of ONLY ? [ONLY] : ['nodevmm', 'qemu', 'tap']) {
        let before = { received: received.length, sent: sent.length };
        let ok = false;
        let markers = {};
        // The emulated host's guests occasionally die in early boot (docs/testing.md): up to two tries.
        for (let tries = 0; tries < 2 && !ok; tries++) {
          before = { received: received.length, sent: sent.length };
          try {
            let asked = false;
            markers = await vmms[who]((text) => {
              if (asked || !text.includes('GUEST-LISTENING=1')) return;
              asked = true;
              receiver.stdin.write(`${bytes} ${target[who]}\n`);
            });
            ok = true;
          } catch (e) {
            console.log(`  (${who} run failed${tries < 1 ? ' and is repeated' : ''}: ${e.message.split('\n').slice(0, 8).join('\n    | ')})`);
          }
        }
        if (!ok) {
          rows[who].push({});
          continue;
        }
        if (markers.IRQS) console.log(`  (${who} run ${i + 1}: guest interrupts ${markers.IRQS})`);
        // The peer's report of the guest's close may trail the VM's exit by a moment.
        for (let k = 0; k < 50 && sent.length === before.sent; k++) await new Promise((res) => setTimeout(res, 20));
        const r = received[before.received];
        const got = Number(markers['TOGUEST-BYTES']);
        const s = got === bytes ? sent[before.sent] : undefined;
        // A direction that did not complete is left out of that direction's figures and said.
        if (!r) console.log(`  (${who} run ${i + 1}: the peer received no complete transfer from the guest; guest nc exit ${markers['TOHOST-EXIT']})`);
        if (!s) console.log(`  (${who} run ${i + 1}: the guest read ${markers['TOGUEST-BYTES'] ?? 'no count'} of ${bytes} bytes from the peer${sent[before.sent] ? '' : ', and the peer saw no close'})`);
        rows[who].push({ toHost: r ? mbit(r) : undefined, toGuest: s ? mbit(s) : undefined });
      }
    }
    console.log(`Debian ${a.kernelVersion}, virtio-net over virtio-mmio, ${path.basename(passt)} ${passt} (MTU ${PASST_GUEST_MTU}) for nodevmm --net user and QEMU -netdev stream; nodevmm on a TAP (vnet_hdr) beside; 512 MiB guest, 1 vCPU, ${MIB} MiB each way over TCP (busybox nc), ${RUNS} interleaved runs, min / median / max`);
    // Per direction, the runs where both sides of a comparison completed it (pairs stay paired by run).
    const compare = (a, b, names, label, f) => {
      const pairs = rows[a].map((x, k) => [f(x), rows[b][k] && f(rows[b][k])]).filter(([x, y]) => x !== undefined && y !== undefined);
      if (!pairs.length) return console.log(`  ${label.padEnd(34)} ${names[0]} vs ${names[1]}: no run where both completed`);
      spreadLine({ [names[0]]: pairs.map((p) => p[0]), [names[1]]: pairs.map((p) => p[1]) }, undefined, 2, names)(label, (v) => v, 'Mbit/s');
    };
    if (ONLY) {
      for (const [label, k] of [['TCP guest to host', 'toHost'], ['TCP host to guest', 'toGuest']]) console.log(`  ${label.padEnd(34)} ${ONLY}: ${rows[ONLY].map((r) => r[k]?.toFixed(2) ?? '-').join(' ')} Mbit/s`);
      return;
    }
    compare('nodevmm', 'qemu', ['nodevmm-passt', 'qemu-passt'], 'TCP guest to host', (r) => r.toHost);
    compare('nodevmm', 'qemu', ['nodevmm-passt', 'qemu-passt'], 'TCP host to guest', (r) => r.toGuest);
    compare('nodevmm', 'tap', ['nodevmm-passt', 'nodevmm-tap'], 'TCP guest to host', (r) => r.toHost);
    compare('nodevmm', 'tap', ['nodevmm-passt', 'nodevmm-tap'], 'TCP host to guest', (r) => r.toGuest);
  } finally {
    receiver?.kill();
    daemon?.kill('SIGKILL');
    spawnSync('ip', ['netns', 'del', ns]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function fsBench() {
  const { ensureGuestArtifacts } = require('../dist/lib/testing/artifacts');
  const { findVirtiofsd, virtiofsdCommand } = require('../dist/lib/vm/virtiofs');
  const a = await ensureGuestArtifacts({ arch: 'x86_64' });
  const exe = findVirtiofsd();
  if (!exe) throw new Error('virtiofsd is not installed (apt-get install virtiofsd, or qemu-system-common)');
  const flavour = /--shared-dir/.test(spawnSync(exe, ['--help'], { encoding: 'utf8' }).stdout) ? 'rust' : 'qemu';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-bench-fs-'));
  const share = path.join(dir, 'share');
  fs.mkdirSync(share);
  let daemon;
  try {
    fs.writeFileSync(path.join(share, 'r.bin'), Buffer.alloc(MIB * 2 ** 20, 0x5a));
    const script = [
      'mkdir -p /mnt/s && mount -t virtiofs bench /mnt/s || echo GUEST-MOUNT-FAILED=1',
      'up() { read -r u _ </proc/uptime; echo $u; }',
      `a=$(up); dd if=/dev/zero of=/mnt/s/w.bin bs=1M count=${MIB} conv=fsync 2>/dev/null; b=$(up); echo "GUEST-FSWRITE-S=$a $b"`,
      'rm -f /mnt/s/w.bin; sync; echo 3 > /proc/sys/vm/drop_caches',
      `a=$(up); dd if=/mnt/s/r.bin of=/dev/null bs=1M 2>/dev/null; b=$(up); echo "GUEST-FSREAD-S=$a $b"`,
      'umount /mnt/s; echo GUEST-BENCH-DONE=1',
    ].join('\n');
    const cmdline = `console=ttyS0 panic=-1 nodevmm.cmd=${Buffer.from(script).toString('base64')}`;
    const qemu = async () => {
      const socket = path.join(dir, 'qemu-vfsd.sock');
      fs.rmSync(socket, { force: true });
      const c = virtiofsdCommand(exe, flavour, { path: share, tag: 'bench', readOnly: false }, socket, process.getuid() === 0);
      daemon = spawn(c.command, c.args, { stdio: ['ignore', 'ignore', 'inherit'] });
      for (let i = 0; i < 500 && !fs.existsSync(socket); i++) await new Promise((r) => setTimeout(r, 20));
      try {
        return await run('qemu-system-x86_64', ['-M', 'microvm,memory-backend=mem', '-accel', 'kvm', '-cpu', 'host', '-m', '512M', '-smp', '1', '-object', 'memory-backend-memfd,id=mem,size=512M,share=on', '-global', 'virtio-mmio.force-legacy=false', '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-no-reboot', '-kernel', a.vmlinuz, '-initrd', a.testInitramfs, '-append', cmdline, '-chardev', `socket,id=vfs,path=${socket}`, '-device', 'vhost-user-fs-device,chardev=vfs,tag=bench,queue-size=1024'], 600_000);
      } finally {
        daemon.kill('SIGKILL');
      }
    };
    const vmms = {
      nodevmm: () => run(process.execPath, [...NODE_ARGS, path.join(root, 'bin', 'nodevmm.js'), 'run', '--kernel', a.vmlinuz, '--initrd', a.testInitramfs, '--no-default-cmdline', '--cmdline', cmdline, '-m', '512M', '-p', '1', '--com1', 'stdio', '--share', `${share}:bench`, ...(TRACE ? ['--trace'] : [])], 600_000),
      qemu,
    };
    const rows = { nodevmm: [], qemu: [] };
    for (let i = 0; i < RUNS; i++) {
      for (const who of ONLY ? [ONLY] : ['nodevmm', 'qemu']) {
        try {
          const m = await vmms[who]();
          if (m['MOUNT-FAILED']) throw new Error('the guest could not mount the share');
          const secs = (k) => {
            const [st, e] = (m[k] ?? '').split(' ').map(Number);
            return e - st;
          };
          rows[who].push({ write: MIB / secs('FSWRITE-S'), read: MIB / secs('FSREAD-S') });
        } catch (e) {
          console.log(`  (${who} run failed: ${e.message.split('\n').slice(0, 8).join('\n    | ')})`);
        }
      }
    }
    console.log(`Debian ${a.kernelVersion}, virtio-fs over virtio-mmio, ${path.basename(exe)} (${flavour}) ${exe} with cache=auto for both, ${MIB} MiB files, 512 MiB guest, 1 vCPU, ${RUNS} interleaved runs, min / median / max`);
    if (!ONLY && (!rows.nodevmm.length || !rows.qemu.length)) throw new Error('no successful runs for one of the VMMs');
    const line = spreadLine(rows, ONLY, 1);
    line('sequential write, dd 1 MiB, fsync', (r) => r.write, 'MiB/s');
    line('sequential read, dd 1 MiB', (r) => r.read, 'MiB/s');
  } finally {
    daemon?.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const modes = { blk, net: netBench, passt: passtBench, fs: fsBench };
if (!modes[mode]) {
  console.error('usage: node scripts/bench-virtio.js blk|net|passt|fs [--runs N] [--mib N]');
  process.exit(2);
}
console.log(`host: ${os.cpus()[0].model}, ${os.cpus().length} cpus, kernel ${os.release()}, node ${process.version}`);
modes[mode]().catch((e) => {
  console.error(`bench-virtio: ${e.message}`);
  process.exit(1);
});
