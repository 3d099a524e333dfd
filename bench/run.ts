/**
 * `npm run bench [-- --quick]`: Verify beside the gRPC floor, as ratios
 * measured in one run (README, "Performance").
 *
 * Starts a private Redis, two scratch databases (1,000 keys; 1,000,000 keys, 100,000 with --quick),
 * keyward in each configuration, and the floor (bench/floorServer.ts: the same
 * stack, a handler that does nothing). Each step loads one server with h2load
 * (one node:http2 generator for the case whose bodies vary) in a process of
 * its own, for a fixed time, after a warm-up that is not counted; floor steps
 * are interleaved with keyward steps so that machine noise hits both alike,
 * and every keyward step is compared with the floor steps just before and
 * after it. Verdicts are checked on the server (its counts by code must match
 * the calls the generator saw answered), and sampled with a real client.
 *
 * Load shapes: every level of calls in flight is measured over one HTTP/2
 * connection (1 × n streams: how a grpc-js channel, so a REST service, calls
 * keyward) and over several (≤ 4 connections, 4 × 16 at 64); at 1 in flight
 * the two are the same and measured once. BENCH_SHAPES=one or =several keeps
 * one shape. Without h2load installed (or with BENCH_GENERATOR=raw) the cases
 * of one body are loaded by bench/h2rawLoad.ts instead.
 *
 * `--quick`: a short run at 64 in flight only (under 4 minutes). `--memory-only`: just the memory
 * measurement. BENCH_NODE_ARGS="--cpu-prof …" passes flags to every keyward.
 *
 * A focused run: BENCH_CASES=in-process,redis (comma-separated ids) runs only
 * those cases, with the floor steps around them as always (ids: in-process,
 * redis, redis-spread, postgres, malformed, negative, usage-off, in-process-1m,
 * postgres-1m, stream, mix; and the extras revoke, memory, verifier-cost). Only the servers
 * and databases those cases need are started or seeded (no 1,000,000-key
 * seeding unless a 1m case, the mix or memory is asked for), and only their
 * targets are checked. BENCH_LEVELS=16,64 sets the levels of calls in flight
 * (any run). A focused run writes bench/results/focused.md and focused.json
 * (focused-quick.* with --quick), never full.* or quick.*. For example:
 * `BENCH_CASES=in-process,redis BENCH_LEVELS=16,64 npm run bench` (about 4 minutes).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { arch, cpus, release, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { VerifyCode, VerifyResponse, verifyCodeToJSON } from '../src/gen/keyward/v1/keyward';
import { packageRoot } from '../src/packageRoot';
import { AdminClient, VerifierClient } from '../test/helpers/clients';
import { waitForMetric } from '../test/helpers/metrics';
import { PrivateRedis } from '../test/helpers/PrivateRedis';
import { withScratchDatabase } from '../test/helpers/scratchDatabase';
import { seedFiller, seedKeys, typoOf, unknownSecret } from './fixtures';
import { type VerifyFields, verifyBody, verifyStreamBody } from './grpcFrames';
import { GENERATOR, LOAD_SHAPES, type LoadResult, type LoadShape, SHAPE_LABELS, benchFile, h2load, h2mix, spread } from './loadGenerators';
import { type CaseInfo, type Row, type StepResult, type TargetCheck, aggregate, rowsTable, targetsTable } from './report';
import { mean, percentiles } from './stats';
import { type Target, startFloor, startKeyward } from './targets';
import { measureVerifierCost } from './verifierCost';

const { values: args } = parseArgs({ options: { quick: { type: 'boolean', default: false }, 'memory-only': { type: 'boolean', default: false } } });
const QUICK = args.quick === true;
const BASE_PLAN = QUICK
  ? // The targets' level only, shorter memory and in-process phases: it must stay well under 3 minutes.
    { levels: [64], repeats: 1, seconds: 1.5, warmSeconds: 0.5, firstWarmSeconds: 2, largeKeys: 100_000, realKeys: 20_000, revokes: 100, memoryKeys: 20_000, settleMs: 4_000, memoryLoadSeconds: 3, verifierCalls: 50_000 }
  : // 4 repeats (5 before both shapes were measured) keep a full run near an hour.
    { levels: [1, 16, 64, 256], repeats: 4, seconds: 3, warmSeconds: 1, firstWarmSeconds: 8, largeKeys: 1_000_000, realKeys: 100_000, revokes: 1_000, memoryKeys: 100_000, settleMs: 12_000, memoryLoadSeconds: 8, verifierCalls: 200_000 };

/** Comma-separated values of an environment variable, or undefined when it is unset or empty. */
function listFromEnv(name: string): string[] | undefined {
  const items = (process.env[name] ?? '')
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
  return items.length === 0 ? undefined : items;
}

const CASE_IDS = ['in-process', 'redis', 'redis-spread', 'postgres', 'malformed', 'negative', 'usage-off', 'in-process-1m', 'postgres-1m', 'stream', 'mix'] as const;
const EXTRA_IDS = ['revoke', 'memory', 'verifier-cost'] as const;
/** BENCH_CASES: the cases and extras of a focused run (undefined: all of them, a full or quick run). */
const SELECTED = listFromEnv('BENCH_CASES');
for (const id of SELECTED ?? []) {
  if (!(CASE_IDS as readonly string[]).includes(id) && !(EXTRA_IDS as readonly string[]).includes(id)) {
    throw new Error(`BENCH_CASES: unknown case ${JSON.stringify(id)} (cases: ${CASE_IDS.join(', ')}; extras: ${EXTRA_IDS.join(', ')})`);
  }
}
const FOCUSED = SELECTED !== undefined;
const wanted = (id: (typeof CASE_IDS)[number] | (typeof EXTRA_IDS)[number]): boolean => SELECTED === undefined || SELECTED.includes(id);
const LEVELS = listFromEnv('BENCH_LEVELS')?.map((level) => {
  const n = Number(level);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`BENCH_LEVELS: ${JSON.stringify(level)} is not a number of calls in flight`);
  return n;
});
const SHAPES = (listFromEnv('BENCH_SHAPES') ?? LOAD_SHAPES).map((shape) => {
  if (!(LOAD_SHAPES as readonly string[]).includes(shape)) throw new Error(`BENCH_SHAPES: ${JSON.stringify(shape)} is neither one nor several`);
  return shape as LoadShape;
});
const PLAN = { ...BASE_PLAN, levels: LEVELS ?? BASE_PLAN.levels, shapes: SHAPES };
/** The shapes measured at a level: those that differ there (at 1 in flight, one connection either way). */
function shapesAt(inFlight: number): LoadShape[] {
  const seen = new Set<string>();
  return PLAN.shapes.filter((shape) => {
    const { clients, streams } = spread(inFlight, shape);
    const key = `${clients}x${streams}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
/** Whether the large database is needed (its seeding takes minutes). */
const NEEDS_LARGE = wanted('in-process-1m') || wanted('postgres-1m') || wanted('mix') || wanted('memory');
/** How many keys the large database holds, as the report names it (fewer in a quick run). */
const LARGE = PLAN.largeKeys.toLocaleString('en-US');
const STREAM_BATCH = 100;
const SCOPES = ['jobs:read', 'technicians:read'];
const WHITELIST = ['203.0.113.0/24'];
const CLIENT_IP = '203.0.113.7';

interface BenchCase extends CaseInfo {
  readonly target: Target;
  /** What a sample call through a real client sends. */
  readonly fields: VerifyFields;
  readonly method: 'Verify' | 'VerifyStream';
  /** h2load's body file, or the mix generator's bodies file. */
  readonly body: string;
  readonly generator: 'h2load' | 'h2mix';
  /** The verdict every answer must carry; for the mix, the share of OK. */
  readonly expect: { readonly code: VerifyCode } | { readonly okShare: number };
  readonly floorGroup: 'unary' | 'mix';
}

const progress = (text: string): void => {
  process.stderr.write(`\r\x1b[2K${text}`);
};

function load(c: BenchCase, inFlight: number, seconds: number, shape: LoadShape = 'several'): Promise<LoadResult> {
  return c.generator === 'h2mix' ? h2mix(c.target.port, c.body, inFlight, seconds, shape) : h2load(c.target.port, c.method, c.body, inFlight, seconds, shape);
}

async function measure(c: BenchCase, inFlight: number, shape: LoadShape): Promise<StepResult> {
  // The mix touches 10,000 keys: its warm-up is longer, so that each is cached again (the in-process TTL is a minute).
  await load(c, inFlight, c.generator === 'h2mix' ? 3 * PLAN.warmSeconds : PLAN.warmSeconds, shape);
  const before = await c.target.stats();
  const result = await load(c, inFlight, PLAN.seconds, shape);
  const after = await c.target.stats();
  const calls = after.calls - before.calls;
  const seen = result.requests * c.perRequest;
  if (Math.abs(calls - seen) > Math.max(2 * c.perRequest * inFlight, 0.01 * seen)) {
    throw new Error(`${c.id} at ${inFlight}: the server answered ${calls} calls, the generator saw ${seen} succeed`);
  }
  if (c.target.name !== 'floor') {
    const delta = (code: VerifyCode) => (after.codes.get(verifyCodeToJSON(code)) ?? 0) - (before.codes.get(verifyCodeToJSON(code)) ?? 0);
    if ('code' in c.expect && delta(c.expect.code) !== calls) {
      throw new Error(`${c.id} at ${inFlight}: ${calls - delta(c.expect.code)} of ${calls} answers were not ${verifyCodeToJSON(c.expect.code)}`);
    }
    if ('okShare' in c.expect) {
      const share = delta(VerifyCode.VERIFY_CODE_OK) / calls;
      if (Math.abs(share - c.expect.okShare) > 0.02 || delta(VerifyCode.VERIFY_CODE_OK) + delta(VerifyCode.VERIFY_CODE_INVALID_KEY) !== calls) {
        throw new Error(`${c.id} at ${inFlight}: unexpected verdicts (OK share ${share.toFixed(3)})`);
      }
    }
  }
  return {
    caseId: c.id,
    inFlight,
    shape,
    repeat: 0,
    callsPerSec: seen / result.seconds,
    latencyUs: result.latencyUs,
    cpuUsPerCall: (after.cpuUs - before.cpuUs) / calls,
    usageStatements: after.usageStatements - before.usageStatements,
    postgresLookups: after.postgresLookups - before.postgresLookups,
    redisLookups: after.redisLookups - before.redisLookups,
    redisErrors: after.redisErrors - before.redisErrors,
    calls,
  };
}

/** Runs `sequence` (floor, case, floor, case, …, floor) and pairs each case with the mean of its two floors. */
async function runSequence(
  sequence: readonly BenchCase[],
  inFlight: number,
  shape: LoadShape,
  repeat: number,
  counter: { done: number; total: number },
): Promise<StepResult[]> {
  const measured: StepResult[] = [];
  for (const c of sequence) {
    const step = { ...(await measure(c, inFlight, shape)), repeat };
    measured.push(step);
    counter.done++;
    progress(
      `[${counter.done}/${counter.total}] repeat ${repeat}/${PLAN.repeats} · ${inFlight} in flight, ${SHAPE_LABELS[shape]} · ${c.id}: ${Math.round(step.callsPerSec).toLocaleString('en-US')} calls/s`,
    );
  }
  const isFloor = (i: number) => sequence[i]?.target.name === 'floor';
  return measured.map((step, i) => {
    if (isFloor(i)) return step;
    const floors = [i - 1, i + 1].filter(isFloor).map((j) => measured[j] as StepResult);
    return {
      ...step,
      floor: {
        callsPerSec: mean(floors.map((f) => f.callsPerSec)),
        p99: mean(floors.map((f) => f.latencyUs.p99)),
        cpuUsPerCall: mean(floors.map((f) => f.cpuUsPerCall)),
      },
    };
  });
}

/** floor, a, floor, b, floor, …; reversed on even repeats so that no case always follows the floor. */
function interleave(floor: BenchCase, cases: readonly BenchCase[], repeat: number): BenchCase[] {
  const ordered = repeat % 2 === 0 ? [...cases].reverse() : [...cases];
  return [floor, ...ordered.flatMap((c) => [c, floor])];
}

async function revokeLatency(targets: readonly Target[], admins: readonly AdminClient[], verifiers: readonly VerifierClient[]): Promise<number[]> {
  const accountId = `bench-revoke-${Date.now()}`;
  const latencies: number[] = [];
  // The first revokes warm up the JIT of every instance on the path; they are not counted.
  const warmUp = 50;
  for (let i = 0; i < warmUp + PLAN.revokes; i++) {
    const admin = admins[i % targets.length] as AdminClient;
    const { key, secret } = await admin.newKey(accountId, { scopes: SCOPES });
    for (const verifier of verifiers) await verifier.verify({ key: secret, clientIp: CLIENT_IP });
    const started = process.hrtime.bigint();
    await admin.revokeKey({ accountId, keyId: key?.id });
    if (i >= warmUp) latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
    for (const verifier of verifiers) {
      if ((await verifier.verify({ key: secret })).code !== VerifyCode.VERIFY_CODE_REVOKED) throw new Error('a revoked key still verified');
    }
    if (i % 50 === 0) progress(`revoke latency: ${i}/${PLAN.revokes}`);
  }
  return latencies;
}

async function measureCacheMemory(
  database: string,
  secrets: readonly string[],
  withRedis: (prefix: string) => Record<string, string>,
  hot: VerifyFields,
): Promise<{ result: Extras['memory']; stoppers: Array<() => Promise<void>> }> {
  const [filled, oneKey] = await Promise.all([
    startKeyward('keyward, memory', { DATABASE_URL: database, ...withRedis('bench-memory:') }),
    startKeyward('keyward, memory baseline', { DATABASE_URL: database, ...withRedis('bench-memory-baseline:') }),
  ]);
  const stoppers = [() => filled.stop(), () => oneKey.stop()];
  const instances = [filled, oneKey];
  await Promise.all(instances.map((k) => waitForMetric(k.server.metricsPort as number, (m) => m.get('keyward_cache_trusted') === 1)));
  const clients = instances.map((k) => new VerifierClient(k.server.address));
  const settle = () => new Promise((resolve) => setTimeout(resolve, PLAN.settleMs));
  for (const client of clients) for (let i = 0; i < 2_000; i++) await client.verify({ ...hot, key: secrets[i % 10] as string });
  await settle();
  const before = await Promise.all(instances.map((k) => k.stats()));
  const batch = 100;
  for (let i = 0; i < PLAN.memoryKeys; i += batch) {
    const keys = secrets.slice(i, Math.min(i + batch, PLAN.memoryKeys));
    await Promise.all([
      clients[0]?.verifyStream(keys.map((key, j) => ({ requestId: String(j), key, clientIp: CLIENT_IP }))),
      clients[1]?.verifyStream(keys.map((_, j) => ({ requestId: String(j), key: secrets[0] as string, clientIp: CLIENT_IP }))),
    ]);
  }
  // Then ordinary traffic on both (one hot key), so that the garbage of the fill is collected.
  const hotBody = benchFile(verifyBody(hot));
  for (const k of instances) await h2load(k.port, 'Verify', hotBody, 16, PLAN.memoryLoadSeconds);
  await settle();
  const after = await Promise.all(instances.map((k) => k.stats()));
  if (process.env.BENCH_MEMORY_DEBUG !== undefined) {
    for (const k of instances) {
      const m = await waitForMetric(k.server.metricsPort as number, () => true);
      console.error(k.name, [...m].filter(([name]) => /heap_size|external|heap_space_size_used|resident/.test(name)).map(([name, v]) => `${name}=${(v / 1_048_576).toFixed(1)}MB`).join('\n  '));
    }
  }
  const entries = (await waitForMetric(filled.server.metricsPort as number, () => true)).get('keyward_cache_local_entries') ?? 0;
  for (const client of clients) client.close();
  const grown = instances.map((_, i) => ((after[i]?.rssBytes ?? 0) - (before[i]?.rssBytes ?? 0)) / 1_048_576) as [number, number];
  return { result: { keys: PLAN.memoryKeys, entries, deltaMb: grown[0] - grown[1], filledMb: grown[0], oneKeyMb: grown[1] }, stoppers };
}

/** `--memory-only`: just the memory measurement (for working on the cache's footprint). */
async function memoryOnly(): Promise<void> {
  const redis = await PrivateRedis.start();
  try {
    await withScratchDatabase('keyward_bench_memory', async (database) => {
      const secrets = await seedKeys(database, PLAN.memoryKeys, { accountId: 'bench-account', scopes: SCOPES, ipWhitelist: WHITELIST });
      const { result, stoppers } = await measureCacheMemory(database, secrets, (prefix) => ({ REDIS_URL: redis.url, KEYWARD_REDIS_PREFIX: prefix }), {
        key: secrets[0] as string,
        clientIp: CLIENT_IP,
        requiredScopes: ['jobs:read'],
      });
      for (const stop of stoppers) await stop();
      console.log(JSON.stringify(result));
    });
  } finally {
    await redis.stop();
  }
}

/** Runs `use` with the large scratch database, or with undefined when no selected case needs it (a focused run). */
function withLargeDatabase(use: (large: string | undefined) => Promise<void>): Promise<void> {
  return NEEDS_LARGE ? withScratchDatabase('keyward_bench_large', use) : use(undefined);
}

/** The value of a server or key a selected case needs (started or seeded only then). */
function needed<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`bench: ${what} was not started, yet a selected case needs it`);
  return value;
}

async function main(): Promise<void> {
  if (args['memory-only'] === true) return memoryOnly();
  const startedAt = new Date();
  const redis = await PrivateRedis.start();
  const stoppers: Array<() => Promise<void>> = [async () => redis.stop()];
  try {
    await withScratchDatabase('keyward_bench_small', (small) =>
      withLargeDatabase(async (large) => {
        progress('seeding the databases…');
        const seedOptions = { accountId: 'bench-account', scopes: SCOPES, ipWhitelist: WHITELIST };
        const smallKeys = await seedKeys(small, 1_000, seedOptions);
        await seedFiller(small, 0);
        let largeKeys: string[] = [];
        if (large !== undefined) {
          largeKeys = await seedKeys(large, PLAN.realKeys, seedOptions);
          await seedFiller(large, PLAN.largeKeys - PLAN.realKeys);
        }

        progress('starting servers…');
        const withRedis = (prefix: string) => ({ REDIS_URL: redis.url, KEYWARD_REDIS_PREFIX: prefix });
        // `keyward` always (the floor's answer is its answer); the others only for the cases selected.
        const startIf = (need: boolean, name: string, env: () => Record<string, string>) => (need ? startKeyward(name, env()) : Promise.resolve(undefined));
        const largeUrl = () => needed(large, 'the large database');
        const [full, noLocal, noCache, usageOff, largeFull, largeNoCache] = await Promise.all([
          startKeyward('keyward', { DATABASE_URL: small, ...withRedis('bench-small:') }),
          startIf(wanted('redis') || wanted('redis-spread'), 'keyward, in-process cache off', () => ({ DATABASE_URL: small, ...withRedis('bench-small:'), KEYWARD_LOCAL_CACHE: 'false' })),
          startIf(wanted('postgres'), 'keyward, no caches', () => ({ DATABASE_URL: small })),
          startIf(wanted('usage-off'), 'keyward, usage tracking off', () => ({ DATABASE_URL: small, ...withRedis('bench-small:'), KEYWARD_USAGE_TRACKING: 'false' })),
          startIf(wanted('in-process-1m') || wanted('mix'), `keyward, ${LARGE} keys`, () => ({ DATABASE_URL: largeUrl(), ...withRedis('bench-large:') })),
          startIf(wanted('postgres-1m'), `keyward, ${LARGE} keys, no caches`, () => ({ DATABASE_URL: largeUrl() })),
        ]);
        const keywards = [full, noLocal, noCache, usageOff, largeFull, largeNoCache].filter((k) => k !== undefined);
        stoppers.push(...keywards.map((k) => () => k.stop()));
        await Promise.all(
          [full, noLocal, usageOff, largeFull]
            .filter((k) => k !== undefined)
            .map((k) => waitForMetric(k.server.metricsPort as number, (m) => m.get('keyward_cache_trusted') === 1)),
        );

        const hot: VerifyFields = { key: smallKeys[0] as string, clientIp: CLIENT_IP, requiredScopes: ['jobs:read'] };
        const hotLarge: VerifyFields = { ...hot, key: (largeKeys[0] ?? hot.key) as string };
        const sampler = new VerifierClient(full.server.address);
        const okAnswer = await sampler.verify(hot);
        if (okAnswer.code !== VerifyCode.VERIFY_CODE_OK) throw new Error(`the hot key answered ${okAnswer.code}`);
        const floor = await startFloor(Buffer.from(VerifyResponse.encode(okAnswer).finish()).toString('base64'));
        stoppers.push(() => floor.stop());

        const body = (fields: VerifyFields) => benchFile(verifyBody(fields));
        const unary = (id: string, label: string, target: Target, fields: VerifyFields, code: VerifyCode): BenchCase => ({
          id,
          label,
          target,
          fields,
          method: 'Verify',
          body: body(fields),
          generator: 'h2load',
          perRequest: 1,
          expect: { code },
          floorGroup: 'unary',
        });
        const OK = VerifyCode.VERIFY_CODE_OK;
        const floorUnary: BenchCase = { ...unary('floor', 'floor (empty handler)', floor, hot, OK) };
        const makers: ReadonlyArray<readonly [(typeof CASE_IDS)[number], () => BenchCase]> = [
          ['in-process', () => unary('in-process', 'Verify, warm key (in-process hit)', full, hot, OK)],
          ['redis', () => unary('redis', 'Verify, in-process cache off (Redis hit, with its MAC check)', needed(noLocal, 'keyward without in-process cache'), hot, OK)],
          ['postgres', () => unary('postgres', 'Verify, both caches off (Postgres)', needed(noCache, 'keyward without caches'), hot, OK)],
          ['malformed', () => unary('malformed', 'malformed key (checksum reject)', full, { ...hot, key: typoOf(hot.key) }, VerifyCode.VERIFY_CODE_INVALID_KEY)],
          ['negative', () => unary('negative', 'unknown well-formed key (negative cache)', full, { ...hot, key: unknownSecret() }, VerifyCode.VERIFY_CODE_INVALID_KEY)],
          ['usage-off', () => unary('usage-off', 'Verify, warm key, usage tracking off', needed(usageOff, 'keyward without usage tracking'), hot, OK)],
          ['in-process-1m', () => unary('in-process-1m', `Verify, warm key, ${LARGE} keys stored`, needed(largeFull, `keyward with ${LARGE} keys`), hotLarge, OK)],
          ['postgres-1m', () => unary('postgres-1m', `Verify, no caches, ${LARGE} keys stored`, needed(largeNoCache, `keyward with ${LARGE} keys, no caches`), hotLarge, OK)],
          [
            'stream',
            () => ({
              ...unary('stream', `VerifyStream, warm key (${STREAM_BATCH} calls per stream)`, full, hot, OK),
              method: 'VerifyStream',
              body: benchFile(verifyStreamBody(hot, STREAM_BATCH)),
              perRequest: STREAM_BATCH,
            }),
          ],
        ];
        const cases: BenchCase[] = makers.filter(([id]) => wanted(id)).map(([, make]) => make());
        // Cases whose bodies vary call to call (the node:http2 generator), with a floor of their own on that generator.
        const bodiesFile = (secrets: readonly string[]) => benchFile(JSON.stringify(secrets.map((key) => verifyBody({ ...hot, key }).toString('base64'))), 'json');
        const varied: BenchCase[] = [];
        if (wanted('mix')) {
          const mixKeys = Array.from({ length: 10_000 }, (_, i) =>
            i % 10 === 9 ? (i % 20 === 19 ? typoOf(largeKeys[i] as string) : unknownSecret()) : (largeKeys[i] as string),
          );
          varied.push({
            ...unary('mix', '90% valid / 10% invalid across 10,000 keys', needed(largeFull, `keyward with ${LARGE} keys`), hotLarge, OK),
            body: bodiesFile(mixKeys),
            generator: 'h2mix',
            expect: { okShare: 0.9 },
            floorGroup: 'mix',
          });
        }
        if (wanted('redis-spread')) {
          // The Redis hit of one hot key mostly shares reads (calls of one key in flight together wait for one read);
          // over 1,000 keys nearly every call reads Redis and checks the entry's MAC itself.
          varied.push({
            ...unary('redis-spread', 'Verify over 1,000 keys, in-process cache off (a Redis read and MAC check per call)', needed(noLocal, 'keyward without in-process cache'), hot, OK),
            body: bodiesFile(smallKeys),
            generator: 'h2mix',
            floorGroup: 'mix',
          });
        }
        const mixes =
          varied.length === 0
            ? undefined
            : {
                floor: { ...floorUnary, id: 'floor-mix', label: 'floor (empty handler), mix generator', body: (varied[0] as BenchCase).body, generator: 'h2mix', floorGroup: 'mix' } satisfies BenchCase,
                cases: varied,
              };

        // A sample of every case's answer, through a real client.
        for (const c of [...cases.filter((k) => k.method === 'Verify'), ...varied]) {
          const client = new VerifierClient(`127.0.0.1:${c.target.port}`);
          const answer = await client.verify(c.fields);
          client.close();
          const expected = 'code' in c.expect ? c.expect.code : OK;
          if (answer.code !== expected) throw new Error(`${c.id}: the sample answered ${verifyCodeToJSON(answer.code)}`);
        }
        const [streamed] = await sampler.verifyStream([{ requestId: 'sample', ...hot }]);
        if (streamed?.outcome?.$case !== 'result' || streamed.outcome.value.code !== OK) throw new Error('VerifyStream sample failed');
        sampler.close();

        const all = [floorUnary, ...(mixes === undefined ? [] : [mixes.floor]), ...cases, ...varied];
        const perLevel = (cases.length === 0 ? 0 : 2 * cases.length + 1) + (varied.length === 0 ? 0 : 2 * varied.length + 1);
        const levelShapes = PLAN.levels.flatMap((level) => shapesAt(level).map((shape) => [level, shape] as const));
        const counter = { done: 0, total: PLAN.repeats * levelShapes.length * perLevel + all.length };
        // A long first warm-up per case, so that every server's JIT has settled before anything counts.
        for (const c of all) {
          await load(c, 64, PLAN.firstWarmSeconds);
          await measure(c, 16, 'several');
          counter.done++;
          progress(`[${counter.done}/${counter.total}] warming up ${c.id}`);
        }
        const steps: StepResult[] = [];
        for (let repeat = 1; repeat <= PLAN.repeats; repeat++) {
          for (const [level, shape] of levelShapes) {
            if (cases.length > 0) steps.push(...(await runSequence(interleave(floorUnary, cases, repeat), level, shape, repeat, counter)));
            if (mixes !== undefined) steps.push(...(await runSequence(interleave(mixes.floor, mixes.cases, repeat), level, shape, repeat, counter)));
          }
        }

        let revokes: Extras['revokes'];
        if (wanted('revoke')) {
          progress('revoke latency: starting three instances of their own…');
          // A fleet of exactly three (a Redis prefix of its own: the benchmark's other instances are not members).
          const fleet = await Promise.all([1, 2, 3].map((i) => startKeyward(`keyward revoke ${i}`, { DATABASE_URL: small, ...withRedis('bench-revoke:') })));
          stoppers.push(...fleet.map((k) => () => k.stop()));
          await Promise.all(fleet.map((k) => waitForMetric(k.server.metricsPort as number, (m) => m.get('keyward_cache_trusted') === 1)));
          const admins = fleet.map((k) => new AdminClient(k.server.address));
          const verifiers = fleet.map((k) => new VerifierClient(k.server.address));
          const latencies = await revokeLatency(fleet, admins, verifiers);
          for (const client of [...admins, ...verifiers]) client.close();
          const [p50, p99] = percentiles(latencies, [50, 99]) as [number, number];
          revokes = { p50, p99, max: Math.max(...latencies), count: latencies.length };
        }

        let memory: Extras['memory'];
        if (wanted('memory')) {
          progress('memory: filling an in-process cache…');
          // Two identical instances get the same traffic, except that one spreads it over
          // memoryKeys keys and the other sends it all with one key: the difference in RSS
          // is what the cache itself adds, not the garbage and heap slack of the traffic.
          const measured = await measureCacheMemory(needed(large, 'the large database'), largeKeys, withRedis, hot);
          stoppers.push(...measured.stoppers);
          memory = measured.result;
        }
        let verifierCost: Extras['verifierCost'];
        if (wanted('verifier-cost')) {
          progress('timing keyward\'s own Verify code…');
          verifierCost = measureVerifierCost(PLAN.verifierCalls);
        }
        const rss = new Map<string, number>();
        for (const target of [floor, ...keywards]) rss.set(target.name, (await target.stats()).rssBytes);
        progress('');
        process.stderr.write('\r\x1b[2K');
        writeReport(steps, [floorUnary, ...cases, ...(mixes === undefined ? [] : [mixes.floor, ...mixes.cases])], { startedAt, revokes, memory, verifierCost, rss });
      }),
    );
  } finally {
    for (const stop of stoppers.reverse()) await stop().catch(() => {});
  }
}

/** What a run measured besides the steps; a focused run may leave out revoke latency, memory and the Verify code's cost. */
interface Extras {
  readonly startedAt: Date;
  readonly revokes: { readonly p50: number; readonly p99: number; readonly max: number; readonly count: number } | undefined;
  readonly memory: { readonly keys: number; readonly entries: number; readonly deltaMb: number; readonly filledMb: number; readonly oneKeyMb: number } | undefined;
  readonly rss: ReadonlyMap<string, number>;
  readonly verifierCost: ReadonlyArray<{ readonly case: string; readonly nsPerCall: number }> | undefined;
}

/** The targets (README, "Performance") of what the run measured, in each load shape: a focused run checks only those of its cases. */
function checkTargets(rows: readonly Row[], extras: Extras): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const shapes = LOAD_SHAPES.filter((shape) => rows.some((r) => r.inFlight === 64 && r.shape === shape));
  for (const shape of shapes) checks.push(...checkShapeTargets(rows, shape));
  const { revokes, memory } = extras;
  if (revokes !== undefined) {
    checks.push({ target: 'revoke with three instances: p99 < 10 ms', measured: `${revokes.p99.toFixed(2)} ms (p50 ${revokes.p50.toFixed(2)} ms)`, met: revokes.p99 < 10 });
  }
  if (memory !== undefined) {
    checks.push({
      target: `in-process cache holding ${memory.keys.toLocaleString('en-US')} keys adds ≤ 100 MB RSS`,
      measured: `${memory.deltaMb.toFixed(1)} MB (${memory.entries.toLocaleString('en-US')} entries; RSS +${memory.filledMb.toFixed(1)} MB filled vs +${memory.oneKeyMb.toFixed(1)} MB with the same calls on one key)`,
      met: memory.deltaMb <= 100 * (memory.keys / 100_000),
    });
  }
  return checks;
}

/** The throughput targets at 64 in flight in one load shape. */
function checkShapeTargets(rows: readonly Row[], shape: LoadShape): TargetCheck[] {
  const at = (id: string, level = 64) => rows.find((r) => r.caseId === id && r.inFlight === level && r.shape === shape);
  const has = (...ids: string[]) => ids.every((id) => at(id) !== undefined);
  const ratio = (id: string) => at(id)?.ratio?.median ?? Number.NaN;
  const f = (v: number) => v.toFixed(2);
  const where = ` (${SHAPE_LABELS[shape]})`;
  const checks: TargetCheck[] = [];
  if (has('in-process')) {
    checks.push(
      { target: `in-process hit: calls/s ≥ 0.90 × floor${where}`, measured: f(ratio('in-process')), met: ratio('in-process') >= 0.9 },
      { target: `in-process hit: CPU/call ≤ 1.15 × floor${where}`, measured: f(at('in-process')?.cpuRatio ?? Number.NaN), met: (at('in-process')?.cpuRatio ?? 9) <= 1.15 },
      { target: `in-process hit: p99 ≤ 1.2 × floor${where}`, measured: f(at('in-process')?.p99Ratio ?? Number.NaN), met: (at('in-process')?.p99Ratio ?? 9) <= 1.2 },
    );
  }
  if (has('redis')) checks.push({ target: `Redis hit, with its MAC check: calls/s ≥ 0.80 × floor${where}`, measured: f(ratio('redis')), met: ratio('redis') >= 0.8 });
  if (has('postgres')) checks.push({ target: `Postgres path: ≥ 0.35 × floor${where}`, measured: f(ratio('postgres')), met: ratio('postgres') >= 0.35 });
  if (has('malformed')) checks.push({ target: `checksum reject: ≥ 0.95 × floor${where}`, measured: f(ratio('malformed')), met: ratio('malformed') >= 0.95 });
  if (has('negative')) checks.push({ target: `negative-cache hit: ≥ 0.95 × floor${where}`, measured: f(ratio('negative')), met: ratio('negative') >= 0.95 });
  for (const [large, small] of [
    ['in-process-1m', 'in-process'],
    ['postgres-1m', 'postgres'],
  ] as const) {
    if (!has(large, small)) continue;
    const change = ratio(large) / ratio(small) - 1;
    const cpuChange = (at(large)?.cpuRatio ?? Number.NaN) / (at(small)?.cpuRatio ?? Number.NaN) - 1;
    checks.push({
      target: `${LARGE} keys stored (${small}): within 5% of 1,000 keys${where}`,
      measured: `calls/s ${(100 * change).toFixed(1)}%, CPU/call ${(100 * cpuChange).toFixed(1)}%`,
      met: Math.abs(change) <= 0.05 && Math.abs(cpuChange) <= 0.05,
    });
  }
  const stream = at('stream');
  if (stream !== undefined) {
    const floorRate = stream.callsPerSec / (stream.ratio?.median ?? Number.NaN);
    checks.push({
      target: `VerifyStream: ≥ 4 × the unary floor’s calls/s${where}`,
      measured: `${f(stream.callsPerSec / floorRate)}× (${Math.round(stream.callsPerSec).toLocaleString('en-US')} calls/s)`,
      met: (stream.ratio?.median ?? 0) >= 4,
    });
  }
  if (has('in-process', 'usage-off')) {
    const usage = 1 - ratio('in-process') / ratio('usage-off');
    checks.push({ target: `usage tracking costs a few % of throughput at most${where}`, measured: `${(100 * usage).toFixed(1)}%`, met: usage <= 0.05 });
  }
  return checks;
}

/** How many calls of the Redis cases read Redis themselves (and so checked an entry's MAC), the others sharing a read in flight. */
function redisReads(rows: readonly Row[]): string[] {
  const lines = ['redis', 'redis-spread'].flatMap((id) => {
    const mine = rows.filter((r) => r.caseId === id);
    if (mine.length === 0) return [];
    return [`- ${mine[0]?.label}: ${mine.map((r) => `${(r.redisLookupsPer100k / 1_000).toFixed(1)} at ${r.inFlight} in flight (${SHAPE_LABELS[r.shape]})`).join(', ')}`];
  });
  return lines.length === 0 ? [] : ['Redis reads (each with its MAC check) per 100 Verify calls:', '', ...lines, ''];
}

function writeReport(steps: readonly StepResult[], cases: readonly CaseInfo[], extras: Extras): void {
  const rows = aggregate(steps, cases);
  const checks = checkTargets(rows, extras);
  const at64 = (id: string) => rows.find((r) => r.caseId === id && r.inFlight === 64 && r.shape === 'several') ?? rows.find((r) => r.caseId === id && r.inFlight === 64);
  const usageRow = at64('mix');
  const inProcessRow = at64('in-process');
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const machine = `${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()} ${arch()}, Node ${process.version}`;
  const kind = FOCUSED ? `focused run${QUICK ? ', quick plan' : ''}: ${(SELECTED ?? []).join(', ')}` : `${QUICK ? 'quick' : 'full'} run`;
  const { revokes, verifierCost } = extras;
  const markdown = [
    `# keyward benchmark (${kind})`,
    '',
    `${extras.startedAt.toISOString()} · ${machine}`,
    '',
    `Each step: ${PLAN.seconds} s after ${PLAN.warmSeconds} s of warm-up, repeated ${PLAN.repeats}×, at ${PLAN.levels.join(', ')} in flight, each level in ${PLAN.shapes.map((shape) => SHAPE_LABELS[shape]).join(' and in ')} (at 64: ${PLAN.shapes.map((shape) => `${spread(64, shape).clients} × ${spread(64, shape).streams}`).join(', ')}); floor steps interleaved with keyward steps; ratios against the floor steps around each keyward step.`,
    `Load: ${GENERATOR === 'h2load' ? 'h2load (nghttp2)' : 'bench/h2rawLoad.ts (raw HTTP/2 frames; h2load not installed)'}, one process; the mix cases use a node:http2 generator for the floor and keyward alike. Latency of VerifyStream is per stream of ${STREAM_BATCH} calls.`,
    ...(FOCUSED ? ['', `A focused run (BENCH_CASES): only the cases above and the floor, and only their targets; see full.md for the rest.`] : []),
    '',
    '## Targets (at 64 in flight)',
    '',
    targetsTable(checks),
    '',
    ...redisReads(rows),
    '## All figures',
    '',
    rowsTable(rows),
    '',
    ...(usageRow === undefined && inProcessRow === undefined
      ? []
      : [
          usageRow === undefined
            ? `Usage tracking: ${inProcessRow?.usageStatementsPer100k.toFixed(1) ?? '–'} Postgres statements per 100,000 Verify calls of one hot key (64 in flight).`
            : `Usage tracking: ${usageRow.usageStatementsPer100k.toFixed(1)} Postgres statements per 100,000 Verify calls (mix over 10,000 keys, 64 in flight); ${inProcessRow?.usageStatementsPer100k.toFixed(1) ?? '–'} for one hot key.`,
          `Postgres lookups per 100,000 Verify calls, in-process case: ${inProcessRow?.postgresLookupsPer100k.toFixed(1) ?? '–'}.`,
          '',
        ]),
    ...(revokes === undefined
      ? []
      : [`Revoke with three instances, caches warm (${revokes.count} revokes): p50 ${revokes.p50.toFixed(2)} ms, p99 ${revokes.p99.toFixed(2)} ms, max ${revokes.max.toFixed(2)} ms.`, '']),
    ...(verifierCost === undefined
      ? []
      : [
          `keyward's own Verify code, without gRPC (the real Verifier and in-process cache, timed in the benchmark's process; the floor's whole call costs about ${Math.round(rows.find((r) => r.caseId === 'floor' && r.inFlight === 64)?.cpuUsPerCall ?? 0)} µs of CPU):`,
          '',
          ...verifierCost.map((c) => `- ${c.case}: ${Math.round(c.nsPerCall)} ns per call`),
          '',
        ]),
    'Server RSS after the run:',
    '',
    ...[...extras.rss].map(([name, bytes]) => `- ${name}: ${(bytes / 1_048_576).toFixed(0)} MB`),
    '',
  ].join('\n');
  const dir = path.join(packageRoot(), 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  // A focused run never overwrites the full (committed) or quick results.
  const name = FOCUSED ? (QUICK ? 'focused-quick' : 'focused') : QUICK ? 'quick' : 'full';
  writeFileSync(path.join(dir, `${name}.md`), markdown);
  writeFileSync(
    path.join(dir, `${name}.json`),
    `${JSON.stringify({ machine, plan: PLAN, cases: SELECTED ?? 'all', rows, checks, extras: { ...extras, rss: Object.fromEntries(extras.rss) }, steps }, null, 2)}\n`,
  );
  console.log(markdown);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write('\n');
    console.error(error);
    process.exit(1);
  },
);
