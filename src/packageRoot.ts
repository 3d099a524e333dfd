import { existsSync } from 'node:fs';
import path from 'node:path';

/**
 * The folder holding keyward's package.json, found from this file, so that
 * `migrations/` and `proto/` are found the same way from `src/` (tsx) and
 * from `dist/src/` (compiled).
 */
export function packageRoot(): string {
  let dir = __dirname;
  while (!existsSync(path.join(dir, 'migrations')) || !existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`keyward's package root (with migrations/) not found above ${__dirname}`);
    dir = parent;
  }
  return dir;
}
