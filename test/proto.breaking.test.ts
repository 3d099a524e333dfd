import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';

const ROOT = path.resolve(__dirname, '..');
const BUF = path.join(ROOT, 'node_modules', '.bin', 'buf');
const PROTO_FILE = 'keyward/v1/keyward.proto';

function git(...args: string[]): string {
  return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
}

/** `buf breaking proto --against <against>` (rules: buf.yaml's `breaking`, FILE): its exit status and what it said. */
function bufBreaking(against: string): { status: number | null; output: string } {
  const run = spawnSync(BUF, ['breaking', 'proto', '--against', against], { cwd: ROOT, encoding: 'utf8' });
  return { status: run.status, output: `${run.stdout}${run.stderr}`.trim() };
}

/**
 * keyward.v1 only grows: the proto as it is in the working tree must be
 * compatible (buf's FILE rules) with every version of proto/ ever committed.
 *
 * Why every version, not one baseline: `npm test` runs in two places. On a
 * developer's checkout the change under test is uncommitted, so the previous
 * main is HEAD; in CI, on a clean clone of main, the change under test is
 * HEAD itself, so the previous main is HEAD's parent. The commits that
 * changed proto/ include both (the working tree's proto equals the newest
 * of them when nothing is uncommitted), and a branch of several commits is
 * checked against every one of them too. They are read from the repository
 * (`.git#ref=<commit>,subdir=proto`, nothing written), so no baseline file
 * has to be kept in step. A clone needs its history (`git clone` has it; a
 * shallow clone must `git fetch --unshallow` first).
 */
describe('proto contract: additive to keyward.v1', () => {
  it('breaks nothing of any committed version of proto/ (buf breaking, FILE rules)', () => {
    assert.equal(
      git('rev-parse', '--is-shallow-repository'),
      'false',
      'this is a shallow clone: the versions of proto/ to compare with are missing (git fetch --unshallow)',
    );
    const commits = git('log', '--format=%H', '--', 'proto/').split('\n').filter((line) => line !== '');
    assert.ok(commits.length > 0, 'no commit of proto/ found to compare with');
    for (const commit of commits) {
      const { status, output } = bufBreaking(`.git#ref=${commit},subdir=proto`);
      assert.equal(status, 0, `proto/ breaks keyward.v1 as committed in ${commit.slice(0, 12)}:\n${output}`);
    }
  });

  it('would catch a breaking change: a field of the baseline missing from the proto', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keyward-breaking-'));
    try {
      const current = readFileSync(path.join(ROOT, 'proto', PROTO_FILE), 'utf8');
      const withExtraField = current.replace(/^message ApiKey \{\n/m, 'message ApiKey {\n  string removed_since = 1000;\n');
      assert.notEqual(withExtraField, current);
      mkdirSync(path.join(dir, 'proto', path.dirname(PROTO_FILE)), { recursive: true });
      writeFileSync(path.join(dir, 'proto', PROTO_FILE), withExtraField);
      const { status, output } = bufBreaking(path.join(dir, 'proto'));
      assert.notEqual(status, 0);
      assert.match(output, /Previously present field "1000" with name "removed_since" on message "ApiKey" was deleted/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
