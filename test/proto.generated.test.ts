import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';

const ROOT = path.resolve(__dirname, '..');
const BUF = path.join(ROOT, 'node_modules', '.bin', 'buf');

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)))
    .sort();
}

describe('proto contract', () => {
  it('is clean under buf lint (STANDARD)', () => {
    const output = execFileSync(BUF, ['lint'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(output.trim(), '');
  });

  it('matches the committed generated code (run `npm run generate` after changing the proto)', () => {
    const out = mkdtempSync(path.join(tmpdir(), 'keyward-gen-'));
    try {
      execFileSync(BUF, ['generate', '-o', out], { cwd: ROOT, encoding: 'utf8' });
      const fresh = path.join(out, 'src', 'gen');
      const committed = path.join(ROOT, 'src', 'gen');
      assert.deepEqual(filesUnder(fresh), filesUnder(committed));
      for (const file of filesUnder(fresh)) {
        assert.ok(
          readFileSync(path.join(fresh, file), 'utf8') === readFileSync(path.join(committed, file), 'utf8'),
          `src/gen/${file} is stale: run npm run generate`,
        );
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
