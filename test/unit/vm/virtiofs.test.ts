/**
 * lib/vm/virtiofs.ts with the real virtiofsd of this machine (no KVM
 * needed: guest RAM is a memfd the daemon maps): the handshake and a memory
 * table with the RAM's fd, and each way a share fails, one sentence each and
 * bounded: no daemon, no directory, a daemon that never makes its socket, a
 * daemon that dies, and Node killed with SIGKILL (virtiofsd and its sandbox
 * child must go too).
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { nativeBinding } from '../../../lib/hv/native';
import { VHOST_USER_PROTOCOL_F_REPLY_ACK } from '../../../lib/devices/virtio/vhost-user';
import { findVirtiofsd, READ_ONLY_BIND_SCRIPT, virtiofsdCommand, VirtiofsShare } from '../../../lib/vm/virtiofs';

function skipReason(): string | undefined {
  if (!findVirtiofsd()) return 'virtiofsd is not installed (apt-get install virtiofsd, or qemu-system-common)';
  if (spawnSync('unshare', ['--mount', '--pid', '--fork', 'true']).status !== 0) return 'the kernel refuses this process new namespaces, which virtiofsd sandboxes itself in';
  return undefined;
}
const skip = skipReason();
const real = skip ? test.skip : test.serial;
if (skip) test.skip(`virtiofsd tests skipped: ${skip}`, () => {});

function tempDir(t: { teardown(f: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-virtiofs-unit-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Every descendant of `pid` (children first found by /proc/<pid>/task/<tid>/children). */
function descendants(pid: number): number[] {
  const out: number[] = [];
  const walk = (p: number) => {
    let tasks: string[] = [];
    try {
      tasks = fs.readdirSync(`/proc/${p}/task`);
    } catch {
      return;
    }
    for (const tid of tasks) {
      let kids = '';
      try {
        kids = fs.readFileSync(`/proc/${p}/task/${tid}/children`, 'utf8');
      } catch {
        continue;
      }
      for (const k of kids.split(' ').filter(Boolean).map(Number)) {
        out.push(k);
        walk(k);
      }
    }
  };
  walk(pid);
  return out;
}

const alive = (pid: number) => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
};

async function until(f: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (f()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return f();
}

real('a share negotiates with virtiofsd, takes a memory table with the RAM memfd, and the daemon exits when the share closes', async (t) => {
  const dir = tempDir(t);
  const share = await VirtiofsShare.open({ path: dir, tag: 't', readOnly: false });
  const pid = share.helper.pid!;
  t.regex(share.socketPath, /nodevmm-virtiofs-\w+\/vhost-user\.sock$/);
  t.false(fs.existsSync(path.dirname(share.socketPath)), 'the socket and its directory are gone once connected (nothing is left if Node dies)');
  t.true((share.frontend.features & (1n << 32n)) !== 0n, 'VIRTIO_F_VERSION_1');
  t.true(share.frontend.hasProtocolFeature(VHOST_USER_PROTOCOL_F_REPLY_ACK), 'REPLY_ACK agreed, so every set is confirmed');
  const ram = new (nativeBinding().GuestRam)(2 * 1024 * 1024, { shared: true });
  t.teardown(() => ram.release());
  t.notThrows(() => share.frontend.setMemTable([{ gpa: 0, size: ram.size, userAddr: ram.hostAddress, mmapOffset: 0, fd: ram.fd }]));
  const family = [pid, ...descendants(pid)];
  await share.close();
  t.true(await until(() => family.every((p) => !alive(p)), 5000), `still alive: ${family.filter(alive).join(', ')}`);
  t.false(share.helper.exitMessage().includes('SIGKILL'), `it left on the hang-up or SIGTERM: ${share.helper.exitMessage()}`);
});

test('a missing virtiofsd, a missing directory and a file in its place are one sentence each', async (t) => {
  const dir = tempDir(t);
  await t.throwsAsync(VirtiofsShare.open({ path: dir, tag: 't', readOnly: false }, { command: '/nonexistent/virtiofsd' }), {
    code: 'ERR_HELPER_MISSING',
    message: /^share "t" \(.*\): virtiofsd is not installed: none in PATH or .* \(apt-get install virtiofsd, or qemu-system-common for QEMU's\)$/,
  });
  await t.throwsAsync(VirtiofsShare.open({ path: path.join(dir, 'nope'), tag: 't', readOnly: false }), { code: 'ERR_SHARE', message: /: the directory does not exist$/ });
  fs.writeFileSync(path.join(dir, 'file'), '');
  await t.throwsAsync(VirtiofsShare.open({ path: path.join(dir, 'file'), tag: 't', readOnly: false }), { code: 'ERR_SHARE', message: /file is not a directory$/ });
});

test('a daemon that never creates its socket is given up after the wait, and killed', async (t) => {
  const dir = tempDir(t);
  const fake = path.join(dir, 'fake-virtiofsd');
  fs.writeFileSync(fake, '#!/bin/sh\n[ "$1" = --help ] && exit 0\necho "$$" > "$(dirname "$0")/pid"\nexec sleep 60\n', { mode: 0o755 });
  const started = Date.now();
  await t.throwsAsync(VirtiofsShare.open({ path: dir, tag: 't', readOnly: false }, { command: fake, socketWaitMs: 300 }), {
    code: 'ERR_SHARE',
    message: /^share "t" \(.*\): virtiofsd \(pid \d+\) did not create its socket .*vhost-user\.sock within 300 ms$/,
  });
  t.true(Date.now() - started < 5000);
  const pid = Number(fs.readFileSync(path.join(dir, 'pid'), 'utf8'));
  t.true(await until(() => !alive(pid), 3000), 'the daemon that never answered is gone');
});

test('a daemon that exits before its socket says so with its status and last words', async (t) => {
  const dir = tempDir(t);
  const fake = path.join(dir, 'fake-virtiofsd');
  fs.writeFileSync(fake, '#!/bin/sh\necho "cannot serve this" >&2\nexit 3\n', { mode: 0o755 });
  await t.throwsAsync(VirtiofsShare.open({ path: dir, tag: 't', readOnly: false }, { command: fake }), {
    code: 'ERR_SHARE',
    message: /^share "t" \(.*\): virtiofsd \(pid \d+\) exited with status 3: cannot serve this before it created its socket$/,
  });
});

real('a daemon that dies is reported once with how it died, and later requests fail at once instead of waiting', async (t) => {
  const dir = tempDir(t);
  const share = await VirtiofsShare.open({ path: dir, tag: 't', readOnly: false });
  t.teardown(() => void share.close());
  const failed = new Promise<string>((resolve) => (share.onFailure = resolve));
  process.kill(share.helper.pid!, 'SIGKILL');
  const message = await failed;
  t.regex(message, /^virtiofsd \(pid \d+\) was killed by SIGKILL/);
  const started = Date.now();
  t.throws(() => share.frontend.setVringNum(0, 128), { code: 'ERR_VHOST_USER', message: /^virtiofsd for "t" is unusable: virtiofsd \(pid \d+\) was killed by SIGKILL/ });
  t.true(Date.now() - started < 1000);
});

real('virtiofsd and its sandbox child die with a Node process killed by SIGKILL', async (t) => {
  const dir = tempDir(t);
  const script = `
    const { VirtiofsShare } = require(${JSON.stringify(path.resolve(__dirname, '../../../lib/vm/virtiofs.js'))});
    VirtiofsShare.open({ path: ${JSON.stringify(dir)}, tag: 't', readOnly: true }).then((s) => {
      console.log('PID ' + s.helper.pid);
      setInterval(() => {}, 1000);
    }, (e) => { console.log('ERR ' + e.message); process.exit(1); });`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const pid = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /PID (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
      if (/ERR /.test(out)) reject(new Error(out));
    });
  });
  // The daemon forks into its namespaces: the worker is a child of the pid we started.
  t.true(await until(() => descendants(pid).length > 0, 3000), 'virtiofsd started its sandboxed worker');
  const family = [pid, ...descendants(pid)];
  child.kill('SIGKILL');
  t.true(await until(() => family.every((p) => !alive(p)), 5000), `still alive after Node's SIGKILL: ${family.filter(alive).join(', ')}`);
});

test('read-only shares and shares without root go through unshare and a read-only bind mount; plain root shares run the daemon directly', (t) => {
  const spec = { path: '/srv/data', tag: 't', readOnly: true };
  const ro = virtiofsdCommand('/usr/lib/qemu/virtiofsd', 'qemu', spec, '/run/s.sock', true);
  t.is(ro.command, 'unshare');
  t.deepEqual(ro.args.slice(0, 4), ['--mount', '--', '/bin/sh', '-c']);
  t.is(ro.args[4], READ_ONLY_BIND_SCRIPT);
  t.deepEqual(ro.args.slice(5, 7), ['/srv/data', '/usr/lib/qemu/virtiofsd']);
  t.true(ro.args.includes('source=/srv/data'));
  const user = virtiofsdCommand('/usr/libexec/virtiofsd', 'rust', { ...spec, readOnly: false }, '/run/s.sock', false);
  t.deepEqual(user.args.slice(0, 5), ['--map-root-user', '--mount', '--', '/bin/sh', '-c']);
  t.true(user.args.includes('--shared-dir'));
  const plain = virtiofsdCommand('/usr/lib/qemu/virtiofsd', 'qemu', { ...spec, readOnly: false }, '/run/s.sock', true);
  t.is(plain.command, '/usr/lib/qemu/virtiofsd');
});

/** A directory of `mount` -> busybox, for PATH: the mount of the emulated arm64 host (and Alpine). */
function busyboxMountDir(): string | undefined {
  const busybox = ['/usr/bin/busybox', '/bin/busybox'].find((p) => fs.existsSync(p));
  if (!busybox || spawnSync('unshare', ['--mount', '--map-root-user', 'true']).status !== 0) return undefined;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-bbmount-'));
  fs.symlinkSync(busybox, path.join(dir, 'mount'));
  return dir;
}

for (const [name, mountDir] of [['util-linux', undefined], ['busybox', busyboxMountDir()]] as const) {
  const missing = name === 'busybox' && !mountDir;
  (missing ? test.skip : test.serial)(`a read-only share's bind refuses writes with ${name}'s mount (the daemon runs only behind it)`, (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-ro-share-'));
    t.teardown(() => {
      fs.rmSync(dir, { recursive: true, force: true });
      if (mountDir) fs.rmSync(mountDir, { recursive: true, force: true });
    });
    fs.writeFileSync(path.join(dir, 'kept'), 'kept');
    const c = virtiofsdCommand('/usr/lib/qemu/virtiofsd', 'qemu', { path: dir, tag: 't', readOnly: true }, '/run/s.sock', process.getuid?.() === 0);
    const at = c.args.indexOf('-c');
    // The script as nodevmm runs it, with a writer in the daemon's place.
    const writer = ['/bin/sh', '-c', 'echo x > "$1/new" 2>/dev/null; echo "create=$?"; echo y >> "$1/kept" 2>/dev/null; echo "append=$?"', 'writer', dir];
    const env = { ...process.env, PATH: mountDir ? `${mountDir}:${process.env.PATH}` : process.env.PATH };
    const r = spawnSync(c.command, [...c.args.slice(0, at + 3), ...writer], { encoding: 'utf8', env });
    t.is(r.status, 0, r.stderr);
    t.regex(r.stdout, /create=[1-9]/);
    t.regex(r.stdout, /append=[1-9]/);
    t.false(fs.existsSync(path.join(dir, 'new')));
    t.is(fs.readFileSync(path.join(dir, 'kept'), 'utf8'), 'kept');
  });
}
