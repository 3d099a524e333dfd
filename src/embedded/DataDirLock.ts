import { closeSync, fsyncSync, linkSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';

/** The lock file's name inside the data directory. */
export const LOCK_FILE_NAME = 'keyward.lock';

/**
 * A lock file younger than this that holds no readable owner is taken as
 * being written by a keyward starting right now (between its O_EXCL create
 * and its write); older, as left by a process that died in between.
 */
export const UNREADABLE_LOCK_GRACE_MS = 10_000;

/** Who holds the data directory: what the lock file says. */
export interface LockOwner {
  readonly pid: number;
  readonly hostname: string;
  /** ISO time the owner took the lock (for people reading the file). */
  readonly since: string;
}

/** What a lock file found at start means for this process. */
export type LockVerdict = { readonly held: true; readonly owner: LockOwner | undefined } | { readonly held: false; readonly why: string };

/** Thrown when another live keyward holds the data directory; the message names the directory and the pid. */
export class DataDirLockedError extends Error {
  override readonly name = 'DataDirLockedError';
}

function parseOwner(content: string): LockOwner | undefined {
  try {
    const parsed = JSON.parse(content) as Partial<LockOwner>;
    if (typeof parsed.pid === 'number' && Number.isInteger(parsed.pid) && parsed.pid > 0 && typeof parsed.hostname === 'string') {
      return { pid: parsed.pid, hostname: parsed.hostname, since: String(parsed.since ?? '') };
    }
  } catch {
    // unreadable: judged by its age below
  }
  return undefined;
}

/**
 * Whether a lock file left in the data directory still holds it (pure: the
 * process table and the clock are inputs).
 *
 * - An owner on this host whose pid is dead is stale, and so is one whose pid
 *   is this process's own (a container restarted with the same pid 1 under the
 *   same host name: this process has not taken the lock, so the file is left
 *   from before).
 * - An owner on another host (a data directory on a shared volume) cannot be
 *   checked from here: it holds until someone removes the file.
 * - A file without a readable owner holds for UNREADABLE_LOCK_GRACE_MS after
 *   its last change (its writer may be between create and write), then is stale.
 */
export function judgeLock(
  content: string,
  ageMs: number,
  self: { readonly pid: number; readonly hostname: string },
  isAlive: (pid: number) => boolean,
): LockVerdict {
  const owner = parseOwner(content);
  if (owner === undefined) {
    return ageMs < UNREADABLE_LOCK_GRACE_MS ? { held: true, owner: undefined } : { held: false, why: 'the lock file holds no owner' };
  }
  if (owner.hostname !== self.hostname) return { held: true, owner };
  if (owner.pid === self.pid) return { held: false, why: `pid ${owner.pid} is this process: the lock was left by an earlier one` };
  if (isAlive(owner.pid)) return { held: true, owner };
  return { held: false, why: `pid ${owner.pid} is not running` };
}

/**
 * Whether a process of this host with `pid` runs (one of another user
 * counts: EPERM). A zombie (killed, not yet reaped by its parent) does not:
 * on Linux its state in /proc says so.
 */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    // "pid (comm) S ...": the state follows the last ")" (comm may hold one).
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true; // no /proc (macOS): kill(0) is the answer
  }
}

/** The message of a refused start: names the directory, the lock file and the owner. */
export function lockedMessage(dataDir: string, lockFile: string, owner: LockOwner | undefined): string {
  if (owner === undefined) {
    return `the data directory ${dataDir} is locked by another keyward that is starting (${lockFile} is being written); try again in a moment`;
  }
  const where = owner.hostname === hostname() ? '' : ` on host ${owner.hostname}`;
  return (
    `the data directory ${dataDir} is in use: another keyward (pid ${owner.pid}${where}) holds ${lockFile}; ` +
    `one embedded PostgreSQL serves one process. Stop that keyward first, give this one another KEYWARD_DATA_DIR, ` +
    `or, if pid ${owner.pid}${where} is not a keyward, remove ${lockFile}`
  );
}

/**
 * The lock of an embedded data directory, so that one process at a time
 * runs its PostgreSQL and trusts its in-process cache (README, "Embedded
 * mode"). The lock file is created with O_EXCL and holds the owner's pid and
 * host; a lock whose owner is dead is taken over (judgeLock).
 */
export class DataDirLock {
  private released = false;

  private constructor(
    readonly file: string,
    private readonly content: string,
  ) {}

  /**
   * Takes the lock of `dataDir` (which must exist), or throws
   * DataDirLockedError naming the directory and the owner.
   *
   * Taking over a stale lock: the stale file is renamed aside (atomic: of two
   * processes taking it over, one renames it), then checked to be the file
   * judged stale; a fresh lock renamed aside by mistake (another process took
   * over between the read and the rename) is linked back (link fails rather
   * than overwrite) and this process tries again, finding that owner alive.
   */
  static acquire(dataDir: string, now: () => number = Date.now): DataDirLock {
    const file = path.join(dataDir, LOCK_FILE_NAME);
    const self = { pid: process.pid, hostname: hostname() };
    const content = `${JSON.stringify({ ...self, since: new Date(now()).toISOString() } satisfies LockOwner)}\n`;
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const fd = openSync(file, 'wx', 0o600);
        try {
          writeSync(fd, content);
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
        return new DataDirLock(file, content);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      let found: string;
      let ageMs: number;
      try {
        found = readFileSync(file, 'utf8');
        ageMs = now() - statSync(file).mtimeMs;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue; // released meanwhile: try again
        throw error;
      }
      const verdict = judgeLock(found, ageMs, self, isProcessAlive);
      if (verdict.held) throw new DataDirLockedError(lockedMessage(dataDir, file, verdict.owner));
      const aside = `${file}.stale-${process.pid}`;
      try {
        renameSync(file, aside);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue; // another process took it over first
        throw error;
      }
      if (readFileSync(aside, 'utf8') !== found) {
        try {
          linkSync(aside, file);
        } catch {
          // someone holds the path again: the next attempt judges that owner
        }
      }
      unlinkSync(aside);
    }
    throw new DataDirLockedError(`the data directory ${dataDir}: could not take ${file} (other processes keep taking it); try again`);
  }

  /** Removes the lock file if it is still this lock's. Safe to call twice. */
  release(): void {
    if (this.released) return;
    this.released = true;
    try {
      if (readFileSync(this.file, 'utf8') === this.content) unlinkSync(this.file);
    } catch {
      // already gone
    }
  }
}
