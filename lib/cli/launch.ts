/**
 * What bin/nodevmm.js runs: the CLI from its module bundle with a code cache
 * when the build made one (lib/cli/module-bundle.ts), else from dist/ with
 * plain require(). NODEVMM_NO_BUNDLE=1 forces the latter (profiling, or
 * ruling the bundle out), and so does --enable-source-maps;
 * NODE_DISABLE_COMPILE_CACHE=1 (Node's own switch) turns the code cache off.
 */
// `import x = require()`, not `import * as x`: no __importStar copy of each module's exports at start-up.
import fs = require('node:fs');
import path = require('node:path');
import { cacheRoot } from '../util/cache-root';
import { loadModuleBundle, type LoadedBundle } from './module-bundle';

type Cli = typeof import('./main');

/** Where the build puts the CLI's bundle (scripts/bundle-cli.js). */
export const CLI_BUNDLE = path.resolve(__dirname, '..', 'cli.bundle');

export async function launch(argv: readonly string[]): Promise<number> {
  let bundle: LoadedBundle<Cli> | undefined;
  // Node applies source maps to required modules only, not to the bundle's scripts: with
  // --enable-source-maps (someone is debugging) stack frames should name the .ts lines.
  const sourceMaps = (process as { sourceMapsEnabled?: boolean }).sourceMapsEnabled === true;
  if (!process.env.NODEVMM_NO_BUNDLE && !sourceMaps) {
    const cacheDir = process.env.NODE_DISABLE_COMPILE_CACHE ? undefined : path.join(cacheRoot(), 'compile-cache');
    // A checkout (where tsc may rewrite dist/ without the bundle step) has a tsconfig.json; the npm package has none.
    const verify = fs.existsSync(path.resolve(__dirname, '..', '..', '..', 'tsconfig.json'));
    bundle = loadModuleBundle<Cli>(CLI_BUNDLE, { cacheDir, verify });
  }
  const cli = bundle?.exports ?? (require('./main') as Cli);
  const code = await cli.main(argv);
  // A `run` that ended with status 0 went through the whole start-up path: the cache it leaves covers it.
  bundle?.saveCodeCache(argv[0] === 'run' && code === 0);
  return code;
}
