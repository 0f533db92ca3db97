import test from 'ava';
import { ConfigError } from '../../../lib/errors';
import { parseRunArgs } from '../../../lib/cli/args';
import { resolveVmConfig } from '../../../lib/vm/config';
import { virtioSlots } from '../../../lib/vm/virtio-devices';
import { buildX86AcpiTables } from '../../../lib/acpi/x86-tables';
import { ACPI_PLATFORM } from '../../../lib/arch/x86_64/layout';
import { openVhostVsock } from '../../../lib/vm/vhost-vsock';
import { nativeBinding } from '../../../lib/hv/native';
import { VsockStream } from '../../../lib/vm/vsock-stream';

test('vsock.cid must be an integer from 3 to 2^32-2; the error names the field and the value', (t) => {
  t.deepEqual(resolveVmConfig({ kernel: 'k', vsock: { cid: 3 } }).vsock, { cid: 3 });
  t.deepEqual(resolveVmConfig({ kernel: 'k', vsock: { cid: 0xffff_fffe } }).vsock, { cid: 0xffff_fffe });
  t.is(resolveVmConfig({ kernel: 'k' }).vsock, undefined);
  for (const cid of [0, 1, 2, 0xffff_ffff, 2 ** 32, 3.5, -4, '5', undefined, null]) {
    const e = t.throws(() => resolveVmConfig({ kernel: 'k', vsock: { cid } as never }), { instanceOf: ConfigError });
    t.is(e!.issues.length, 1);
    t.is(e!.issues[0]!.path, 'vsock.cid');
    t.true(e!.issues[0]!.message.startsWith(`${JSON.stringify(cid) ?? 'undefined'} must be an integer from 3 to 4294967294`), e!.issues[0]!.message);
  }
  const e = t.throws(() => resolveVmConfig({ kernel: 'k', vsock: 7 as never }), { instanceOf: ConfigError });
  t.deepEqual(e!.issues.map((i) => [i.path, i.message]), [['vsock', 'must be an object like { cid: 3 }, got 7']]);
});

test('vsock.agentPort is optional and must be a port number', (t) => {
  t.deepEqual(resolveVmConfig({ kernel: 'k', vsock: { cid: 3, agentPort: 1024 } }).vsock, { cid: 3, agentPort: 1024 });
  for (const agentPort of [-1, 1.5, 2 ** 32, 'x']) {
    const e = t.throws(() => resolveVmConfig({ kernel: 'k', vsock: { cid: 3, agentPort } as never }), { instanceOf: ConfigError });
    t.deepEqual(e!.issues.map((i) => [i.path, i.message]), [['vsock.agentPort', `${JSON.stringify(agentPort)} must be an integer from 0 to 4294967294`]]);
  }
});

test('vsock counts against the 8 virtio interrupts', (t) => {
  const seven = Array.from({ length: 7 }, (_, i) => ({ path: `d${i}` }));
  t.notThrows(() => resolveVmConfig({ kernel: 'k', disks: seven, vsock: { cid: 3 } }));
  t.throws(() => resolveVmConfig({ kernel: 'k', disks: seven, vsock: { cid: 3 }, rng: true }), { message: /9 virtio devices \(disks, net, shares, vsock, rng, console\) are more than the 8/ });
});

test('--vsock CID becomes config; a non-number is refused with the flag and the value', (t) => {
  t.deepEqual(parseRunArgs(['--kernel', 'k', '--vsock', '1234']).config.vsock, { cid: 1234 });
  t.deepEqual(parseRunArgs(['--kernel', 'k', '--vsock=77']).config.vsock, { cid: 77 });
  const e = t.throws(() => parseRunArgs(['--kernel', 'k', '--vsock', 'abc']), { instanceOf: ConfigError });
  t.deepEqual(e!.issues.map((i) => i.path), ['--vsock']);
  t.regex(e!.issues[0]!.message, /^"abc" is not a context ID/);
  // Range checks are the config's: the CLI hands over the number.
  t.throws(() => resolveVmConfig(parseRunArgs(['--kernel', 'k', '--vsock', '2']).config), { message: /vsock\.cid.*2 must be an integer from 3/ });
});

test('the vsock slot comes right after the disks and, like every slot, is edge-triggered, in the DSDT too', (t) => {
  const slots = virtioSlots({ disks: [{ path: 'a' }], rng: true, virtioConsole: true, vsock: { cid: 9 } });
  t.deepEqual(slots.map((s) => s.device.kind), ['blk', 'vsock', 'rng', 'console']);
  t.deepEqual(slots.map((s) => s.trigger), ['edge', 'edge', 'edge', 'edge']);
  t.deepEqual(slots.map((s) => s.irq), [16, 17, 18, 19]);
  const acpi = buildX86AcpiTables({ vcpus: 1, serialPorts: [], ...ACPI_PLATFORM, virtioMmio: slots });
  t.is(Buffer.from(acpi.blob).toString('latin1').split('LNRO0005').length - 1, 4);
  // Without vsock nothing moves.
  t.deepEqual(virtioSlots({ disks: [{ path: 'a' }], rng: true, virtioConsole: false }).map((s) => s.base), [slots[0]!.base, slots[1]!.base]);
});

test('a missing vhost-vsock device is one sentence naming the module to load', (t) => {
  t.throws(() => openVhostVsock(5, '/nonexistent/vhost-vsock'), { code: 'ERR_VSOCK', message: 'vsock: /nonexistent/vhost-vsock does not exist: load the vhost_vsock module (modprobe vhost_vsock)' });
});

test('watchFd reports readability of an fd on the event loop, stops on close, and closing twice is harmless', async (t) => {
  const b = nativeBinding();
  const fd = b.eventfd(0);
  t.teardown(() => b.closeFd(fd));
  const seen: number[] = [];
  let watcher: ReturnType<typeof b.watchFd> | undefined;
  await new Promise<void>((resolve) => {
    watcher = b.watchFd(fd, { readable: true }, (status, readable) => {
      t.is(status, 0);
      t.true(readable);
      seen.push(b.eventfdRead(fd));
      if (seen.length === 2) resolve();
      else setImmediate(() => b.eventfdWrite(fd, 2));
    });
    b.eventfdWrite(fd, 5);
  });
  t.deepEqual(seen, [5, 2]);
  t.false(watcher!.closed);
  watcher!.close();
  watcher!.close();
  t.true(watcher!.closed);
  watcher!.set({ readable: true }); // after close: no effect, no throw
  b.eventfdWrite(fd, 1);
  await new Promise((r) => setTimeout(r, 30));
  t.is(seen.length, 2);
});

test('watchFd pauses with no events and resumes with set()', async (t) => {
  const b = nativeBinding();
  const fd = b.eventfd(0);
  t.teardown(() => b.closeFd(fd));
  let calls = 0;
  const w = b.watchFd(fd, {}, () => {
    calls++;
    b.eventfdRead(fd);
  });
  t.teardown(() => w.close());
  b.eventfdWrite(fd, 1);
  await new Promise((r) => setTimeout(r, 30));
  t.is(calls, 0);
  w.set({ readable: true });
  await new Promise((r) => setTimeout(r, 30));
  t.is(calls, 1);
});

test('a vsock connect that cannot even start rejects with one sentence', async (t) => {
  // Here (no vsock transport loaded) or anywhere (nobody has cid 4294967290 listening on port 1).
  const e = await t.throwsAsync(() => VsockStream.connect(0xffff_fffa, 1));
  t.regex(e!.message, /^vsock connect to cid 4294967290 port 1 failed: .+ \(E[A-Z]+\)$/);
});
