import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { DataDirLock, DataDirLockedError, LOCK_FILE_NAME, UNREADABLE_LOCK_GRACE_MS, isProcessAlive, judgeLock } from '../src/embedded/DataDirLock';
import { ADMIN_TOKEN_FILE_NAME, checkTokenFile, loadOrCreateAdminToken } from '../src/embedded/generatedAdminToken';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'keyward-lock-'));
  dirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** The pid of a process that has exited (and been reaped). */
function deadPid(): number {
  return spawnSync(process.execPath, ['-e', '']).pid as number;
}

const self = { pid: 1000, hostname: 'here' };
const owner = (pid: number, host = 'here'): string => JSON.stringify({ pid, hostname: host, since: '2026-01-01T00:00:00.000Z' });

describe('judgeLock: whether a lock file left in the data directory holds', () => {
  it('holds while its owner on this host runs, is stale once that pid is dead', () => {
    assert.deepEqual(judgeLock(owner(42), 60_000, self, () => true), { held: true, owner: { pid: 42, hostname: 'here', since: '2026-01-01T00:00:00.000Z' } });
    assert.deepEqual(judgeLock(owner(42), 60_000, self, () => false), { held: false, why: 'pid 42 is not running' });
  });

  it('is stale when it names this very process (a restarted container with the same pid and host name)', () => {
    assert.equal(judgeLock(owner(1000), 0, self, () => true).held, false);
  });

  it('holds when its owner is on another host: that pid cannot be checked from here', () => {
    assert.equal(judgeLock(owner(42, 'elsewhere'), 10 * 86_400_000, self, () => false).held, true);
  });

  it('holds a file without a readable owner while it is young (being written), not after', () => {
    for (const content of ['', '{"pid":', 'garbage', '{"pid":-1,"hostname":"here"}']) {
      assert.deepEqual(judgeLock(content, UNREADABLE_LOCK_GRACE_MS - 1, self, () => true), { held: true, owner: undefined }, content);
      assert.equal(judgeLock(content, UNREADABLE_LOCK_GRACE_MS, self, () => true).held, false, content);
    }
  });

  it('isProcessAlive: this process runs, an exited one does not', () => {
    assert.equal(isProcessAlive(process.pid), true);
    assert.equal(isProcessAlive(deadPid()), false);
  });
});

describe('DataDirLock: one keyward per data directory', () => {
  it('refuses a second holder with a message naming the directory and the pid; free again once released', () => {
    const dir = tempDir();
    const first = DataDirLock.acquire(dir);
    assert.equal(first.file, path.join(dir, LOCK_FILE_NAME));
    assert.equal(statSync(first.file).mode & 0o777, 0o600);
    assert.deepEqual(JSON.parse(readFileSync(first.file, 'utf8')).pid, process.pid);
    // This process holds it; a second acquire here judges "this process" stale, so check the
    // refusal with the file of another live process instead (the test runner's parent).
    first.release();
    assert.equal(existsSync(first.file), false);
    writeFileSync(first.file, owner(process.ppid, hostname()));
    assert.throws(
      () => DataDirLock.acquire(dir),
      (error: unknown) => {
        assert.ok(error instanceof DataDirLockedError);
        assert.equal(
          error.message,
          `the data directory ${dir} is in use: another keyward (pid ${process.ppid}) holds ${first.file}; one embedded PostgreSQL serves one process. ` +
            `Stop that keyward first, give this one another KEYWARD_DATA_DIR, or, if pid ${process.ppid} is not a keyward, remove ${first.file}`,
        );
        return true;
      },
    );
    assert.equal(readFileSync(first.file, 'utf8'), owner(process.ppid, hostname()), 'a refused start leaves the lock alone');
  });

  it('takes over the lock of a dead process, and of an unreadable file past its grace', () => {
    const dir = tempDir();
    const file = path.join(dir, LOCK_FILE_NAME);
    writeFileSync(file, owner(deadPid(), hostname()));
    const lock = DataDirLock.acquire(dir);
    assert.equal(JSON.parse(readFileSync(file, 'utf8')).pid, process.pid);
    lock.release();

    writeFileSync(file, '');
    assert.throws(() => DataDirLock.acquire(dir), /is locked by another keyward that is starting/);
    const old = (Date.now() - UNREADABLE_LOCK_GRACE_MS - 1_000) / 1000;
    utimesSync(file, old, old);
    DataDirLock.acquire(dir).release();
    assert.equal(existsSync(file), false);
  });

  it('release leaves a lock that is no longer its own (taken over meanwhile) alone, and is safe twice', () => {
    const dir = tempDir();
    const lock = DataDirLock.acquire(dir);
    writeFileSync(lock.file, owner(process.ppid, hostname()));
    lock.release();
    lock.release();
    assert.equal(readFileSync(lock.file, 'utf8'), owner(process.ppid, hostname()));
  });
});

describe('the generated admin token of embedded mode', () => {
  it('is made once, 43 base64url characters in a 0600 file, and read back on later starts', () => {
    const dir = tempDir();
    const made = loadOrCreateAdminToken(dir);
    assert.equal(made.created, true);
    assert.equal(made.file, path.join(dir, ADMIN_TOKEN_FILE_NAME));
    assert.match(made.token, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(readFileSync(made.file, 'utf8'), `${made.token}\n`);
    assert.equal(statSync(made.file).mode & 0o777, 0o600);
    assert.deepEqual(loadOrCreateAdminToken(dir), { token: made.token, file: made.file, created: false });
    assert.notEqual(loadOrCreateAdminToken(tempDir()).token, made.token);
  });

  it('refuses a file other users may read, or one without a usable token, naming the file (never the content)', () => {
    const file = '/data/admin-token';
    assert.equal(checkTokenFile(file, ' abcdefghijklmnop\r\n', 0o100600), 'abcdefghijklmnop');
    assert.equal(checkTokenFile(file, 'abcdefghijklmnop', 0o100400), 'abcdefghijklmnop');
    assert.throws(() => checkTokenFile(file, 'abcdefghijklmnop', 0o100644), /^Error: \/data\/admin-token is readable or writable by other users \(mode 0644\): chmod 600 it$/);
    assert.throws(() => checkTokenFile(file, 'short-token', 0o100600), /^Error: \/data\/admin-token does not hold a usable admin token .*remove it to have a new one generated$/);
    assert.throws(() => checkTokenFile(file, 'has a space inside it', 0o100600), /does not hold a usable admin token/);

    const dir = tempDir();
    const made = loadOrCreateAdminToken(dir);
    chmodSync(made.file, 0o644);
    assert.throws(() => loadOrCreateAdminToken(dir), /mode 0644/);
  });
});
