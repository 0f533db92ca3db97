#!/usr/bin/env node
// Diagnostic (not a test): arm64 partitions with hand-made guests (a few
// instructions, no kernel) created and destroyed in a tight loop inside the
// emulated arm64 KVM host, in the shapes the VM layer tears machines down:
//   off-sync     vCPU 0 calls PSCI SYSTEM_OFF; the partition is destroyed and
//                the next one built inside the 'vcpu-stop' listener (Vm.finish
//                on a guest power-off, then createVm of the next VM)
//   reset-later  PSCI SYSTEM_RESET; destroy and rebuild from setImmediate
//                (Vm.guestReset with onReset 'restart')
//   kill-busy    vCPU 1 (started with PSCI CPU_ON) keeps writing to a JS
//                device; destroyed from that device's handler (vm.kill())
//   pause-regs   pause, read PC/SP through KVM_GET_ONE_REG, resume, destroy
// Every round allocates and collects garbage, so finalizers of the previous
// partitions run while the next one starts.
// Usage: node --expose-gc scripts/diag/arm64-teardown-stress.js [rounds]   (inside the arm64 host)
//        node scripts/diag/arm64-teardown-stress.js --host [rounds]        (here, under the e2e lock)
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const argv = process.argv.slice(2);
const rounds = Number(argv.find((a) => /^\d+$/.test(a)) ?? 400);
const say = (s) => fs.writeSync(1, `STRESS ${(process.uptime()).toFixed(1)} ${s}\n`);

// A64 encodings (little endian words).
const movz = (rd, imm, shift = 0) => 0xd2800000 | ((shift / 16) << 21) | ((imm & 0xffff) << 5) | rd;
const movk = (rd, imm, shift) => 0xf2800000 | ((shift / 16) << 21) | ((imm & 0xffff) << 5) | rd;
const mov32 = (rd, v) => [movz(rd, v & 0xffff), movk(rd, v >>> 16, 16)];
const STR_W1_X2 = 0xb9000041; // str w1, [x2]
const HVC0 = 0xd4000002;
const B_SELF = 0x14000000;
const B_BACK1 = 0x17ffffff; // b .-4
const PSCI_CPU_ON = 0xc4000003;
const PSCI_SYSTEM_OFF = 0x84000008;
const PSCI_SYSTEM_RESET = 0x84000009;
const DEV = 0xeffec000;

function words(ws) {
  const b = Buffer.alloc(ws.length * 4);
  ws.forEach((w, i) => b.writeUInt32LE(w >>> 0, i * 4));
  return new Uint8Array(b);
}

async function guest() {
  const { openHypervisor } = require('../../dist/lib/hv/hypervisor');
  const { GIC_DIST_START, gicRedistributorRange, RAM_START } = require('../../dist/lib/arch/aarch64/layout');
  const modes = ['off-sync', 'reset-later', 'kill-busy', 'pause-regs'];
  const entry1 = RAM_START + 0x1000;
  let n = 0;
  let keep = [];
  let current;
  say('start');
  // A round that does not end within 10 s says where each vCPU is (its mailbox, and its PC
  // once paused), then is destroyed so the loop goes on; the hangs are counted.
  let seen = -1;
  let hangs = 0;
  setInterval(() => {
    const c = current;
    if (seen === n && c && !c.reported) {
      c.reported = true;
      hangs++;
      const p = c.p;
      const mb = p.runners.map((r, i) => `vcpu${i} ${p.vcpus[i].state} mailbox ${Atomics.load(r.shared.i32, 0)} sleeping ${Atomics.load(r.shared.i32, 8)} kind ${r.shared.kind} addr 0x${r.shared.address.toString(16)} toJs ${r.shared.exitsToJs}`);
      say(`HANG round ${n} (${c.mode}) after ${c.writes()} device writes: ${mb.join('; ')}`);
      const timer = setTimeout(() => {
        say(`HANG round ${n}: pause did not complete in 5 s; destroying`);
        c.finish('later');
      }, 5000);
      p.pause().then(() => {
        clearTimeout(timer);
        // KVM_GET_MP_STATE: 0 runnable, 5 stopped (powered off by PSCI), 4 halted.
        const mp = (v) => {
          try {
            return v.native.getMpState();
          } catch (e) {
            return `? (${e.message})`;
          }
        };
        const pcs = p.vcpus.map((v) => `vcpu${v.index} pc ${p.describePc(v.index)} mp-state ${mp(v)}`);
        say(`HANG round ${n}: paused: ${pcs.join(', ')}; destroying`);
        c.finish('later');
      });
    }
    seen = n;
  }, 10_000).unref();
  const next = () => {
    // Garbage and a collection: the previous partitions' finalizers run now, while the next one starts.
    keep = Array.from({ length: 2000 }, (_, i) => ({ i, s: 'x'.repeat(i % 64), b: new Uint8Array(256) }));
    if (global.gc && n % 3 === 0) global.gc();
    if (++n > rounds) {
      say(`ALL-OK ${rounds} rounds, ${hangs} hung rounds destroyed`);
      process.exit(0);
    }
    if (n % 25 === 0 || n <= 8) say(`round ${n} ${modes[n % modes.length]}`);
    round(modes[n % modes.length]);
  };
  const round = (mode) => {
    const vcpus = 2;
    const p = openHypervisor().createArm64Partition({ vcpus, gicDistributor: GIC_DIST_START, gicRedistributor: gicRedistributorRange(vcpus).start });
    p.addRam({ gpa: RAM_START, size: 64 * 1024 * 1024 });
    let writes = 0;
    let done = false;
    const finish = (how) => {
      if (done) return;
      done = true;
      if (how === 'sync') {
        p.destroy();
        next();
      } else {
        setImmediate(() => {
          p.destroy();
          next();
        });
      }
    };
    current = { p, mode, writes: () => writes, finish: (how) => finish(how) };
    p.mmio.register(DEV, 0x1000, {
      name: 'dev',
      read: () => 0,
      write: () => {
        writes++;
        if (mode === 'kill-busy' && writes === 200) {
          p.destroy();
          done = true;
          next();
        }
      },
    });
    const stopCall = mode === 'reset-later' ? PSCI_SYSTEM_RESET : PSCI_SYSTEM_OFF;
    // vCPU 0: start vCPU 1 at entry1, three device writes, then (unless kill-busy/pause-regs) SYSTEM_OFF/RESET.
    const code0 = [
      ...mov32(0, PSCI_CPU_ON), movz(1, 1), ...mov32(2, entry1), movz(3, 0), HVC0,
      ...mov32(2, DEV), movz(1, 0x41), STR_W1_X2, STR_W1_X2, STR_W1_X2,
      ...(mode === 'kill-busy' || mode === 'pause-regs' ? [B_SELF] : [...mov32(0, stopCall), HVC0, B_SELF]),
    ];
    // vCPU 1: write to the device forever.
    const code1 = [...mov32(2, DEV), movz(1, 0x42), STR_W1_X2, B_BACK1];
    p.memory.write(RAM_START, words(code0));
    p.memory.write(entry1, words(code1));
    p.setCoreRegs(0, { pc: BigInt(RAM_START), pstate: 0x3c5n });
    p.on('vcpu-stop', (s) => {
      if (s.vcpu !== 0) return;
      const expected = (mode === 'off-sync' || mode === 'reset-later') && s.kind === 'system-event';
      if (!expected) say(`round ${n} (${mode}): unexpected stop of vcpu 0: ${s.kind} ${s.message}`);
      finish(mode === 'off-sync' ? 'sync' : 'later');
    });
    p.start();
    if (mode === 'pause-regs') {
      setTimeout(async () => {
        if (done) return;
        await p.pause();
        // A stale round (QEMU 7.2) can stop vCPU 0 with a PSCI call meanwhile, and its teardown follows.
        if (done) return;
        p.getCoreReg(0, 'pc');
        p.getCoreReg(1, 'sp');
        p.resume();
        setTimeout(() => finish('later'), 5);
      }, 5);
    }
  };
  next();
}

async function host() {
  const { runInArm64KvmHost, findArm64Artifacts } = require('../../dist/lib/testing/arm64-kvm-host');
  const artifacts = findArm64Artifacts();
  if (!artifacts) throw new Error('no arm64 artifacts (node scripts/arm64-kvm-host.js fetches them)');
  const cmd = [
    'ulimit -c unlimited',
    'export NODEVMM_CRASH_REPORT=1',
    "echo '/results/core.%e.%p' > /proc/sys/kernel/core_pattern",
    `node --expose-gc scripts/diag/arm64-teardown-stress.js --guest ${rounds}`,
    'st=$?',
    'echo "STRESS-NODE-EXIT=$st"',
    'ls -la /results',
    'sync',
    'echo STRESS-COPY-NOW',
    'sleep 5',
    'exit $st',
  ].join('\n');
  const os = require('node:os');
  const out = process.env.DIAG_OUT || '/tmp/arm64-teardown-stress';
  fs.mkdirSync(out, { recursive: true });
  const before = new Set(fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith('nodevmm-arm64-host-')));
  let log = '';
  let copied = false;
  const r = await runInArm64KvmHost(cmd, {
    timeoutMs: 1800_000,
    projectDir: root,
    artifacts,
    env: { NODEVMM_CACHE: `/host${path.dirname(artifacts.dir)}` },
    onConsole: (text) => {
      process.stdout.write(text);
      log += text;
      if (copied || !log.includes('STRESS-COPY-NOW')) return;
      copied = true;
      for (const d of fs.readdirSync(os.tmpdir()).filter((x) => x.startsWith('nodevmm-arm64-host-') && !before.has(x))) {
        for (const f of fs.readdirSync(path.join(os.tmpdir(), d)).filter((x) => x.startsWith('core'))) {
          fs.copyFileSync(path.join(os.tmpdir(), d, f), path.join(out, f));
          console.log(`\nSTRESS: copied ${f} to ${out}`);
        }
      }
    },
  });
  console.log(`\nSTRESS: host exit ${r.exitCode}, ${(r.durationMs / 1000).toFixed(0)} s`);
}

(argv.includes('--guest') ? guest() : host()).catch((e) => {
  console.error(e);
  process.exit(1);
});
