import test from 'ava';
import { adjustCpuid } from '../../../lib/hv/cpuid';

const supported = [
  { function: 0x1, index: 0, flags: 0, eax: 0x00a00f11, ebx: 0x00000800, ecx: 0x7ed8320b, edx: 0x178bfbff },
  { function: 0xb, index: 0, flags: 1, eax: 0, ebx: 0, ecx: 0, edx: 0 },
  { function: 0xb, index: 1, flags: 1, eax: 0, ebx: 0, ecx: 0, edx: 0 },
  { function: 0x8000001e, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 },
];

test('leaf 1 carries the APIC ID, the CPU count, HTT for several CPUs and the hypervisor bit', (t) => {
  const [one] = adjustCpuid(supported, 2, 4);
  t.is(one!.ebx >>> 24, 2);
  t.is((one!.ebx >>> 16) & 0xff, 4);
  t.truthy(one!.edx & (1 << 28));
  t.truthy(one!.ecx & (1 << 31));
  t.is(one!.ebx & 0xffff, 0x0800, 'the low half (CLFLUSH size, brand index) is kept');
});

test('the TSC-deadline bit (leaf 1 ECX[24]) is set only when the in-kernel LAPIC emulates it', (t) => {
  t.falsy(adjustCpuid(supported, 0, 1)[0]!.ecx & (1 << 24));
  t.truthy(adjustCpuid(supported, 0, 1, { tscDeadline: true })[0]!.ecx & (1 << 24));
  t.falsy(supported[0]!.ecx & (1 << 24), 'the input table is not modified');
});

test('extended topology: one thread per core, `count` cores, x2APIC ID = index', (t) => {
  const out = adjustCpuid(supported, 3, 4);
  const [smt, core] = out.filter((e) => e.function === 0xb);
  t.deepEqual([smt!.eax, smt!.ebx, smt!.ecx >>> 8, smt!.edx], [0, 1, 1, 3]);
  t.deepEqual([core!.eax, core!.ebx, core!.ecx >>> 8, core!.edx], [2, 4, 2, 3]);
  t.is(out.find((e) => e.function === 0x8000001e)!.eax, 3);
});
