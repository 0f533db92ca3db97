'use strict';
/**
 * Preload for `bench-boot.js tiny --cpu`: when the process first writes the
 * marker to a stream, appends the main thread's CPU time so far (ns, from
 * /proc/self/task/<pid>/schedstat: exact, and unlike wall time not
 * stretched by other processes on a shared host) to $NODEVMM_BENCH_CPU_FILE.
 */
const fs = require('node:fs');
const { Duplex, Writable } = require('node:stream');

const out = process.env.NODEVMM_BENCH_CPU_FILE;
const marker = process.env.NODEVMM_BENCH_MARKER || 'TINY-PVH-OK';
let seen = false;
// The guest's output may reach the stream in more than one write: look at everything written so far.
let written = '';
// Duplex (so net.Socket, process.stdout on a pipe) holds its own copy of Writable's write.
for (const proto of new Set([Writable.prototype, Duplex.prototype])) {
  const write = proto.write;
  proto.write = function (chunk, ...rest) {
    if (!seen && out && (written += String(chunk)).includes(marker)) {
      seen = true;
      const ns = fs.readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'latin1').split(' ')[0];
      fs.appendFileSync(out, `${ns}\n`);
    }
    return write.call(this, chunk, ...rest);
  };
}
