import test from 'ava';
import {
  IOAPICARB,
  IOAPICID,
  IOAPICVER,
  IOREGSEL_OFFSET,
  IOWIN_OFFSET,
  Ioapic,
  REDIR_MASK_BIT,
  REDIR_REMOTE_IRR_BIT,
  REDIR_TRIGGER_LEVEL_BIT,
  type MsiMessage,
} from '../../../lib/devices/irqchip/ioapic';

function chip(opts: { pins?: number } = {}) {
  const sent: MsiMessage[] = [];
  const routeUpdates: Array<ReadonlyArray<MsiMessage | undefined>> = [];
  const ioapic = new Ioapic({ id: 2, ...opts, deliver: (m) => sent.push(m), onRoutesChanged: (r) => routeUpdates.push(r) });
  const reg = {
    read: (index: number) => {
      ioapic.write(IOREGSEL_OFFSET, 1, index);
      return ioapic.read(IOWIN_OFFSET, 4);
    },
    write: (index: number, value: number) => {
      ioapic.write(IOREGSEL_OFFSET, 4, index);
      ioapic.write(IOWIN_OFFSET, 4, value);
    },
  };
  const program = (pin: number, lo: number, hi = 0) => {
    reg.write(0x11 + 2 * pin, hi);
    reg.write(0x10 + 2 * pin, lo);
  };
  return { ioapic, sent, routeUpdates, reg, program, vectors: () => sent.map((m) => m.data & 0xff) };
}

test('after reset every pin is masked and the ID, version and arbitration registers read as an 82093AA with 24 pins', (t) => {
  const { ioapic, reg, routeUpdates } = chip();
  t.is(reg.read(IOAPICID), 2 << 24);
  t.is(reg.read(IOAPICVER), 0x00170011);
  t.is(reg.read(IOAPICARB), 2 << 24);
  for (let pin = 0; pin < 24; pin++) t.is(reg.read(0x10 + 2 * pin), REDIR_MASK_BIT, `pin ${pin}`);
  t.is(reg.read(0x10 + 2 * 24), 0, 'past the table');
  t.deepEqual(ioapic.routes(), new Array(24).fill(undefined));
  t.is(routeUpdates.length, 1, 'the empty routes are published once at construction');
  reg.write(IOAPICID, 0xffffffff);
  t.is(reg.read(IOAPICID), 0x0f000000, 'only the 4 ID bits are writable');
  reg.write(IOAPICVER, 0);
  t.is(reg.read(IOAPICVER), 0x00170011, 'the version is read-only');
  t.is(ioapic.read(IOREGSEL_OFFSET, 1), IOAPICVER, 'IOREGSEL reads back');
});

test('delivery status and remote IRR cannot be written, the high dword keeps only the destination', (t) => {
  const { reg } = chip();
  reg.write(0x10, 0xffffffff);
  t.is(reg.read(0x10), 0x1afff);
  reg.write(0x11, 0xffffffff);
  t.is(reg.read(0x11), 0xff000000);
});

test('an edge pin sends one message per rising edge; a masked edge waits for the unmask', (t) => {
  const { ioapic, program, vectors } = chip();
  program(4, 0x31);
  ioapic.setLevel(4, true);
  ioapic.setLevel(4, true);
  t.deepEqual(vectors(), [0x31], 'holding the line high is no new edge');
  ioapic.setLevel(4, false);
  ioapic.setLevel(4, true);
  t.deepEqual(vectors(), [0x31, 0x31]);
  ioapic.setLevel(4, false);
  program(4, 0x31 | REDIR_MASK_BIT);
  ioapic.setLevel(4, true);
  ioapic.setLevel(4, false);
  t.is(vectors().length, 2, 'masked: nothing sent');
  program(4, 0x31);
  t.deepEqual(vectors(), [0x31, 0x31, 0x31], 'the latched edge goes out on unmask');
});

test('a level pin sends once, sets remote IRR, and is sent again by an EOI of its vector only while its line is still asserted', (t) => {
  const { ioapic, reg, program, vectors } = chip();
  program(9, 0x49 | REDIR_TRIGGER_LEVEL_BIT);
  ioapic.setLevel(9, true);
  t.deepEqual(vectors(), [0x49]);
  t.truthy(reg.read(0x10 + 18) & REDIR_REMOTE_IRR_BIT);
  ioapic.setLevel(9, true);
  t.is(vectors().length, 1, 'no second message while remote IRR is set');
  ioapic.eoi(0x50);
  t.is(vectors().length, 1, 'an EOI of another vector changes nothing');
  ioapic.eoi(0x49);
  t.deepEqual(vectors(), [0x49, 0x49], 'still asserted after the EOI: sent again');
  ioapic.setLevel(9, false);
  ioapic.eoi(0x49);
  t.is(vectors().length, 2, 'lowered before the EOI: not sent again');
  t.is(reg.read(0x10 + 18) & REDIR_REMOTE_IRR_BIT, 0);
});

test('switching a pin from level to edge drops a remote IRR that no EOI would clear', (t) => {
  const { ioapic, reg, program, vectors } = chip();
  program(5, 0x35 | REDIR_TRIGGER_LEVEL_BIT);
  ioapic.setLevel(5, true);
  program(5, 0x35);
  t.is(reg.read(0x10 + 10) & REDIR_REMOTE_IRR_BIT, 0);
  ioapic.setLevel(5, false);
  ioapic.setLevel(5, true);
  t.deepEqual(vectors(), [0x35, 0x35]);
});

test('messages carry destination, destination mode, delivery mode and trigger in the x86 MSI format', (t) => {
  const { ioapic, program, sent, routeUpdates } = chip();
  // vector 0x61, lowest priority (1), logical destination, level, destination 3
  program(12, 0x61 | (1 << 8) | (1 << 11) | REDIR_TRIGGER_LEVEL_BIT, 3 << 24);
  ioapic.setLevel(12, true);
  t.deepEqual(sent, [{ address: 0xfee03004, data: 0x61 | (1 << 8) | (1 << 14) | (1 << 15) }]);
  t.deepEqual(routeUpdates.at(-1)![12], sent[0]);
  const before = routeUpdates.length;
  program(12, 0x61 | (1 << 8) | (1 << 11) | REDIR_TRIGGER_LEVEL_BIT, 3 << 24);
  t.is(routeUpdates.length, before, 'rewriting the same entry publishes nothing');
  program(12, REDIR_MASK_BIT);
  t.is(routeUpdates.at(-1)![12], undefined, 'a masked pin has no route');
});

test('accesses the chip does not decode are dropped and counted; IOREGSEL keeps its low byte', (t) => {
  const { ioapic, reg } = chip();
  ioapic.write(IOWIN_OFFSET, 2, 0x1234);
  ioapic.write(IOWIN_OFFSET + 1, 1, 0x12);
  ioapic.write(0x40, 4, 0x31); // the EOI register of later IOAPIC versions: absent on the 82093AA
  t.is(ioapic.missedWrites, 3);
  t.is(ioapic.read(IOWIN_OFFSET, 8), 0);
  t.is(ioapic.read(0x20, 4), 0);
  t.is(ioapic.missedReads, 2);
  ioapic.write(IOREGSEL_OFFSET, 4, 0x1234_5610);
  t.is(ioapic.read(IOREGSEL_OFFSET, 4), 0x10);
  t.is(reg.read(0x10), REDIR_MASK_BIT, 'nothing reached the table');
});

test('a pin outside the chip is a wiring bug and throws; a bad pin count or id is refused', (t) => {
  const { ioapic } = chip({ pins: 8 });
  t.throws(() => ioapic.setLevel(8, true), { message: /pin 8 is outside 0..7/ });
  t.throws(() => new Ioapic({ id: 0, pins: 33, deliver: () => {} }), { message: /pins 33/ });
  t.throws(() => new Ioapic({ id: 16, deliver: () => {} }), { message: /id 16/ });
});
