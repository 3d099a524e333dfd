import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { packageRoot } from '../src/packageRoot';
import { waitUntil } from './helpers/waitUntil';
import { type ProcessRun, runProcess } from './helpers/runProcess';

/**
 * The README's promise, "npm ci && npm start" with nothing else: a clone of
 * the committed tree in a temporary directory, a clean environment (no
 * DATABASE_URL, REDIS_URL or token; only PATH, HOME for npm's cache, and a
 * free port), then the CLI creates, verifies, revokes, and after a restart
 * verifies again.
 */

const workDir = mkdtempSync(path.join(tmpdir(), 'keyward-clone-'));
const checkout = path.join(workDir, 'keyward');
const started: ChildProcess[] = [];
after(() => {
  // The whole process group, even once npm itself has exited: npm does not pass signals on, so its shell and
  // keyward may outlive it (a test that failed or timed out between starts must not leave a server behind).
  for (const child of started) {
    try {
      process.kill(-(child.pid as number), 'SIGKILL');
    } catch {
      // ESRCH: the group is gone already.
    }
  }
  rmSync(workDir, { recursive: true, force: true });
});

/** Nothing of this machine's keyward configuration: what a person who just cloned has. */
const cleanEnv = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? workDir };

function run(command: string, args: readonly string[], timeoutMs: number, input = '', cwd = checkout): Promise<ProcessRun> {
  return runProcess(command, args, { cwd, env: cleanEnv, input, timeoutMs });
}

/** `npm start` in its own process group, as from a terminal; resolves once it serves, with its port. */
async function npmStart(): Promise<{ child: ChildProcess; port: number; output: () => string }> {
  const child = spawn('npm', ['start'], { cwd: checkout, env: { ...cleanEnv, KEYWARD_ADDR: '127.0.0.1:0' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  started.push(child);
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  const line = await waitUntil(
    'npm start serving',
    () => {
      if (child.exitCode !== null) throw new Error(`npm start exited (${child.exitCode}):\n${output}`);
      return output
        .split('\n')
        .filter((text) => text.startsWith('{'))
        .map((text) => JSON.parse(text) as { msg: string; port?: number })
        .find((parsed) => parsed.msg === 'keyward started');
    },
    { timeoutMs: 60_000 },
  );
  return { child, port: line.port as number, output: () => output };
}

/** Ctrl-C: SIGINT to the process group (npm and keyward); resolves once npm has exited. */
async function interrupt(child: ChildProcess): Promise<void> {
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  if (child.exitCode === null && child.signalCode === null) process.kill(-(child.pid as number), 'SIGINT');
  await exited;
}

describe('a fresh clone, DATABASE_URL and REDIS_URL unset', () => {
  // npm ci (30–45 s) and PGlite's initdb (CPU-bound: 5 s alone, over 30 s with the suite's other files running)
  // can outlast the runner's default of 180 s on two loaded cores.
  it('npm ci && npm start serves on the embedded PostgreSQL: create, verify, revoke, restart, verify (CLI)', { timeout: 360_000 }, async (t) => {
    const began = Date.now();
    // The committed tree, as a person cloning gets it.
    const clone = await run('git', ['clone', '--quiet', packageRoot(), checkout], 60_000, '', workDir);
    assert.equal(clone.code, 0, `git clone failed: ${clone.stderr}`);
    const ci = await run('npm', ['ci', '--prefer-offline', '--no-audit', '--no-fund'], 150_000);
    assert.equal(ci.code, 0, `npm ci failed:\n${ci.stdout}\n${ci.stderr}`);
    t.diagnostic(`clone + npm ci: ${Date.now() - began} ms`);

    let server = await npmStart();
    t.diagnostic(`first npm start serving after ${Date.now() - began} ms in all`);
    const cli = (args: readonly string[], input = ''): Promise<ProcessRun> =>
      run(process.execPath, ['dist/src/cli/main.js', '--addr', `127.0.0.1:${server.port}`, ...args], 30_000, input);
    const admin = ['--token-file', path.join('.keyward', 'admin-token')];
    const create = async (name: string): Promise<{ id: string; secret: string }> => {
      const created = await cli([...admin, '--json', 'keys', 'create', '--account', 'acct-clone', '--name', name, '--env', 'live', '--scope', 'jobs:read']);
      assert.equal(created.code, 0, created.stderr);
      const parsed = JSON.parse(created.stdout) as { key: { id: string }; secret: string };
      return { id: parsed.key.id, secret: parsed.secret };
    };
    const verify = async (secret: string): Promise<number | null> => (await cli(['verify', '--key', '-'], `${secret}\n`)).code;

    const revoked = await create('revoked');
    const kept = await create('kept');
    assert.equal(await verify(revoked.secret), 0);
    assert.equal(await verify(revoked.secret), 0);
    const revoke = await cli([...admin, 'keys', 'revoke', '--account', 'acct-clone', '--yes', revoked.id]);
    assert.equal(revoke.code, 0, revoke.stderr);
    assert.equal(await verify(revoked.secret), 3, 'refused at once');
    await interrupt(server.child);
    assert.match(server.output(), /"msg":"keyward stopped"/);

    server = await npmStart();
    assert.equal(await verify(revoked.secret), 3, 'still refused after the restart');
    assert.equal(await verify(kept.secret), 0, 'a key from before the restart still works');
    await interrupt(server.child);
    t.diagnostic(`whole test: ${Date.now() - began} ms`);
  });
});
