'use strict';
/**
 * Command-line options of the benchmark scripts: `--name VALUE` pairs and
 * bare `--flag`s in process.argv. A value that is not a number where one is
 * wanted ends the script with one sentence and exit status 2.
 */
const args = process.argv.slice(2);

/** The number after `name`, or `dflt` when the option is absent. */
function numberOption(name, dflt) {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(args[i + 1]);
  if (args[i + 1] === undefined || !Number.isFinite(v)) {
    process.stderr.write(`${require('node:path').basename(process.argv[1])}: ${name} needs a number, got ${args[i + 1] === undefined ? 'nothing' : JSON.stringify(args[i + 1])}\n`);
    process.exit(2);
  }
  return v;
}

/** The word after `name`, or undefined when the option is absent. */
function stringOption(name) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

/** Whether the bare flag `name` was given. */
function flag(name) {
  return args.includes(name);
}

module.exports = { args, numberOption, stringOption, flag };
