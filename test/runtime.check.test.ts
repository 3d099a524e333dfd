import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { MINIMUM_NODE, checkRuntime } from '../src/runtime';
import { ServerProcess } from './helpers/serverProcess';

describe('runtime check', () => {
  it('states the real minimum in package.json engines', () => {
    const manifest = JSON.parse(readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { engines: { node: string } };
    assert.equal(manifest.engines.node, `>=${MINIMUM_NODE}`);
  });

  it('passes on this runtime', () => {
    assert.equal(checkRuntime(), undefined);
  });

  it('refuses to start on a Node without zlib.crc32 (Node 20.12 to 20.14), saying which Node is needed', async () => {
    // Stands in for an older Node: the same process with zlib.crc32 taken away before keyward loads.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'keyward-runtime-'));
    const preload = path.join(dir, 'no-crc32.js');
    writeFileSync(preload, "delete require('node:zlib').crc32;\n");
    try {
      const server = ServerProcess.spawn({}, ['--require', preload]);
      assert.equal(await server.waitForExit(), 1);
      const lines = server.logLines();
      assert.equal(lines.length, 1, server.log);
      assert.match(lines[0]?.msg ?? '', /^keyward needs Node\.js 20\.15\.0 or later .*lacks zlib\.crc32$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
