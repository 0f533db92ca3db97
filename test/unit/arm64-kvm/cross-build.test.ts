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
  try {
    const log = execFileSync('sh', [path.join(root, 'scripts', 'cross-build-arm64.sh'), out], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    t.regex(log, /ELF 64-bit LSB shared object, ARM aarch64/);
    const syms = execFileSync('aarch64-linux-gnu-nm', ['-C', path.join(out, 'Release', 'nodevmm.node')], { encoding: 'utf8', maxBuffer: 64 << 20 });
    t.regex(syms, /Vcpu::ArmVcpuInit/);
    t.regex(syms, /Vm::ArmPreferredTarget/);
    t.notRegex(syms, /GetSupportedCpuid/, 'x86-only code stays out of the arm64 build');
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});
