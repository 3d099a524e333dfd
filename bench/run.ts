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
 * `--quick`: a short run at 64 in flight only (under 3 minutes). `--memory-only`: just the memory
 * measurement. BENCH_NODE_ARGS="--cpu-prof …" passes flags to every keyward.
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
import { type LoadResult, benchFile, h2load, h2mix } from './loadGenerators';
import { type CaseInfo, type Row, type StepResult, type TargetCheck, aggregate, rowsTable, targetsTable } from './report';
import { mean, percentiles } from './stats';
import { type Target, startFloor, startKeyward } from './targets';
import { measureVerifierCost } from './verifierCost';

const { values: args } = parseArgs({ options: { quick: { type: 'boolean', default: false }, 'memory-only': { type: 'boolean', default: false } } });
const QUICK = args.quick === true;
const PLAN = QUICK
  ? // The targets' level only, shorter memory and in-process phases: it must stay well under 3 minutes.
    { levels: [64], repeats: 1, seconds: 1.5, warmSeconds: 0.5, firstWarmSeconds: 2, largeKeys: 100_000, realKeys: 20_000, revokes: 100, memoryKeys: 20_000, settleMs: 4_000, memoryLoadSeconds: 3, verifierCalls: 50_000 }
  : { levels: [1, 16, 64, 256], repeats: 5, seconds: 3, warmSeconds: 1, firstWarmSeconds: 8, largeKeys: 1_000_000, realKeys: 100_000, revokes: 1_000, memoryKeys: 100_000, settleMs: 12_000, memoryLoadSeconds: 8, verifierCalls: 200_000 };
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

function load(c: BenchCase, inFlight: number, seconds: number): Promise<LoadResult> {
  return c.generator === 'h2mix' ? h2mix(c.target.port, c.body, inFlight, seconds) : h2load(c.target.port, c.method, c.body, inFlight, seconds);
}

async function measure(c: BenchCase, inFlight: number): Promise<StepResult> {
  // The mix touches 10,000 keys: its warm-up is longer, so that each is cached again (the in-process TTL is a minute).
  await load(c, inFlight, c.generator === 'h2mix' ? 3 * PLAN.warmSeconds : PLAN.warmSeconds);
  const before = await c.target.stats();
  const result = await load(c, inFlight, PLAN.seconds);
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
async function runSequence(sequence: readonly BenchCase[], inFlight: number, repeat: number, counter: { done: number; total: number }): Promise<StepResult[]> {
  const measured: StepResult[] = [];
  for (const c of sequence) {
    const step = { ...(await measure(c, inFlight)), repeat };
    measured.push(step);
    counter.done++;
    progress(`[${counter.done}/${counter.total}] repeat ${repeat}/${PLAN.repeats} · ${inFlight} in flight · ${c.id}: ${Math.round(step.callsPerSec).toLocaleString('en-US')} calls/s`);
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

async function main(): Promise<void> {
  if (args['memory-only'] === true) return memoryOnly();
  const startedAt = new Date();
  const redis = await PrivateRedis.start();
  const stoppers: Array<() => Promise<void>> = [async () => redis.stop()];
  try {
    await withScratchDatabase('keyward_bench_small', (small) =>
      withScratchDatabase('keyward_bench_large', async (large) => {
        progress('seeding the databases…');
        const seedOptions = { accountId: 'bench-account', scopes: SCOPES, ipWhitelist: WHITELIST };
        const smallKeys = await seedKeys(small, 1_000, seedOptions);
        const largeKeys = await seedKeys(large, PLAN.realKeys, seedOptions);
        await seedFiller(large, PLAN.largeKeys - PLAN.realKeys);
        await seedFiller(small, 0);

        progress('starting servers…');
        const withRedis = (prefix: string) => ({ REDIS_URL: redis.url, KEYWARD_REDIS_PREFIX: prefix });
        const [full, noLocal, noCache, usageOff, largeFull, largeNoCache] = await Promise.all([
          startKeyward('keyward', { DATABASE_URL: small, ...withRedis('bench-small:') }),
          startKeyward('keyward, in-process cache off', { DATABASE_URL: small, ...withRedis('bench-small:'), KEYWARD_LOCAL_CACHE: 'false' }),
          startKeyward('keyward, no caches', { DATABASE_URL: small }),
          startKeyward('keyward, usage tracking off', { DATABASE_URL: small, ...withRedis('bench-small:'), KEYWARD_USAGE_TRACKING: 'false' }),
          startKeyward(`keyward, ${LARGE} keys`, { DATABASE_URL: large, ...withRedis('bench-large:') }),
          startKeyward(`keyward, ${LARGE} keys, no caches`, { DATABASE_URL: large }),
        ]);
        const keywards = [full, noLocal, noCache, usageOff, largeFull, largeNoCache];
        stoppers.push(...keywards.map((k) => () => k.stop()));
        await Promise.all(
          [full, noLocal, usageOff, largeFull].map((k) => waitForMetric(k.server.metricsPort as number, (m) => m.get('keyward_cache_trusted') === 1)),
        );

        const hot: VerifyFields = { key: smallKeys[0] as string, clientIp: CLIENT_IP, requiredScopes: ['jobs:read'] };
        const hotLarge: VerifyFields = { ...hot, key: largeKeys[0] as string };
        const sampler = new VerifierClient(full.server.address);
        const okAnswer = await sampler.verify(hot);
        if (okAnswer.code !== VerifyCode.VERIFY_CODE_OK) throw new Error(`the hot key answered ${okAnswer.code}`);
        const floor = await startFloor(Buffer.from(VerifyResponse.encode(okAnswer).finish()).toString('base64'));
        stoppers.push(() => floor.stop());

        const mixBodies: string[] = [];
        for (let i = 0; i < 10_000; i++) {
          const key = i % 10 === 9 ? (i % 20 === 19 ? typoOf(largeKeys[i] as string) : unknownSecret()) : (largeKeys[i] as string);
          mixBodies.push(verifyBody({ ...hot, key }).toString('base64'));
        }
        const mixFile = benchFile(JSON.stringify(mixBodies), 'json');

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
        const floorMix: BenchCase = { ...floorUnary, id: 'floor-mix', label: 'floor (empty handler), mix generator', body: mixFile, generator: 'h2mix', floorGroup: 'mix' };
        const cases: BenchCase[] = [
          unary('in-process', 'Verify, warm key (in-process hit)', full, hot, OK),
          unary('redis', 'Verify, in-process cache off (Redis hit)', noLocal, hot, OK),
          unary('postgres', 'Verify, both caches off (Postgres)', noCache, hot, OK),
          unary('malformed', 'malformed key (checksum reject)', full, { ...hot, key: typoOf(hot.key) }, VerifyCode.VERIFY_CODE_INVALID_KEY),
          unary('negative', 'unknown well-formed key (negative cache)', full, { ...hot, key: unknownSecret() }, VerifyCode.VERIFY_CODE_INVALID_KEY),
          unary('usage-off', 'Verify, warm key, usage tracking off', usageOff, hot, OK),
          unary('in-process-1m', `Verify, warm key, ${LARGE} keys stored`, largeFull, hotLarge, OK),
          unary('postgres-1m', `Verify, no caches, ${LARGE} keys stored`, largeNoCache, hotLarge, OK),
          {
            ...unary('stream', `VerifyStream, warm key (${STREAM_BATCH} calls per stream)`, full, hot, OK),
            method: 'VerifyStream',
            body: benchFile(verifyStreamBody(hot, STREAM_BATCH)),
            perRequest: STREAM_BATCH,
          },
        ];
        const mix: BenchCase = {
          ...unary('mix', '90% valid / 10% invalid across 10,000 keys', largeFull, hotLarge, OK),
          body: mixFile,
          generator: 'h2mix',
          expect: { okShare: 0.9 },
          floorGroup: 'mix',
        };

        // A sample of every case's answer, through a real client.
        for (const c of [...cases.filter((k) => k.method === 'Verify'), mix]) {
          const client = new VerifierClient(`127.0.0.1:${c.target.port}`);
          const answer = await client.verify(c.fields);
          client.close();
          const expected = 'code' in c.expect ? c.expect.code : OK;
          if (answer.code !== expected) throw new Error(`${c.id}: the sample answered ${verifyCodeToJSON(answer.code)}`);
        }
        const [streamed] = await sampler.verifyStream([{ requestId: 'sample', ...hot }]);
        if (streamed?.outcome?.$case !== 'result' || streamed.outcome.value.code !== OK) throw new Error('VerifyStream sample failed');
        sampler.close();

        const all = [floorUnary, floorMix, ...cases, mix];
        const counter = { done: 0, total: PLAN.repeats * PLAN.levels.length * (2 * cases.length + 1 + 3) + all.length };
        // A long first warm-up per case, so that every server's JIT has settled before anything counts.
        for (const c of all) {
          await load(c, 64, PLAN.firstWarmSeconds);
          await measure(c, 16);
          counter.done++;
          progress(`[${counter.done}/${counter.total}] warming up ${c.id}`);
        }
        const steps: StepResult[] = [];
        for (let repeat = 1; repeat <= PLAN.repeats; repeat++) {
          for (const level of PLAN.levels) {
            steps.push(...(await runSequence(interleave(floorUnary, cases, repeat), level, repeat, counter)));
            steps.push(...(await runSequence([floorMix, mix, floorMix], level, repeat, counter)));
          }
        }

        progress('revoke latency: starting three instances of their own…');
        // A fleet of exactly three (a Redis prefix of its own: the benchmark's other instances are not members).
        const fleet = await Promise.all([1, 2, 3].map((i) => startKeyward(`keyward revoke ${i}`, { DATABASE_URL: small, ...withRedis('bench-revoke:') })));
        stoppers.push(...fleet.map((k) => () => k.stop()));
        await Promise.all(fleet.map((k) => waitForMetric(k.server.metricsPort as number, (m) => m.get('keyward_cache_trusted') === 1)));
        const admins = fleet.map((k) => new AdminClient(k.server.address));
        const verifiers = fleet.map((k) => new VerifierClient(k.server.address));
        const revokes = await revokeLatency(fleet, admins, verifiers);
        for (const client of [...admins, ...verifiers]) client.close();
        const [revokeP50, revokeP99] = percentiles(revokes, [50, 99]) as [number, number];

        progress('memory: filling an in-process cache…');
        // Two identical instances get the same traffic, except that one spreads it over
        // memoryKeys keys and the other sends it all with one key: the difference in RSS
        // is what the cache itself adds, not the garbage and heap slack of the traffic.
        const memory = await measureCacheMemory(large, largeKeys, withRedis, hot);
        stoppers.push(...memory.stoppers);
        progress('timing keyward\'s own Verify code…');
        const verifierCost = measureVerifierCost(PLAN.verifierCalls);
        const rss = new Map<string, number>();
        for (const target of [floor, ...keywards]) rss.set(target.name, (await target.stats()).rssBytes);
        progress('');
        process.stderr.write('\r\x1b[2K');
        writeReport(steps, [floorUnary, ...cases, floorMix, mix], {
          startedAt,
          revokes: { p50: revokeP50, p99: revokeP99, max: Math.max(...revokes), count: revokes.length },
          memory: memory.result,
          verifierCost,
          rss,
        });
      }),
    );
  } finally {
    for (const stop of stoppers.reverse()) await stop().catch(() => {});
  }
}

interface Extras {
  readonly startedAt: Date;
  readonly revokes: { readonly p50: number; readonly p99: number; readonly max: number; readonly count: number };
  readonly memory: { readonly keys: number; readonly entries: number; readonly deltaMb: number; readonly filledMb: number; readonly oneKeyMb: number };
  readonly rss: ReadonlyMap<string, number>;
  readonly verifierCost: ReadonlyArray<{ readonly case: string; readonly nsPerCall: number }>;
}

function checkTargets(rows: readonly Row[], extras: Extras): TargetCheck[] {
  const at = (id: string, level = 64) => rows.find((r) => r.caseId === id && r.inFlight === level);
  const ratio = (id: string) => at(id)?.ratio?.median ?? Number.NaN;
  const f = (v: number) => v.toFixed(2);
  const checks: TargetCheck[] = [
    { target: 'in-process hit: calls/s ≥ 0.90 × floor at 64', measured: f(ratio('in-process')), met: ratio('in-process') >= 0.9 },
    { target: 'in-process hit: CPU/call ≤ 1.15 × floor', measured: f(at('in-process')?.cpuRatio ?? Number.NaN), met: (at('in-process')?.cpuRatio ?? 9) <= 1.15 },
    { target: 'in-process hit: p99 ≤ 1.2 × floor', measured: f(at('in-process')?.p99Ratio ?? Number.NaN), met: (at('in-process')?.p99Ratio ?? 9) <= 1.2 },
    { target: 'Redis hit: ≥ 0.60 × floor', measured: f(ratio('redis')), met: ratio('redis') >= 0.6 },
    { target: 'Postgres path: ≥ 0.35 × floor', measured: f(ratio('postgres')), met: ratio('postgres') >= 0.35 },
    { target: 'checksum reject: ≥ 0.95 × floor', measured: f(ratio('malformed')), met: ratio('malformed') >= 0.95 },
    { target: 'negative-cache hit: ≥ 0.95 × floor', measured: f(ratio('negative')), met: ratio('negative') >= 0.95 },
  ];
  for (const [large, small] of [
    ['in-process-1m', 'in-process'],
    ['postgres-1m', 'postgres'],
  ] as const) {
    const change = ratio(large) / ratio(small) - 1;
    const cpuChange = (at(large)?.cpuRatio ?? Number.NaN) / (at(small)?.cpuRatio ?? Number.NaN) - 1;
    checks.push({
      target: `${LARGE} keys stored (${small}): within 5% of 1,000 keys`,
      measured: `calls/s ${(100 * change).toFixed(1)}%, CPU/call ${(100 * cpuChange).toFixed(1)}%`,
      met: Math.abs(change) <= 0.05 && Math.abs(cpuChange) <= 0.05,
    });
  }
  checks.push(
    { target: 'revoke with three instances: p99 < 10 ms', measured: `${extras.revokes.p99.toFixed(2)} ms (p50 ${extras.revokes.p50.toFixed(2)} ms)`, met: extras.revokes.p99 < 10 },
    {
      target: `in-process cache holding ${extras.memory.keys.toLocaleString('en-US')} keys adds ≤ 100 MB RSS`,
      measured: `${extras.memory.deltaMb.toFixed(1)} MB (${extras.memory.entries.toLocaleString('en-US')} entries; RSS +${extras.memory.filledMb.toFixed(1)} MB filled vs +${extras.memory.oneKeyMb.toFixed(1)} MB with the same calls on one key)`,
      met: extras.memory.deltaMb <= 100 * (extras.memory.keys / 100_000),
    },
  );
  const stream = at('stream');
  const floorRate = stream === undefined ? Number.NaN : stream.callsPerSec / (stream.ratio?.median ?? Number.NaN);
  checks.push({
    target: 'VerifyStream: ≥ 3 × the unary floor’s calls/s',
    measured: `${f((stream?.callsPerSec ?? 0) / floorRate)}× (${Math.round(stream?.callsPerSec ?? 0).toLocaleString('en-US')} calls/s)`,
    met: (stream?.ratio?.median ?? 0) >= 3,
  });
  const usage = 1 - ratio('in-process') / ratio('usage-off');
  checks.push({ target: 'usage tracking costs a few % of throughput at most', measured: `${(100 * usage).toFixed(1)}%`, met: usage <= 0.05 });
  return checks;
}

function writeReport(steps: readonly StepResult[], cases: readonly CaseInfo[], extras: Extras): void {
  const rows = aggregate(steps, cases);
  const checks = checkTargets(rows, extras);
  const usageRow = rows.find((r) => r.caseId === 'mix' && r.inFlight === 64);
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const machine = `${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()} ${arch()}, Node ${process.version}`;
  const markdown = [
    `# keyward benchmark (${QUICK ? 'quick' : 'full'} run)`,
    '',
    `${extras.startedAt.toISOString()} · ${machine}`,
    '',
    `Each step: ${PLAN.seconds} s after ${PLAN.warmSeconds} s of warm-up, repeated ${PLAN.repeats}×; floor steps interleaved with keyward steps; ratios against the floor steps around each keyward step.`,
    `Load: h2load (nghttp2), one process, ≤ 4 connections; the mix case uses a node:http2 generator for the floor and keyward alike. Latency of VerifyStream is per stream of ${STREAM_BATCH} calls.`,
    '',
    '## Targets (at 64 in flight)',
    '',
    targetsTable(checks),
    '',
    '## All figures',
    '',
    rowsTable(rows),
    '',
    `Usage tracking: ${usageRow?.usageStatementsPer100k.toFixed(1) ?? '–'} Postgres statements per 100,000 Verify calls (mix over 10,000 keys, 64 in flight); ${rows.find((r) => r.caseId === 'in-process' && r.inFlight === 64)?.usageStatementsPer100k.toFixed(1) ?? '–'} for one hot key.`,
    `Postgres lookups per 100,000 Verify calls, in-process case: ${rows.find((r) => r.caseId === 'in-process' && r.inFlight === 64)?.postgresLookupsPer100k.toFixed(1) ?? '–'}.`,
    '',
    `Revoke with three instances, caches warm (${extras.revokes.count} revokes): p50 ${extras.revokes.p50.toFixed(2)} ms, p99 ${extras.revokes.p99.toFixed(2)} ms, max ${extras.revokes.max.toFixed(2)} ms.`,
    '',
    `keyward's own Verify code, without gRPC (the real Verifier and in-process cache, timed in the benchmark's process; the floor's whole call costs about ${Math.round(rows.find((r) => r.caseId === 'floor' && r.inFlight === 64)?.cpuUsPerCall ?? 0)} µs of CPU):`,
    '',
    ...extras.verifierCost.map((c) => `- ${c.case}: ${Math.round(c.nsPerCall)} ns per call`),
    '',
    'Server RSS after the run:',
    '',
    ...[...extras.rss].map(([name, bytes]) => `- ${name}: ${(bytes / 1_048_576).toFixed(0)} MB`),
    '',
  ].join('\n');
  const dir = path.join(packageRoot(), 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const name = QUICK ? 'quick' : 'full';
  writeFileSync(path.join(dir, `${name}.md`), markdown);
  writeFileSync(path.join(dir, `${name}.json`), `${JSON.stringify({ machine, plan: PLAN, rows, checks, extras: { ...extras, rss: Object.fromEntries(extras.rss) }, steps }, null, 2)}\n`);
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
