/**
 * docker-compose.yml, read as Compose reads it (YAML with merge keys), since
 * no container engine runs the tests: two keyward replicas built from the
 * Dockerfile on one PostgreSQL and one Redis, each dependency healthy first.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { packageRoot } from '../src/packageRoot';

const ROOT = packageRoot();
const TEXT = readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8');

interface Service {
  image?: string;
  build?: string | { context?: string; dockerfile?: string };
  command?: string | string[];
  entrypoint?: string | string[];
  environment?: Record<string, string | null> | string[];
  depends_on?: Record<string, { condition?: string }> | string[];
  healthcheck?: { test?: string | string[]; disable?: boolean };
  ports?: Array<string | { published?: string | number; target?: number }>;
  volumes?: Array<string | { type?: string; source?: string; target?: string }>;
  restart?: string;
  stop_grace_period?: string;
}

interface ComposeFile {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

const compose = parse(TEXT, { merge: true }) as ComposeFile;
const KEYWARD_REPLICAS = ['keyward-1', 'keyward-2'];
/** The port keyward listens on in the image (Dockerfile: ENV KEYWARD_ADDR=0.0.0.0:<port>). */
const CONTAINER_GRPC_PORT = Number(/KEYWARD_ADDR=0\.0\.0\.0:(\d+)/.exec(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'))?.[1]);

function service(name: string): Service {
  const found = compose.services[name];
  assert.ok(found !== undefined, `service ${name} missing; services: ${Object.keys(compose.services).join(', ')}`);
  return found;
}

function environment(name: string): Record<string, string | null> {
  const env = service(name).environment ?? {};
  assert.ok(!Array.isArray(env), `${name}: environment as a map`);
  return env;
}

function healthTest(name: string): string {
  const check = service(name).healthcheck;
  assert.ok(check?.test !== undefined && check.disable !== true, `${name}: health check`);
  return Array.isArray(check.test) ? check.test.join(' ') : check.test;
}

/** Short-syntax ports, `[ip:]host:container`, as { host, container }. */
function publishedPorts(name: string): Array<{ host: number; container: number }> {
  return (service(name).ports ?? []).map((entry) => {
    assert.equal(typeof entry, 'string', `${name}: ports in short syntax`);
    const parts = (entry as string).split(':');
    assert.ok(parts.length >= 2, `${name}: port ${String(entry)} names a host port`);
    return { host: Number(parts[parts.length - 2]), container: Number(parts[parts.length - 1]) };
  });
}

/** Compose durations like `30s`, `1m30s`, in ms. */
function durationMs(text: string): number {
  const units: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
  let total = 0;
  for (const [, amount, unit] of text.matchAll(/(\d+)(ms|s|m|h)/g)) total += Number(amount) * (units[unit as string] as number);
  return total;
}

describe('docker-compose.yml', () => {
  it('has PostgreSQL, Redis and two keyward replicas, nothing else', () => {
    assert.deepEqual(Object.keys(compose.services).sort(), ['keyward-1', 'keyward-2', 'postgres', 'redis']);
  });

  it('runs PostgreSQL 15 or 16 on a named volume, with a pg_isready health check', () => {
    const postgres = service('postgres');
    assert.match(postgres.image ?? '', /^postgres:1[56](\.|-|$)/);
    const data = (postgres.volumes ?? []).map((volume) => (typeof volume === 'string' ? volume.split(':') : [volume.source, volume.target]));
    const named = data.find(([, target]) => target === '/var/lib/postgresql/data');
    assert.ok(named !== undefined, 'the data directory is a volume');
    assert.ok(compose.volumes !== undefined && named[0] !== undefined && named[0] in compose.volumes, `volume ${named[0]} is a named volume`);
    assert.match(healthTest('postgres'), /pg_isready/);
    assert.equal(postgres.restart, 'unless-stopped');
  });

  it('runs Redis 7 with noeviction, no persistence and a redis-cli ping health check', () => {
    const redis = service('redis');
    assert.match(redis.image ?? '', /^redis:7(\.|-|$)/);
    const command = redis.command;
    assert.ok(Array.isArray(command), 'command in exec form');
    const option = (name: string): string | undefined => command[command.indexOf(name) + 1];
    assert.equal(command[0], 'redis-server');
    assert.equal(option('--maxmemory-policy'), 'noeviction');
    assert.equal(option('--save'), '');
    assert.equal(option('--appendonly'), 'no');
    assert.match(healthTest('redis'), /redis-cli.*ping/);
    assert.equal(redis.restart, 'unless-stopped');
  });

  for (const name of KEYWARD_REPLICAS) {
    it(`${name}: built from the Dockerfile, running its CMD and health check`, () => {
      const keyward = service(name);
      const build = keyward.build;
      assert.ok(build !== undefined, `${name} is built`);
      const context = typeof build === 'string' ? build : (build.context ?? '.');
      const dockerfile = typeof build === 'string' ? 'Dockerfile' : (build.dockerfile ?? 'Dockerfile');
      assert.equal(path.resolve(ROOT, context), ROOT);
      assert.ok(existsSync(path.join(ROOT, context, dockerfile)), `${dockerfile} exists`);
      assert.equal(dockerfile, 'Dockerfile');
      // The image's CMD starts node itself (signals reach it) and its HEALTHCHECK stays on.
      assert.equal(keyward.command, undefined);
      assert.equal(keyward.entrypoint, undefined);
      assert.equal(keyward.healthcheck, undefined);
      assert.equal(keyward.restart, 'unless-stopped');
      // Longer than KEYWARD_SHUTDOWN_TIMEOUT_MS's default (10 s) plus the usage write.
      assert.ok(durationMs(keyward.stop_grace_period ?? '10s') > 10_000, `${name}: stop_grace_period ${keyward.stop_grace_period}`);
    });

    it(`${name}: PostgreSQL and Redis of the compose file, and a required admin token`, () => {
      const env = environment(name);
      const postgres = environment('postgres');
      const database = new URL((env.DATABASE_URL ?? '').replace(/\$\{[^}]*\}/g, 'password'));
      assert.equal(database.protocol, 'postgres:');
      assert.equal(database.hostname, 'postgres');
      assert.equal(database.username, postgres.POSTGRES_USER);
      assert.equal(database.pathname, `/${postgres.POSTGRES_DB}`);
      // The same password expression on both sides, so that one variable sets both.
      assert.ok(env.DATABASE_URL?.includes(`:${postgres.POSTGRES_PASSWORD}@`), 'DATABASE_URL carries POSTGRES_PASSWORD');
      const redis = new URL(env.REDIS_URL ?? '');
      assert.equal(redis.protocol, 'redis:');
      assert.equal(redis.hostname, 'redis');
      // `${VAR:?message}`: compose refuses to start without it rather than run with a default token.
      assert.match(env.KEYWARD_ADMIN_TOKEN ?? '', /^\$\{KEYWARD_ADMIN_TOKEN:\?[^}]+\}$/);
    });

    it(`${name}: starts once PostgreSQL and Redis are healthy`, () => {
      const dependsOn = service(name).depends_on;
      assert.ok(dependsOn !== undefined && !Array.isArray(dependsOn), 'depends_on with conditions');
      assert.equal(dependsOn.postgres?.condition, 'service_healthy');
      assert.equal(dependsOn.redis?.condition, 'service_healthy');
    });
  }

  it('publishes each replica on its own host port, the container port being the one keyward listens on', () => {
    assert.ok(Number.isInteger(CONTAINER_GRPC_PORT), 'Dockerfile sets KEYWARD_ADDR=0.0.0.0:<port>');
    const grpcHostPorts = KEYWARD_REPLICAS.map((name) => {
      const grpc = publishedPorts(name).filter((port) => port.container === CONTAINER_GRPC_PORT);
      assert.equal(grpc.length, 1, `${name} publishes gRPC port ${CONTAINER_GRPC_PORT} once`);
      return (grpc[0] as { host: number }).host;
    });
    assert.deepEqual(grpcHostPorts, [50051, 50052]);
    const allHostPorts = Object.keys(compose.services).flatMap((name) => publishedPorts(name).map((port) => port.host));
    assert.equal(new Set(allHostPorts).size, allHostPorts.length, `host ports distinct: ${allHostPorts.join(', ')}`);
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    assert.ok(readme.includes('\n## Deploying\n'), 'README has a "Deploying" section');
    const deploying = readme.slice(readme.indexOf('\n## Deploying\n'), readme.indexOf('\n## ', readme.indexOf('\n## Deploying\n') + 1));
    for (const port of grpcHostPorts) assert.match(deploying, new RegExp(`\\b${port}\\b`), `README "Deploying" documents host port ${port}`);
  });
});
