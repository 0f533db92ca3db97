/**
 * lib/hv/hypervisor.ts: the VM layer gets partitions from openHypervisor()
 * and names no backend; a platform without one is one sentence.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openHypervisor } from '../../../lib/hv/hypervisor';

test('linux gets KVM, windows WHP; a platform without a backend gets one sentence naming it', (t) => {
  t.is(openHypervisor('linux').name, 'kvm');
  t.is(openHypervisor('win32').name, 'whp');
  t.throws(() => openHypervisor('darwin'), { code: 'ERR_NO_HYPERVISOR', message: /no hypervisor backend for darwin/ });
});

test('the VM layer (lib/vm) creates partitions only through openHypervisor and names no KVM partition class', (t) => {
  const dir = path.resolve(__dirname, '../../../../lib/vm');
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.ts'))) {
    const src = fs.readFileSync(path.join(dir, f), 'utf8');
    t.notRegex(src, /\b(Kvm(Arm64)?|Whp)Partition\b(?!Options)/, f);
    t.notRegex(src, /\bnativeVm\b/, f);
  }
});
