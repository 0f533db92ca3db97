import test from 'ava';
import { DebugPort } from '../../../lib/devices/debug-port';
import { I8042Reset } from '../../../lib/devices/i8042-reset';

test('debug port records the last POST code and reports each write', (t) => {
  const seen: number[] = [];
  const port = new DebugPort({ onCode: (c) => seen.push(c) });
  t.is(port.lastCode, undefined);
  port.write(0, 1, 0x12);
  port.write(0, 1, 0x1ab);
  t.is(port.lastCode, 0xab);
  t.is(port.writes, 2);
  t.deepEqual(seen, [0x12, 0xab]);
});

test('debug port reads float high and survives a throwing callback', (t) => {
  const port = new DebugPort({
    onCode: () => {
      throw new Error('trace sink broke');
    },
  });
  t.is(port.read(0, 1), 0xff);
  t.is(port.read(0, 2), 0xffff);
  t.is(port.read(0, 4), 0xffffffff);
  t.notThrows(() => port.write(0, 1, 1));
  t.is(port.lastCode, 1);
});

test('i8042 command 0xFE requests a reset and status reads as idle', (t) => {
  let resets = 0;
  const kbc = new I8042Reset({ onReset: () => resets++ });
  t.is(kbc.read(0, 1) & 0x02, 0, 'input buffer empty, so kb_wait() ends');
  kbc.write(0, 1, 0xd1); // other commands are ignored
  t.is(resets, 0);
  kbc.write(0, 1, 0xfe);
  t.is(resets, 1);
  t.is(kbc.resetRequests, 1);
});

test('i8042 ignores 0xFE at other offsets and widths', (t) => {
  let resets = 0;
  const kbc = new I8042Reset({ onReset: () => resets++ });
  kbc.write(1, 1, 0xfe);
  kbc.write(0, 2, 0xfe);
  t.is(resets, 0);
});
