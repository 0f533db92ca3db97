#!/usr/bin/env node
'use strict';
/**
 * Packs the compiled CLI (dist/lib/cli/main.js and every module it reaches)
 * into dist/lib/cli.bundle, which bin/nodevmm.js loads with a code cache
 * (lib/cli/module-bundle.ts). Part of `npm run build:ts` and `prepare`;
 * run after tsc. Usage: node scripts/bundle-cli.js
 */
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const { writeModuleBundle } = require('../dist/lib/cli/module-bundle');
const { CLI_BUNDLE } = require('../dist/lib/cli/launch');
const r = writeModuleBundle(path.join(root, 'dist', 'lib', 'cli', 'main.js'), CLI_BUNDLE);
console.log(`bundle-cli: ${path.relative(root, CLI_BUNDLE)}: ${r.modules} modules, ${(r.bytes / 1024).toFixed(0)} KiB`);
