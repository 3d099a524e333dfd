import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { packageRoot } from '../../src/packageRoot';
import { ADMIN_TOKEN, testDatabaseUrl } from './env';

const ROOT = packageRoot();
/** The compiled server (npm test builds first): a real process, started as `npm start` starts it. */
const MAIN = path.join(ROOT, 'dist', 'src', 'main.js');

export interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [field: string]: unknown;
}

/** A keyward server process of a test, with everything it printed. */
export class ServerProcess {
  readonly output: string[] = [];
  port = 0;
  metricsPort: number | undefined;
  private exited: Promise<number | null>;

  private constructor(readonly child: ChildProcess) {
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Everything the process wrote, stdout and stderr, as one text. */
  get log(): string {
    return this.output.join('');
  }

  /** The JSON log lines printed so far. */
  logLines(): LogLine[] {
    return this.log
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as LogLine);
  }

  /**
   * Starts `node dist/src/main.js` on a free port with the test database and
   * admin token, plus `env`, and waits for its "keyward started" line.
   */
  static async start(env: Record<string, string | undefined> = {}, timeoutMs = 15_000, nodeArgs: readonly string[] = []): Promise<ServerProcess> {
    const server = ServerProcess.spawn(env, nodeArgs);
    try {
      await server.waitFor((line) => line.msg === 'keyward started', timeoutMs);
    } catch (error) {
      server.child.kill('SIGKILL');
      throw error;
    }
    const started = server.logLines().find((line) => line.msg === 'keyward started') as LogLine;
    server.port = started.port as number;
    server.metricsPort = started.metricsPort as number | undefined;
    return server;
  }

  /** Spawns without waiting for the start (for tests of failed starts); `nodeArgs` go before the script (e.g. --cpu-prof). */
  static spawn(env: Record<string, string | undefined> = {}, nodeArgs: readonly string[] = []): ServerProcess {
    const fullEnv: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      DATABASE_URL: testDatabaseUrl(),
      KEYWARD_ADMIN_TOKEN: ADMIN_TOKEN,
      KEYWARD_ADDR: '127.0.0.1:0',
      KEYWARD_LOG_LEVEL: 'info',
      KEYWARD_SHUTDOWN_TIMEOUT_MS: '5000',
      // Test files run three at a time on two shared cores, where a PostgreSQL lookup can take over the default
      // second; tests of the limit itself set their own.
      KEYWARD_DB_VERIFY_TIMEOUT_MS: '5000',
    };
    for (const [name, value] of Object.entries(env)) {
      if (value === undefined) delete fullEnv[name];
      else fullEnv[name] = value;
    }
    const child = spawn(process.execPath, [...nodeArgs, MAIN], { cwd: ROOT, env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    const server = new ServerProcess(child);
    child.stdout?.on('data', (chunk: Buffer) => server.output.push(chunk.toString('utf8')));
    child.stderr?.on('data', (chunk: Buffer) => server.output.push(chunk.toString('utf8')));
    return server;
  }

  /** Resolves once a log line matches; rejects if the process exits first or the time runs out. */
  async waitFor(match: (line: LogLine) => boolean, timeoutMs = 15_000): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.logLines().find(match);
      if (found !== undefined) return found;
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`server exited (${this.child.exitCode ?? this.child.signalCode}) before the expected log line:\n${this.log}`);
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for a log line:\n${this.log}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Sends SIGTERM and resolves with the exit code. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }

  waitForExit(): Promise<number | null> {
    return this.exited;
  }

  signal(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }
}
