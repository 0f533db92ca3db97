/**
 * The import rules of lib/: layers point down (formats → loaders → machine
 * recipes → the hypervisor core → the native binding), formats are pure,
 * and only lib/hv touches the native binding. Imports that break a rule
 * today are listed as debts; the test fails on any new one and on a debt
 * that has been paid but is still listed, so the list only shrinks.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';

const LIB = path.resolve(__dirname, '../../../lib');

/** What each top-level part of lib/ may import besides itself. */
const ALLOWED: Record<string, readonly string[]> = {
  'errors.ts': [],
  util: ['errors.ts'],
  memory: ['errors.ts', 'util'],
  // Formats: bytes or values in, bytes out.
  acpi: ['errors.ts', 'util'],
  fdt: ['errors.ts', 'util'],
  initramfs: ['errors.ts', 'util'],
  igvm: ['errors.ts', 'util'],
  // Architecture facts (layouts, boot structures) and loaders may use the formats, guest memory and the register-state types.
  arch: ['errors.ts', 'util', 'fdt', 'acpi', 'memory', 'hv/x86-state.ts', 'hv/arm64-regs.ts'],
  loader: ['errors.ts', 'util', 'fdt', 'acpi', 'igvm', 'initramfs', 'memory', 'arch', 'hv/x86-state.ts', 'hv/arm64-regs.ts'],
  // Device models know registers and guest memory; they reach the hypervisor only through its interfaces.
  devices: ['errors.ts', 'util', 'memory', 'hv/io-bus.ts', 'hv/partition.ts'],
  hv: ['errors.ts', 'util', 'memory'],
  // The snapshot format: files and state values in and out; it knows the hypervisor's state types, nothing that runs.
  snapshot: ['errors.ts', 'util', 'hv/x86-state.ts', 'hv/arm64-state.ts', 'hv/arm64-regs.ts'],
  vm: ['errors.ts', 'util', 'memory', 'acpi', 'fdt', 'initramfs', 'igvm', 'arch', 'loader', 'devices', 'hv', 'snapshot'],
  cli: ['errors.ts', 'util', 'memory', 'acpi', 'fdt', 'initramfs', 'igvm', 'arch', 'loader', 'devices', 'hv', 'snapshot', 'vm', 'outside:package.json'],
  testing: ['errors.ts', 'util', 'memory', 'acpi', 'fdt', 'initramfs', 'igvm', 'arch', 'loader', 'devices', 'hv', 'snapshot', 'vm'],
  'index.ts': ['errors.ts', 'util', 'memory', 'acpi', 'fdt', 'initramfs', 'igvm', 'arch', 'loader', 'devices', 'hv', 'snapshot', 'vm'],
};

/** Only lib/hv may import the native binding. */
const NATIVE = 'hv/native.ts';

/** Imports that break a rule today, as "importer -> imported" (paths under lib/). Pay them off; never add to them. */
const DEBTS = new Set<string>([]);

function sources(dir: string, out: string[] = []): string[] {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) sources(p, out);
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Every relative import, require and import() of lib/, as paths under lib/ (".ts" added to module paths). */
function imports(): Array<{ from: string; to: string }> {
  const out: Array<{ from: string; to: string }> = [];
  for (const file of sources(LIB)) {
    const src = fs.readFileSync(file, 'utf8');
    for (const m of src.matchAll(/(?:\bfrom\s+|\brequire\(\s*|\bimport\(\s*)'(\.{1,2}\/[^']+)'/g)) {
      const target = path.resolve(path.dirname(file), m[1]!);
      const rel = path.relative(LIB, target);
      // Outside lib/ (the compiled file sits one level deeper, so the source path does not resolve): name the file alone.
      if (rel.startsWith('..')) {
        out.push({ from: path.relative(LIB, file), to: `outside:${path.basename(rel)}` });
        continue;
      }
      const to = rel.endsWith('.json') || fs.existsSync(target) && fs.statSync(target).isFile() ? rel : `${rel}.ts`;
      out.push({ from: path.relative(LIB, file), to });
    }
  }
  return out;
}

const partOf = (p: string): string => p.split('/')[0]!;
function allowed(from: string, to: string): boolean {
  if (to === NATIVE) return partOf(from) === 'hv';
  const mine = partOf(from);
  if (partOf(to) === mine) return true;
  return (ALLOWED[mine] ?? []).some((a) => to === a || partOf(to) === a);
}

test('every part of lib/ has a rule', (t) => {
  const parts = new Set(fs.readdirSync(LIB));
  t.deepEqual([...parts].filter((p) => !(p in ALLOWED)), []);
});

test('lib/ imports follow the layer rules (no new exceptions)', (t) => {
  const broken = imports().filter(({ from, to }) => !allowed(from, to)).map(({ from, to }) => `${from} -> ${to}`);
  t.deepEqual([...new Set(broken)].filter((b) => !DEBTS.has(b)).sort(), [], 'imports that break the rules (fix them; do not list them as debts)');
});

test('every listed layering debt still exists (remove the ones that are paid)', (t) => {
  const actual = new Set(imports().map(({ from, to }) => `${from} -> ${to}`));
  t.deepEqual([...DEBTS].filter((d) => !actual.has(d)), []);
});

test('the rule checker catches a format importing a loader and a device importing the binding', (t) => {
  t.false(allowed('igvm/inspect.ts', 'loader/igvm/plan.ts'));
  t.false(allowed('devices/virtio/net.ts', 'hv/native.ts'));
  t.true(allowed('hv/kvm-partition.ts', 'hv/native.ts'));
  t.true(allowed('loader/igvm/plan.ts', 'igvm/model.ts'));
});
