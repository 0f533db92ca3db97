import { planIgvmLoad } from '../../../lib/loader/igvm/plan';
import { FormatError } from '../../../lib/errors';
import { parseIgvm } from '../../../lib/igvm/parse';
import { buildIgvm } from '../../../lib/igvm/build';
import { fixCrc, REAL_FILE, REAL_FILE_MISSING, realBytes, smallNative, smallNativeHeaders } from './helpers';
import { testWhen } from '../../needs';

const test = testWhen(REAL_FILE_MISSING);
// Without the fixture every test skips (or fails under CI); a small build of ours stands in so the module loads.
const original = REAL_FILE ? realBytes() : smallNative();
const file = parseIgvm(original);
const header = (i: number) => file.headers[i]!;
const dvOf = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

function mutate(edit: (b: Uint8Array, dv: DataView) => void, crc = true): Uint8Array {
  const b = original.slice();
  edit(b, dvOf(b));
  return crc ? fixCrc(b) : b;
}

function expectError(t: import('ava').ExecutionContext, bytes: Uint8Array, code: string, ...mentions: RegExp[]): void {
  const e = t.throws(() => parseIgvm(bytes), { instanceOf: FormatError });
  t.is(e!.code, code, e!.message);
  for (const m of mentions) t.regex(e!.message, m);
}

const firstPage = file.headers.find((h) => h.kind === 'PAGE_DATA')!;

test('a bad magic is refused', (t) => expectError(t, mutate((b) => (b[0] = 0x50), false), 'ERR_IGVM_MAGIC', /magic is 0x4d564750/));
test('an unknown format version is refused', (t) => expectError(t, mutate((_b, dv) => dv.setUint32(4, 3, true), false), 'ERR_IGVM_VERSION', /format_version 3/));
test('a v2 page size other than 4 KiB is refused', (t) => expectError(t, mutate((_b, dv) => dv.setUint32(28, 0x2000, true), false), 'ERR_IGVM_PAGE_SIZE'));
test('an unknown architecture is refused', (t) => expectError(t, mutate((_b, dv) => dv.setUint32(24, 7, true), false), 'ERR_IGVM_ARCH'));
test('a checksum mismatch is refused with both values', (t) =>
  expectError(t, mutate((b) => (b[0x40] = b[0x40]! ^ 0x80), false), 'ERR_IGVM_CHECKSUM', /0x670b1bfe/));
test('a truncated file is refused by total_file_size', (t) => expectError(t, original.subarray(0, original.length - 1), 'ERR_IGVM_FILE_SIZE', /0x37e210/));
test('a misaligned variable header section is refused', (t) =>
  expectError(t, mutate((_b, dv) => dv.setUint32(8, 0x24, true), false), 'ERR_IGVM_HEADER_ALIGNMENT', /0x24/));
test('a variable header section past the end of the file is refused', (t) =>
  expectError(t, mutate((_b, dv) => dv.setUint32(12, 0x400000, true), false), 'ERR_IGVM_HEADER_SECTION'));

test('an initialization header after a directive violates the phase order', (t) => {
  // Header 5 is a 16-byte PARAMETER_AREA after REQUIRED_MEMORY; GUEST_POLICY is also 16 bytes.
  expectError(t, mutate((_b, dv) => dv.setUint32(header(5).offset, 0x101, true)), 'ERR_IGVM_PHASE_ORDER', /header 5 \(GUEST_POLICY\)/, /initialization header cannot follow a directive/);
});

test('a length that differs from the struct size names the header', (t) => {
  expectError(t, mutate((_b, dv) => dv.setUint32(firstPage.offset + 4, 16, true)), 'ERR_IGVM_HEADER_LENGTH', new RegExp(`header ${firstPage.index} \\(PAGE_DATA\\)`), /length 16 must be 24/);
});

test('non-zero padding after the 20-byte VP_CONTEXT body is refused', (t) => {
  const vp = file.headers.find((h) => h.kind === 'VP_CONTEXT')!;
  expectError(t, mutate((b) => (b[vp.offset + 8 + 21] = 1)), 'ERR_IGVM_HEADER_PADDING', /VP_CONTEXT/);
});

test('a PAGE_DATA file offset past the end of the file is refused', (t) => {
  expectError(t, mutate((_b, dv) => dv.setUint32(firstPage.offset + 8 + 12, 0x37e000, true)), 'ERR_IGVM_FILE_OFFSET', /file_offset 0x37e000/);
});

test('a PAGE_DATA file offset inside the header section is refused', (t) => {
  expectError(t, mutate((_b, dv) => dv.setUint32(firstPage.offset + 8 + 12, 0x100, true)), 'ERR_IGVM_FILE_OFFSET');
});

test('an unaligned PAGE_DATA gpa is refused with its value', (t) => {
  expectError(t, mutate((_b, dv) => dv.setBigUint64(firstPage.offset + 8, 0x800010n, true)), 'ERR_IGVM_UNALIGNED', /gpa 0x800010 is not aligned to 0x1000/);
});

test('an unknown PAGE_DATA data_type and reserved flag bits are refused', (t) => {
  expectError(t, mutate((_b, dv) => dv.setUint16(firstPage.offset + 8 + 20, 9, true)), 'ERR_IGVM_FIELD', /data_type 9/);
  expectError(t, mutate((_b, dv) => dv.setUint32(firstPage.offset + 8 + 16, 0x10, true)), 'ERR_IGVM_FIELD', /flags 0x10/);
});

test('a second platform of the same type is refused', (t) => {
  // Header 1 declares TDX; turn it into a second SEV_SNP.
  expectError(t, mutate((b) => (b[header(1).offset + 8 + 5] = 2)), 'ERR_IGVM_DUPLICATE_PLATFORM', /header 1 \(SUPPORTED_PLATFORM\)/, /SEV_SNP/);
});

test('a platform mask with two bits is refused', (t) => {
  expectError(t, mutate((_b, dv) => dv.setUint32(header(2).offset + 8, 0x3, true)), 'ERR_IGVM_PLATFORM_MASK');
});

test('two PAGE_DATA for one gpa on the same platform conflict', (t) => {
  // 0x805000 exists with masks 0x1, 0x4 and 0x12; widening the 0x1 copy to 0x3 collides with 0x12 on bit 0x2.
  const snp805 = file.headers.find((h) => h.kind === 'PAGE_DATA' && h.gpa === 0x805000 && h.compatibility_mask === 0x1)!;
  expectError(t, mutate((_b, dv) => dv.setUint32(snp805.offset + 8 + 8, 0x3, true)), 'ERR_IGVM_DUPLICATE_DIRECTIVE', /0x805000/);
});

test('a parameter written after its area was inserted is refused', (t) => {
  const h = smallNativeHeaders();
  const insertAt = h.findIndex((x) => x.kind === 'PARAMETER_INSERT');
  const [moved] = h.splice(h.findIndex((x) => x.kind === 'VP_COUNT_PARAMETER'), 1);
  h.splice(insertAt, 0, moved!);
  expectError(t, buildIgvm({ headers: h }), 'ERR_IGVM_PARAMETER_AFTER_INSERT', /VP_COUNT_PARAMETER/);
});

test('a parameter naming an undeclared area and a duplicate area index are refused', (t) => {
  expectError(t, buildIgvm({ headers: [...smallNativeHeaders(), { kind: 'MADT', parameter_area_index: 7, byte_offset: 0 }] }), 'ERR_IGVM_PARAMETER_AREA', /area.*7|7 names/);
  expectError(t, buildIgvm({ headers: [...smallNativeHeaders(), { kind: 'PARAMETER_AREA', number_of_bytes: 4096, parameter_area_index: 1 }] }), 'ERR_IGVM_DUPLICATE_AREA');
});

test('an unknown required header type is refused, an unknown optional one is skipped and reported', (t) => {
  const body = new Uint8Array(8);
  const required = [...smallNativeHeaders(), { kind: 'RAW' as const, type: 0x3ff, body }];
  expectError(t, buildIgvm({ headers: required }), 'ERR_IGVM_UNKNOWN_HEADER', /type 0x3ff is unknown and not marked optional/);
  const optional = [...smallNativeHeaders(), { kind: 'RAW' as const, type: 0x8000_03ff, body }];
  const parsed = parseIgvm(buildIgvm({ headers: optional }));
  t.deepEqual(parsed.skippedOptional.map((s) => [s.type, s.length]), [[0x8000_03ff, 8]]);
  t.is(parsed.headers.length, smallNativeHeaders().length);
  t.true(planIgvmLoad(parsed).warnings.includes('optional header 17 of unknown type 0x800003ff (8 bytes) skipped'), 'the loader reports it too');
});

test('the retired type 0x306 and the unassigned 0x201-0x300 range are refused', (t) => {
  expectError(t, buildIgvm({ headers: [...smallNativeHeaders(), { kind: 'RAW', type: 0x306, body: new Uint8Array(8) }] }), 'ERR_IGVM_UNKNOWN_HEADER');
  expectError(t, buildIgvm({ headers: [smallNativeHeaders()[0]!, { kind: 'RAW', type: 0x250, body: new Uint8Array(8) }] }), 'ERR_IGVM_UNKNOWN_HEADER');
});

test('a file without a platform header is refused', (t) => {
  expectError(t, buildIgvm({ headers: smallNativeHeaders().filter((h) => h.kind !== 'SUPPORTED_PLATFORM' && h.kind !== 'VP_CONTEXT') }), 'ERR_IGVM_NO_PLATFORM');
});

test('errors carry format, field and offset', (t) => {
  const e = t.throws(() => parseIgvm(mutate((_b, dv) => dv.setBigUint64(firstPage.offset + 8, 0x800010n, true))), { instanceOf: FormatError })!;
  t.is(e.format, 'igvm');
  t.is(e.field, `PAGE_DATA[${firstPage.index}].gpa`);
  t.is(e.offset, firstPage.offset + 8);
  t.is(e.actual, '0x800010');
});
