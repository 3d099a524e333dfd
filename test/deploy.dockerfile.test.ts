/**
 * The Dockerfile, read line by line and then built on the host as written,
 * since no container engine runs the tests: the build context is the
 * working tree's files minus .dockerignore, every stage gets a directory of
 * its own for its file system, and its COPY, WORKDIR, ENV and RUN lines run
 * in order (npm from the host's cache). The runtime stage's directory is
 * then started with the CMD, and the HEALTHCHECK command must say healthy.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { PROBE_DEADLINE_MS } from '../src/healthProbe';
import { packageRoot } from '../src/packageRoot';
import { ADMIN_TOKEN, testDatabaseUrl, testRedisUrl } from './helpers/env';
import { assertNoLeaks } from './helpers/leaks';
import { waitUntil } from './helpers/waitUntil';

const ROOT = packageRoot();

// ---- Reading the Dockerfile ----------------------------------------------

interface Instruction {
  readonly keyword: string;
  readonly args: string;
  readonly line: number;
}

interface Stage {
  readonly image: string;
  readonly name: string;
  readonly instructions: Instruction[];
}

/** Instructions by stage: continuation lines joined, comments and parser directives dropped. */
function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  let pending = '';
  let startLine = 0;
  text.split('\n').forEach((raw, index) => {
    const trimmed = raw.trim();
    if (trimmed.startsWith('#') || (trimmed === '' && pending === '')) return;
    if (pending === '') startLine = index + 1;
    if (trimmed.endsWith('\\')) {
      pending += `${trimmed.slice(0, -1).trim()} `;
      return;
    }
    const joined = (pending + trimmed).trim();
    pending = '';
    const keyword = joined.split(/\s+/)[0] as string;
    const instruction = { keyword: keyword.toUpperCase(), args: joined.slice(keyword.length).trim(), line: startLine };
    if (instruction.keyword === 'FROM') {
      const [image = '', as, name] = instruction.args.split(/\s+/);
      assert.ok(as === undefined || as.toUpperCase() === 'AS', `line ${startLine}: FROM <image> [AS <name>]`);
      stages.push({ image, name: name ?? String(stages.length), instructions: [] });
    } else {
      assert.ok(stages.length > 0, `line ${startLine}: ${instruction.keyword} before FROM`);
      (stages[stages.length - 1] as Stage).instructions.push(instruction);
    }
  });
  return stages;
}

/** `--name=value` flags at the start of an instruction's arguments, and what follows them. */
function splitFlags(args: string): { flags: Map<string, string>; rest: string } {
  const flags = new Map<string, string>();
  let rest = args;
  for (let match = /^--([\w-]+)(?:=(\S*))?\s+/.exec(rest); match !== null; match = /^--([\w-]+)(?:=(\S*))?\s+/.exec(rest)) {
    flags.set(match[1] as string, match[2] ?? '');
    rest = rest.slice(match[0].length);
  }
  return { flags, rest };
}

/** CMD, ENTRYPOINT or HEALTHCHECK CMD arguments: exec form (a JSON array) as argv, shell form as undefined. */
function execForm(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  const argv = JSON.parse(args) as unknown;
  assert.ok(Array.isArray(argv) && argv.every((part) => typeof part === 'string'), `exec form: ${args}`);
  return argv as string[];
}

/** ENV in the `K=V K2="V 2"` form. */
function parseEnv(args: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [, name, quoted, plain] of args.matchAll(/([A-Za-z_][\w]*)=(?:"([^"]*)"|(\S*))/g)) env[name as string] = quoted ?? plain ?? '';
  return env;
}

function instructions(stage: Stage, keyword: string): Instruction[] {
  return stage.instructions.filter((instruction) => instruction.keyword === keyword);
}

/** Go-style durations of HEALTHCHECK options (`10s`, `1m30s`), in ms. */
function durationMs(text: string): number {
  const units: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
  let total = 0;
  for (const [, amount, unit] of text.matchAll(/(\d+)(ms|s|m|h)/g)) total += Number(amount) * (units[unit as string] as number);
  return total;
}

const STAGES = parseDockerfile(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));
const FINAL = STAGES[STAGES.length - 1] as Stage;

function healthcheck(): { options: Map<string, string>; argv: string[] } {
  const found = instructions(FINAL, 'HEALTHCHECK');
  assert.equal(found.length, 1, 'one HEALTHCHECK in the final stage');
  const { flags, rest } = splitFlags((found[0] as Instruction).args);
  assert.match(rest, /^CMD\s+/, 'HEALTHCHECK CMD …');
  const argv = execForm(rest.replace(/^CMD\s+/, ''));
  assert.ok(argv !== undefined, 'HEALTHCHECK CMD in exec form');
  return { options: flags, argv };
}

function cmd(): string[] {
  const found = instructions(FINAL, 'CMD');
  assert.equal(found.length, 1, 'one CMD in the final stage');
  const argv = execForm((found[0] as Instruction).args);
  assert.ok(argv !== undefined, 'CMD in exec form, so that node is PID 1 and gets SIGTERM');
  return argv;
}

// ---- Building on the host --------------------------------------------------

/** .dockerignore's patterns as tests of a context-relative path (and every folder above it). */
function dockerignore(): (file: string) => boolean {
  const rules = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const exclude = !line.startsWith('!');
      const pattern = path.posix.normalize(line.replace(/^!/, '').replace(/^\/+/, ''));
      // Go's filepath.Match plus `**` (any number of folders), as Docker reads it.
      const source = pattern.replace(/\*\*\/|\*\*|\*|\?|[.+^${}()|[\]\\]/g, (token) =>
        token === '**/' ? '(?:.*/)?' : token === '**' ? '.*' : token === '*' ? '[^/]*' : token === '?' ? '[^/]' : `\\${token}`,
      );
      return { exclude, regex: new RegExp(`^${source}$`) };
    });
  return (file) => {
    const parts = file.split('/');
    let ignored = false;
    for (const rule of rules) {
      for (let depth = 1; depth <= parts.length; depth++) {
        if (rule.regex.test(parts.slice(0, depth).join('/'))) ignored = rule.exclude;
      }
    }
    return ignored;
  };
}

/** The files `docker build .` would send: the working tree's (tracked or not ignored by git), minus .dockerignore. */
function makeContext(into: string): string[] {
  const ignored = dockerignore();
  const files = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', '-z'], { cwd: ROOT, encoding: 'utf8' })
    .split('\0')
    .filter((file) => file !== '' && !ignored(file) && existsSync(path.join(ROOT, file)));
  for (const file of files) {
    mkdirSync(path.dirname(path.join(into, file)), { recursive: true });
    cpSync(path.join(ROOT, file), path.join(into, file));
  }
  return files;
}

const running = new Set<ChildProcess>();

/** Runs a command to its end in its own process group (killed whole by `after` if the test gives up). */
function run(argv: string[], cwd: string, env: NodeJS.ProcessEnv, shell = false): Promise<{ code: number | null; output: string }> {
  const child = shell
    ? spawn('/bin/sh', ['-c', argv.join(' ')], { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(argv[0] as string, argv.slice(1), { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      running.delete(child);
      resolve({ code, output });
    });
  });
}

/** What a RUN sees: a clean environment with the stage's ENV, npm's cache standing in for the cache mount. */
function stageEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, npm_config_update_notifier: 'false' };
  if (process.env.npm_config_cache !== undefined) base.npm_config_cache = process.env.npm_config_cache;
  return { ...base, ...env };
}

interface BuiltStage {
  readonly root: string;
  workdir: string;
  env: Record<string, string>;
}

/** Executes the stages' WORKDIR, ENV, COPY and RUN lines; each stage's `/` is a folder of `into`. */
async function buildStages(context: string, into: string): Promise<Map<string, BuiltStage>> {
  const built = new Map<string, BuiltStage>();
  for (const stage of STAGES) {
    const root = path.join(into, `stage-${stage.name}`);
    mkdirSync(root, { recursive: true });
    const state: BuiltStage = { root, workdir: '/', env: {} };
    const inStage = (containerPath: string): string => path.join(root, path.posix.resolve(state.workdir, containerPath));
    for (const instruction of stage.instructions) {
      const where = `Dockerfile line ${instruction.line} (${instruction.keyword} ${instruction.args})`;
      switch (instruction.keyword) {
        case 'WORKDIR':
          state.workdir = path.posix.resolve(state.workdir, instruction.args);
          mkdirSync(inStage('.'), { recursive: true });
          break;
        case 'ENV':
          Object.assign(state.env, parseEnv(instruction.args));
          break;
        case 'COPY': {
          const { flags, rest } = splitFlags(instruction.args);
          const parts = rest.split(/\s+/);
          const destination = parts.pop() as string;
          const from = flags.get('from');
          const source = from === undefined ? undefined : built.get(from);
          assert.ok(from === undefined || source !== undefined, `${where}: no stage ${from}`);
          for (const part of parts) {
            assert.ok(!/[*?[]/.test(part), `${where}: wildcards not supported here`);
            const src = source === undefined ? path.join(context, part) : path.join(source.root, path.posix.resolve('/', part));
            assert.ok(existsSync(src), `${where}: ${part} does not exist${source === undefined ? ' in the build context' : ''}`);
            const intoFolder = destination.endsWith('/') || destination === '.' || parts.length > 1;
            const target = statSync(src).isDirectory() || !intoFolder ? inStage(destination) : path.join(inStage(destination), path.basename(src));
            cpSync(src, target, { recursive: true });
          }
          break;
        }
        case 'RUN': {
          // Flags (--mount=type=cache,…) only change where and how Docker runs the command.
          const { rest } = splitFlags(instruction.args);
          const argv = execForm(rest);
          const result = await run(argv ?? [rest], inStage('.'), stageEnv(state.env), argv === undefined);
          assert.equal(result.code, 0, `${where} failed:\n${result.output.slice(-4000)}`);
          break;
        }
        default:
          // FROM's image, USER, EXPOSE, HEALTHCHECK, CMD: what the container gets, not how it is built.
          break;
      }
    }
    built.set(stage.name, state);
  }
  return built;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

// ---- The tests ---------------------------------------------------------------

describe('Dockerfile', () => {
  it('builds in one stage and runs from another, both node 20 images', () => {
    assert.ok(STAGES.length >= 2, 'multi-stage');
    for (const stage of STAGES) assert.match(stage.image, /^node:20(\.\d+)*-(bookworm-slim|alpine[\d.]*)$/, `stage ${stage.name}`);
    const build = STAGES[0] as Stage;
    const runs = instructions(build, 'RUN').map((instruction) => splitFlags(instruction.args).rest);
    assert.ok(runs.some((command) => /^npm ci\b/.test(command)), `build stage installs with npm ci: ${runs.join(' | ')}`);
    assert.ok(runs.some((command) => /^npm run build\b/.test(command)), 'build stage builds');
    const runtimeRuns = instructions(FINAL, 'RUN').map((instruction) => splitFlags(instruction.args).rest);
    assert.deepEqual(
      runtimeRuns.filter((command) => /\bnpm\b/.test(command)).map((command) => /^npm ci\b/.test(command) && /--omit=dev\b/.test(command) && /--ignore-scripts\b/.test(command)),
      [true],
      `runtime stage: one npm ci --omit=dev --ignore-scripts (prepare would run tsc): ${runtimeRuns.join(' | ')}`,
    );
    const fromBuild = instructions(FINAL, 'COPY').filter((instruction) => splitFlags(instruction.args).flags.get('from') === build.name);
    assert.ok(fromBuild.some((instruction) => /\/dist\b/.test(instruction.args)), 'dist/ comes from the build stage');
  });

  it('runs the final stage as a user other than root', () => {
    const users = instructions(FINAL, 'USER').map((instruction) => instruction.args.trim());
    const user = users[users.length - 1];
    assert.ok(user !== undefined, 'USER in the final stage');
    assert.ok(!['root', '0'].includes(user.split(':')[0] as string), `USER ${user}`);
    const last = FINAL.instructions.findLastIndex((instruction) => instruction.keyword === 'USER');
    assert.ok(!FINAL.instructions.slice(last).some((instruction) => instruction.keyword === 'RUN'), 'nothing runs as root after USER');
  });

  it('starts node itself in exec form, never npm, and exposes the gRPC port', () => {
    assert.deepEqual(cmd(), ['node', 'dist/src/main.js']);
    for (const instruction of [...instructions(FINAL, 'ENTRYPOINT'), ...instructions(FINAL, 'CMD')]) {
      assert.doesNotMatch(instruction.args, /\bnpm\b/);
    }
    assert.equal(instructions(FINAL, 'ENTRYPOINT').length, 0);
    const env = Object.assign({}, ...instructions(FINAL, 'ENV').map((instruction) => parseEnv(instruction.args))) as Record<string, string>;
    const exposed = instructions(FINAL, 'EXPOSE').flatMap((instruction) => instruction.args.split(/\s+/));
    for (const variable of ['KEYWARD_ADDR', 'KEYWARD_METRICS_ADDR']) {
      const port = env[variable]?.split(':').pop();
      assert.ok(port !== undefined && exposed.includes(port), `${variable} ${env[variable]}: port exposed (${exposed.join(', ')})`);
    }
  });

  it('checks health through grpc.health.v1 with a deadline inside the HEALTHCHECK timeout', () => {
    const { options, argv } = healthcheck();
    assert.deepEqual(argv, ['node', 'dist/src/healthProbe.js']);
    for (const option of ['interval', 'timeout', 'start-period', 'retries']) assert.ok(options.has(option), `HEALTHCHECK --${option}`);
    assert.ok(durationMs(options.get('timeout') as string) > PROBE_DEADLINE_MS, 'the probe gives up before Docker kills it');
    assert.ok(durationMs(options.get('start-period') as string) >= 10_000, 'time to migrate and connect');
  });

  it('keeps node_modules, dist, .git and local secrets out of the build context', () => {
    const ignored = dockerignore();
    for (const file of ['node_modules/pg/package.json', 'dist/src/main.js', '.git/HEAD', '.env', 'bench/results/full.json']) assert.ok(ignored(file), file);
    for (const file of ['package.json', 'package-lock.json', 'src/main.ts', 'migrations/0001_api_keys.sql', 'proto/keyward/v1/keyward.proto', 'tsconfig.json']) {
      assert.ok(!ignored(file), file);
    }
  });

  describe('built on the host as written', () => {
    let scratch: string;
    let runtime: BuiltStage;
    let server: ChildProcess | undefined;

    before(
      async () => {
        scratch = mkdtempSync(path.join(os.tmpdir(), 'keyward-dockerfile-'));
        const context = path.join(scratch, 'context');
        mkdirSync(context);
        makeContext(context);
        const built = await buildStages(context, scratch);
        runtime = built.get(FINAL.name) as BuiltStage;
      },
      { timeout: 400_000 },
    );

    after(async () => {
      if (server !== undefined && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
      for (const child of running) {
        try {
          if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
        } catch {
          // The group has already gone.
        }
      }
      if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
      await assertNoLeaks();
    });

    const app = (): string => path.join(runtime.root, runtime.workdir);

    it('leaves the sources, tests and dev dependencies out of the runtime stage', () => {
      assert.deepEqual(readdirSync(app()).sort(), ['dist', 'migrations', 'node_modules', 'package-lock.json', 'package.json', 'proto']);
      assert.deepEqual(readdirSync(path.join(app(), 'dist')), ['src']);
      const manifest = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
      for (const name of Object.keys(manifest.dependencies)) assert.ok(existsSync(path.join(app(), 'node_modules', name, 'package.json')), `dependency ${name} installed`);
      // Dev only: what the lockfile marks `dev` (a dev dependency that a dependency also needs, like @types/node, stays).
      const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
      const devOnly = Object.entries(lock.packages).filter(([, entry]) => entry.dev === true).map(([where]) => where);
      assert.ok(devOnly.length > 0, 'the lockfile marks dev-only packages');
      const installed = devOnly.filter((where) => existsSync(path.join(app(), where)));
      assert.deepEqual(installed, [], 'dev-only packages in the runtime stage');
      for (const name of ['typescript', 'tsx', '@bufbuild/buf']) assert.ok(!existsSync(path.join(app(), 'node_modules', name)), name);
    });

    it('HEALTHCHECK: unhealthy with nothing listening or NOT_SERVING, healthy on SERVING', async () => {
      const { argv } = healthcheck();
      const probe = async (port: number) => run([process.execPath, ...argv.slice(1)], app(), stageEnv({ ...runtime.env, KEYWARD_ADDR: `0.0.0.0:${port}` }));
      const nobody = await probe(await freePort());
      assert.equal(nobody.code, 1, nobody.output);
      assert.match(nobody.output, /127\.0\.0\.1:\d+: no answer/);

      const grpc = new Server();
      const health = new HealthImplementation({ '': 'NOT_SERVING' });
      health.addToServer(grpc);
      const port = await new Promise<number>((resolve, reject) =>
        grpc.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
      );
      try {
        const stopping = await probe(port);
        assert.deepEqual([stopping.code, stopping.output.trim()], [1, `127.0.0.1:${port}: NOT_SERVING`]);
        health.setStatus('', 'SERVING');
        const serving = await probe(port);
        assert.deepEqual([serving.code, serving.output.trim()], [0, `127.0.0.1:${port}: SERVING`]);
      } finally {
        grpc.forceShutdown();
      }
    });

    it('CMD serves from the runtime stage against PostgreSQL and Redis, healthy, and stops on SIGTERM', async () => {
      const argv = cmd();
      const port = await freePort();
      const env = stageEnv({
        ...runtime.env,
        KEYWARD_ADDR: `127.0.0.1:${port}`,
        KEYWARD_METRICS_ADDR: '127.0.0.1:0',
        DATABASE_URL: testDatabaseUrl(),
        REDIS_URL: testRedisUrl(),
        KEYWARD_REDIS_PREFIX: `deploy-${randomUUID()}:`,
        KEYWARD_ADMIN_TOKEN: ADMIN_TOKEN,
        // As test/helpers/serverProcess.ts: files run in parallel on few cores.
        KEYWARD_DB_VERIFY_TIMEOUT_MS: '5000',
      });
      assert.equal(env.NODE_ENV, 'production', 'the image sets NODE_ENV');
      const child = spawn(process.execPath, argv.slice(1), { cwd: app(), env, stdio: ['ignore', 'pipe', 'pipe'] });
      server = child;
      let log = '';
      child.stdout?.on('data', (chunk: Buffer) => (log += chunk.toString('utf8')));
      child.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString('utf8')));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      await waitUntil('keyward started from the runtime stage', () => {
        if (child.exitCode !== null) throw new Error(`keyward exited ${child.exitCode}:\n${log}`);
        return log.includes('"msg":"keyward started"');
      });
      const { argv: probeArgv } = healthcheck();
      // The probe runs with the container's environment (KEYWARD_ADDR as the server has it).
      const probe = await run([process.execPath, ...probeArgv.slice(1)], app(), env);
      assert.deepEqual([probe.code, probe.output.trim()], [0, `127.0.0.1:${port}: SERVING`], log);
      child.kill('SIGTERM');
      assert.equal(await exited, 0, log);
      assert.match(log, /"msg":"keyward stopped"/);
    });
  });
});
