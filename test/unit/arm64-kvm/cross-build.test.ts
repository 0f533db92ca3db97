import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { testNeeding } from '../../needs';

// CI compiles the addon for aarch64 so the arm64 backend never rots. Runs when
// g++-aarch64-linux-gnu is installed (skipped otherwise, with the reason).
const root = path.resolve(__dirname, '..', '..', '..', '..');
const maybe = testNeeding(['aarch64-linux-gnu-g++', 'file']);

maybe('the addon cross-compiles for aarch64 with the arm64 backend in it', (t) => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-cross-'));
  // An earlier build, held open as a running node holds the addon it loaded.
  const addon = path.join(out, 'Release', 'nodevmm.node');
  fs.mkdirSync(path.dirname(addon));
  fs.writeFileSync(addon, 'the build a running host loaded');
  const held = fs.openSync(addon, 'r');
  try {
    const log = execFileSync('sh', [path.join(root, 'scripts', 'cross-build-arm64.sh'), out], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    t.regex(log, /ELF 64-bit LSB shared object, ARM aarch64/);
    // The new build is a new file: what the running process mapped is not rewritten under it.
    const buf = Buffer.alloc(64);
    t.is(buf.toString('latin1', 0, fs.readSync(held, buf, 0, 64, 0)), 'the build a running host loaded');
    t.deepEqual(fs.readdirSync(path.dirname(addon)), ['nodevmm.node'], 'no temporary file left behind');
    const syms = execFileSync('aarch64-linux-gnu-nm', ['-C', path.join(out, 'Release', 'nodevmm.node')], { encoding: 'utf8', maxBuffer: 64 << 20 });
    t.regex(syms, /Vcpu::ArmVcpuInit/);
    t.regex(syms, /Vm::ArmPreferredTarget/);
    t.notRegex(syms, /GetSupportedCpuid/, 'x86-only code stays out of the arm64 build');
  } finally {
    fs.closeSync(held);
    fs.rmSync(out, { recursive: true, force: true });
  }
});
