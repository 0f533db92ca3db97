/**
 * The snapshot format: a folder written by writeSnapshotFolder reads back
 * equal, and every kind of damage (another version, a missing manifest, a
 * truncated or changed file, a field of the wrong shape, an incompatible
 * CPU) is refused with one sentence naming the file and field.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { X86PartitionState, X86Segment } from '../../../lib/hv/x86-state';
import { cpuIncompatibility, decodeState, encodeState, readSnapshotFolder, writeSnapshotFolder, type SnapshotParts } from '../../../lib/snapshot';
import { tempDir } from '../../temp-dir';

const seg = (selector: number): X86Segment => ({ base: 0n, limit: 0xffffffff, selector, type: 11, present: 1, dpl: 0, db: 0, s: 1, l: 1, g: 1, avl: 0, unusable: 0 });

function sampleState(): X86PartitionState {
  const bytes = (n: number, fill: number) => new Uint8Array(n).fill(fill);
  return {
    arch: 'x86_64',
    vm: { irqchip: { picMaster: bytes(520, 1), picSlave: bytes(520, 2), ioapic: bytes(520, 3) }, pit: bytes(112, 4), clockNs: 123_456_789_012n },
    vcpus: [
      {
        mpState: 0,
        regs: { rax: 0xffff_ffff_ffff_ffffn, rbx: 1n, rcx: 2n, rdx: 3n, rsi: 4n, rdi: 5n, rsp: 6n, rbp: 7n, r8: 8n, r9: 9n, r10: 10n, r11: 11n, r12: 12n, r13: 13n, r14: 14n, r15: 15n, rip: 0x100000n, rflags: 2n },
        sregs: { cs: seg(8), ds: seg(16), es: seg(16), fs: seg(16), gs: seg(16), ss: seg(16), tr: seg(0), ldt: seg(0), gdt: { base: 0x500n, limit: 31 }, idt: { base: 0n, limit: 0 }, cr0: 0x80000011n, cr2: 0n, cr3: 0x1000n, cr4: 0x20n, cr8: 0n, efer: 0xd01n, apicBase: 0xfee00900n },
        xsave: bytes(4096, 5),
        xcrs: [{ xcr: 0, value: 7n }],
        debugRegs: bytes(128, 0),
        lapic: bytes(1024, 6),
        msrs: [{ index: 0x10, value: 99n }, { index: 0x4b564d01, value: 0x2001n }],
        vcpuEvents: bytes(64, 0),
        cpuid: [{ function: 0, index: 0, flags: 0, eax: 0xd, ebx: 0x756e6547, ecx: 0x6c65746e, edx: 0x49656e69 }],
        tscKhz: 2_600_000,
      },
    ],
  };
}

function parts(ram: Uint8Array = Uint8Array.of(1, 2, 3, 4), state = sampleState()): SnapshotParts {
  return {
    description: { nodevmmVersion: '0.1.0', arch: 'x86_64', host: { hypervisor: 'kvm', cpuModel: 'test cpu', cpuVendor: 'GenuineIntel' }, config: { memory: 4096, vcpus: 1 }, guestCpuid: state.vcpus[0]!.cpuid },
    hypervisor: state,
    devices: { com1: { lcr: 3, rx: [1, 2] } },
    memory: [{ gpa: 0, size: 4096 }],
    writeMemory: (fds) => {
      fs.writeSync(fds[0]!, ram, 0, ram.length, 0);
      fs.ftruncateSync(fds[0]!, 4096);
    },
  };
}

async function written(t: Parameters<typeof tempDir>[0]): Promise<string> {
  const dir = path.join(tempDir(t), 'snap');
  await writeSnapshotFolder(dir, parts());
  return dir;
}

/** Rewrite manifest.json through `edit`. */
function editManifest(dir: string, edit: (m: Record<string, any>) => void): void {
  const p = path.join(dir, 'manifest.json');
  const m = JSON.parse(fs.readFileSync(p, 'utf8'));
  edit(m);
  fs.writeFileSync(p, JSON.stringify(m));
}

/** Replace a state file and put its new size and checksum in the manifest (a crafted, self-consistent file). */
function replaceListed(dir: string, name: string, text: string): void {
  fs.writeFileSync(path.join(dir, name), text);
  editManifest(dir, (m) => {
    const f = m.files.find((x: { name: string }) => x.name === name);
    f.size = Buffer.byteLength(text);
    f.sha256 = createHash('sha256').update(text).digest('hex');
  });
}

test('a written snapshot reads back equal, bigints and bytes included', async (t) => {
  const dir = await written(t);
  const s = await readSnapshotFolder(dir, { verifyMemory: true });
  t.deepEqual(s.hypervisor, sampleState());
  t.deepEqual(s.devices, { com1: { lcr: 3, rx: [1, 2] } });
  t.is(s.manifest.formatVersion, 1);
  t.deepEqual(s.memory, [{ path: path.join(dir, 'ram-0'), gpa: 0, size: 4096 }]);
  t.deepEqual([...fs.readFileSync(s.memory[0]!.path).subarray(0, 5)], [1, 2, 3, 4, 0]);
});

test('a snapshot is never written into a folder that holds something', async (t) => {
  const dir = tempDir(t);
  fs.writeFileSync(path.join(dir, 'x'), '');
  await t.throwsAsync(writeSnapshotFolder(dir, parts()), { code: 'ERR_SNAPSHOT', message: /is not empty/ });
});

test('a folder without manifest.json is refused as not a snapshot or unfinished', async (t) => {
  const dir = await written(t);
  fs.rmSync(path.join(dir, 'manifest.json'));
  await t.throwsAsync(readSnapshotFolder(dir), { message: /has no manifest\.json: it is not a nodevmm snapshot, or its writing did not finish/ });
});

test('another format version is refused naming the version and the writer', async (t) => {
  const dir = await written(t);
  editManifest(dir, (m) => {
    m.formatVersion = 2;
    m.nodevmmVersion = '9.0.0';
  });
  const e = await t.throwsAsync(readSnapshotFolder(dir), { message: /formatVersion is 2 \(written by nodevmm "9\.0\.0"\), and this nodevmm reads version 1 only/ });
  t.is((e as { field?: string }).field, 'formatVersion');
});

test('a manifest that is not JSON, or not a nodevmm manifest, is refused', async (t) => {
  const dir = await written(t);
  fs.writeFileSync(path.join(dir, 'manifest.json'), '{"format": "nodevmm-snap');
  await t.throwsAsync(readSnapshotFolder(dir), { message: /manifest\.json is not valid JSON/ });
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ format: 'qemu' }));
  await t.throwsAsync(readSnapshotFolder(dir), { message: /manifest\.json: format must be "nodevmm-snapshot"/ });
});

test('a manifest naming a file outside the folder is refused', async (t) => {
  const dir = await written(t);
  editManifest(dir, (m) => (m.files[0].name = '../../etc/passwd'));
  await t.throwsAsync(readSnapshotFolder(dir), { message: /files\[0\]\.name must be a plain file name/ });
});

test('a truncated ram file is refused naming it and both sizes', async (t) => {
  const dir = await written(t);
  fs.truncateSync(path.join(dir, 'ram-0'), 100);
  await t.throwsAsync(readSnapshotFolder(dir), { message: /ram-0 is 100 bytes, the manifest says 4096: it was truncated or replaced/ });
});

test('a state file changed in place (same size) fails its checksum', async (t) => {
  const dir = await written(t);
  const p = path.join(dir, 'hv.json');
  const b = fs.readFileSync(p);
  const at = b.indexOf('rip') + 10;
  b[at] = b[at]! ^ 1;
  fs.writeFileSync(p, b);
  await t.throwsAsync(readSnapshotFolder(dir), { message: /hv\.json does not match its sha256 in manifest\.json/ });
});

test('a changed ram file fails its checksum when memory is verified, and only then', async (t) => {
  const dir = await written(t);
  const fd = fs.openSync(path.join(dir, 'ram-0'), 'r+');
  fs.writeSync(fd, Uint8Array.of(9), 0, 1, 2000);
  fs.closeSync(fd);
  await t.notThrowsAsync(readSnapshotFolder(dir));
  await t.throwsAsync(readSnapshotFolder(dir, { verifyMemory: true }), { message: /ram-0 does not match its sha256/ });
});

test('a self-consistent hv.json of the wrong shape is refused naming the field', async (t) => {
  const dir = await written(t);
  const bad = encodeState(sampleState()) as any;
  bad.vcpus[0].lapic = encodeState(new Uint8Array(100));
  replaceListed(dir, 'hv.json', JSON.stringify(bad));
  const e = await t.throwsAsync(readSnapshotFolder(dir), { message: /hv\.json: vcpus\[0\]\.lapic must be 1024 bytes/ });
  t.is((e as { field?: string }).field, 'vcpus[0].lapic');
  bad.vcpus[0].lapic = encodeState(new Uint8Array(1024));
  bad.vcpus[0].regs.rip = { $bigint: '0x1ffffffffffffffff' };
  replaceListed(dir, 'hv.json', JSON.stringify(bad));
  await t.throwsAsync(readSnapshotFolder(dir), { message: /vcpus\[0\]\.regs\.rip is not a 64-bit hex number/ });
  replaceListed(dir, 'hv.json', '[]');
  await t.throwsAsync(readSnapshotFolder(dir), { message: /hv\.json: the top level must be an object/ });
});

test('the codec keeps __proto__ keys as data and refuses runaway nesting', (t) => {
  const v = decodeState(JSON.parse('{"__proto__": {"polluted": 1}}'), 'devices.json') as Record<string, unknown>;
  t.is(Object.getPrototypeOf(v), Object.prototype);
  t.deepEqual(Object.keys(v), ['__proto__']);
  t.is(({} as Record<string, unknown>).polluted, undefined);
  let deep: unknown = 1;
  for (let i = 0; i < 100; i++) deep = [deep];
  t.throws(() => decodeState(deep, 'devices.json'), { message: /nests deeper than 64 levels/ });
});

const vendor = (name: string) => {
  const b = Buffer.from(name, 'latin1');
  return { function: 0, index: 0, flags: 0, eax: 0xd, ebx: b.readUInt32LE(0), edx: b.readUInt32LE(4), ecx: b.readUInt32LE(8) };
};
const leaf1 = (ecx: number, edx: number) => ({ function: 1, index: 0, flags: 0, eax: 0, ebx: 0, ecx, edx });

test('a guest cpu is compatible with a host that offers all it saw, and not otherwise', (t) => {
  const host = [vendor('GenuineIntel'), leaf1(0x0000_0201, 0x0000_0011)];
  t.is(cpuIncompatibility([vendor('GenuineIntel'), leaf1(0x0000_0001, 0x11)], host), undefined);
  // OSXSAVE (27), TSC-deadline (24) and the hypervisor bit (31) are not host features.
  t.is(cpuIncompatibility([vendor('GenuineIntel'), leaf1((1 << 27) | (1 << 24) | (1 << 31), 0)], host), undefined);
  t.is(cpuIncompatibility([vendor('AuthenticAMD')], host), "the snapshot's guest ran on a AuthenticAMD cpu and this host is GenuineIntel");
  t.is(cpuIncompatibility([vendor('GenuineIntel'), leaf1(0x1 | (1 << 28), 0x11)], host), "the snapshot's guest saw cpu features this host does not offer (cpuid leaf 0x1 ecx bit 28)");
});
