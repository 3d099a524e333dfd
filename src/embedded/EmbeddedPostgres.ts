import { mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

/** The PostgreSQL files inside the data directory. */
export const PGDATA_DIR_NAME = 'pgdata';
/** The socket's file name, as PostgreSQL names it (so that `host=<dir>` finds it). */
const SOCKET_FILE_NAME = '.s.PGSQL.5432';
/** Unix socket paths are limited to 108 bytes on Linux, 104 on macOS. */
const MAX_SOCKET_PATH_BYTES = 100;

/**
 * Connections the socket server accepts at once. keyward opens one
 * (createEmbeddedPool: one connection in total, why there); the others only
 * absorb a replacement connecting before the server has seen the end of the
 * one it replaces (a connection keyward ended at a time limit), which would
 * otherwise be refused with a line the driver cannot read.
 */
const SOCKET_MAX_CONNECTIONS = 4;

/** A running embedded PostgreSQL and the connection string that reaches it. */
export interface EmbeddedPostgres {
  /** `postgresql://…?host=<socket dir>`: for pg, as DATABASE_URL would be. */
  readonly connectionString: string;
  /** Where its files are. */
  readonly pgdata: string;
  /** Closes the socket server, then PostgreSQL (a checkpoint: the files are consistent). Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Starts PGlite (PostgreSQL compiled to WebAssembly, in this process) on
 * `<dataDir>/pgdata` and serves it on a Unix socket in the data directory
 * (or, when that path is too long for a socket, in a private temporary
 * directory), so that keyward's pg pools, migrations and SQL are those of a
 * real server. A socket file, unlike a loopback port, is guarded by the data
 * directory's permissions. The caller holds the data directory's lock: a
 * socket file left by a killed process is removed.
 */
export async function startEmbeddedPostgres(dataDir: string): Promise<EmbeddedPostgres> {
  const pgdata = path.join(dataDir, PGDATA_DIR_NAME);
  let socketDir = dataDir;
  let temporarySocketDir: string | undefined;
  if (Buffer.byteLength(path.join(dataDir, SOCKET_FILE_NAME)) > MAX_SOCKET_PATH_BYTES) {
    temporarySocketDir = mkdtempSync(path.join(tmpdir(), 'keyward-'));
    socketDir = temporarySocketDir;
  }
  const socketPath = path.join(socketDir, SOCKET_FILE_NAME);
  try {
    unlinkSync(socketPath);
  } catch {
    // none left behind
  }
  let db: PGlite | undefined;
  let server: PGLiteSocketServer | undefined;
  const close = async (): Promise<void> => {
    await server?.stop();
    if (db !== undefined && !db.closed) await db.close();
    if (temporarySocketDir !== undefined) rmSync(temporarySocketDir, { recursive: true, force: true });
  };
  try {
    db = await PGlite.create({ dataDir: pgdata });
    server = new PGLiteSocketServer({ db, path: socketPath, maxConnections: SOCKET_MAX_CONNECTIONS });
    await server.start();
  } catch (error) {
    await close().catch(() => {});
    throw new Error(`the embedded PostgreSQL in ${pgdata} did not start: ${(error as Error).message}`, { cause: error });
  }
  let stopping: Promise<void> | undefined;
  return {
    connectionString: `postgresql://postgres@localhost/postgres?host=${encodeURIComponent(socketDir)}`,
    pgdata,
    stop: () => (stopping ??= close()),
  };
}
