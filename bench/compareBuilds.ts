/**
 * Before/after in one run: keyward of this tree and keyward of another build
 * (a copy of an earlier `dist/` with its package.json, proto/ and migrations/,
 * e.g. made before a change), each beside the floor, in interleaved steps,
 * as ratios to the floor steps around each step (README, "Performance").
 *
 *   BENCH_BEFORE=/tmp/keyward-before node dist/bench/compareBuilds.js
 *
 * BENCH_BEFORE: the other build's root (without it, only this tree's keyward);
 * BENCH_BUILDS="name=/root;name2=/root2": more builds, each named.
 * BENCH_VARIANTS="name:VAR=value,VAR2=value;name2:VAR=value": more keywards of
 * this tree, each with that environment too (e.g. a setting's cost).
 * BENCH_SHAPES=one,several (default both), BENCH_LEVELS=64, BENCH_REPEATS=6,
 * BENCH_SECONDS=3, BENCH_METHOD=Verify|VerifyStream (default Verify).
 * The in-process hit of one warm key, the case of the throughput target.
 * Prints one table and writes bench/results/compare.json (BENCH_COMPARE_NAME:
 * another name than compare).
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { VerifyCode, VerifyResponse } from '../src/gen/keyward/v1/keyward';
import { packageRoot } from '../src/packageRoot';
import { VerifierClient } from '../test/helpers/clients';
import { waitForMetric } from '../test/helpers/metrics';
import { PrivateRedis } from '../test/helpers/PrivateRedis';
import { withScratchDatabase } from '../test/helpers/scratchDatabase';
import { seedKeys } from './fixtures';
import { verifyBody, verifyStreamBody } from './grpcFrames';
import { GENERATOR, LOAD_SHAPES, type LoadShape, benchFile, h2load } from './loadGenerators';
import { median } from './stats';
import { type Target, startFloor, startKeyward } from './targets';

const list = (name: string, fallback: string): string[] => (process.env[name] || fallback).split(',').map((s) => s.trim()).filter((s) => s !== '');
const SHAPES = list('BENCH_SHAPES', LOAD_SHAPES.join(',')) as LoadShape[];
const LEVELS = list('BENCH_LEVELS', '64').map(Number);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 6);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const METHOD = process.env.BENCH_METHOD === 'VerifyStream' ? 'VerifyStream' : 'Verify';
const PER_REQUEST = METHOD === 'VerifyStream' ? 100 : 1;
const BEFORE = process.env.BENCH_BEFORE;
const BUILDS = (process.env.BENCH_BUILDS ?? '')
  .split(';')
  .filter((b) => b.trim() !== '')
  .map((b) => {
    const [name, root] = b.split('=');
    return { name: (name as string).trim(), root: (root ?? '').trim() };
  });
const VARIANTS = (process.env.BENCH_VARIANTS ?? '')
  .split(';')
  .filter((v) => v.trim() !== '')
  .map((v) => {
    const [name, settings = ''] = v.split(':');
    return { name: (name as string).trim(), env: Object.fromEntries(settings.split(',').filter((kv) => kv !== '').map((kv) => kv.split('=').map((x) => x.trim()) as [string, string])) };
  });

interface Step {
  readonly target: string;
  readonly shape: LoadShape;
  readonly inFlight: number;
  readonly callsPerSec: number;
  readonly cpuUsPerCall: number;
}

async function step(target: Target, body: string, shape: LoadShape, inFlight: number): Promise<Step> {
  await h2load(target.port, METHOD, body, inFlight, 1, shape);
  const before = await target.stats();
  const result = await h2load(target.port, METHOD, body, inFlight, SECONDS, shape);
  const after = await target.stats();
  const calls = after.calls - before.calls;
  return { target: target.name, shape, inFlight, callsPerSec: (result.requests * PER_REQUEST) / result.seconds, cpuUsPerCall: (after.cpuUs - before.cpuUs) / calls };
}

async function main(): Promise<void> {
  const redis = await PrivateRedis.start();
  const stoppers: Array<() => Promise<void>> = [async () => redis.stop()];
  try {
    await withScratchDatabase('keyward_bench_compare', async (database) => {
      const [secret] = await seedKeys(database, 1_000, { accountId: 'bench-account', scopes: ['jobs:read', 'technicians:read'], ipWhitelist: ['203.0.113.0/24'] });
      const hot = { key: secret as string, clientIp: '203.0.113.7', requiredScopes: ['jobs:read'] };
      const env = { DATABASE_URL: database, REDIS_URL: redis.url, KEYWARD_REDIS_PREFIX: 'bench-compare:' };
      const keywards = await Promise.all([
        startKeyward('after', env),
        // The other build's main.js runs; this tree's, named after it, is only an ignored argument.
        ...(BEFORE === undefined ? [] : [startKeyward('before', env, [path.join(BEFORE, 'dist', 'src', 'main.js')])]),
        ...BUILDS.map((b) => startKeyward(b.name, env, [path.join(b.root, 'dist', 'src', 'main.js')])),
        ...VARIANTS.map((v) => startKeyward(v.name, { ...env, ...v.env })),
      ]);
      stoppers.push(...keywards.map((k) => () => k.stop()));
      await Promise.all(keywards.map((k) => waitForMetric(k.server.metricsPort as number, (m) => m.get('keyward_cache_trusted') === 1)));
      const client = new VerifierClient(keywards[0]?.server.address as string);
      const answer = await client.verify(hot);
      client.close();
      if (answer.code !== VerifyCode.VERIFY_CODE_OK) throw new Error(`the hot key answered ${answer.code}`);
      const floor = await startFloor(Buffer.from(VerifyResponse.encode(answer).finish()).toString('base64'));
      stoppers.push(() => floor.stop());
      const body = benchFile(METHOD === 'VerifyStream' ? verifyStreamBody(hot, PER_REQUEST) : verifyBody(hot));
      for (const t of [floor, ...keywards]) await h2load(t.port, METHOD, body, 64, 6, 'several');
      const ratios = new Map<string, { calls: number[]; cpu: number[]; rate: number[] }>();
      for (let repeat = 0; repeat < REPEATS; repeat++) {
        for (const shape of SHAPES) {
          for (const level of LEVELS) {
            const order = repeat % 2 === 0 ? keywards : [...keywards].reverse();
            const sequence = [floor, ...order.flatMap((k) => [k, floor])];
            const steps: Step[] = [];
            for (const t of sequence) steps.push(await step(t, body, shape, level));
            steps.forEach((s, i) => {
              if (s.target === 'floor') return;
              const floors = [steps[i - 1], steps[i + 1]].filter((f): f is Step => f !== undefined);
              const floorRate = floors.reduce((sum, f) => sum + f.callsPerSec, 0) / floors.length;
              const floorCpu = floors.reduce((sum, f) => sum + f.cpuUsPerCall, 0) / floors.length;
              const id = `${s.target} · ${shape} · ${level}`;
              const r = ratios.get(id) ?? { calls: [], cpu: [], rate: [] };
              r.calls.push(s.callsPerSec / floorRate);
              r.cpu.push(s.cpuUsPerCall / floorCpu);
              r.rate.push(s.callsPerSec);
              ratios.set(id, r);
            });
            process.stderr.write(`\r\x1b[2Krepeat ${repeat + 1}/${REPEATS} ${shape} ${level}`);
          }
        }
      }
      process.stderr.write('\r\x1b[2K');
      const f2 = (v: number) => v.toFixed(2);
      const lines = [
        `${METHOD}, in-process hit, generator ${GENERATOR}, ${REPEATS} repeats of ${SECONDS} s; medians (min–max) of ratios to the floor steps around each step`,
        '',
        '| build · shape · in flight | calls/s × floor | CPU/call × floor | calls/s |',
        '|---|---:|---:|---:|',
        ...[...ratios].map(
          ([id, r]) =>
            `| ${id} | ${f2(median(r.calls))} (${f2(Math.min(...r.calls))}–${f2(Math.max(...r.calls))}) | ${f2(median(r.cpu))} (${f2(Math.min(...r.cpu))}–${f2(Math.max(...r.cpu))}) | ${Math.round(median(r.rate)).toLocaleString('en-US')} |`,
        ),
      ].join('\n');
      console.log(lines);
      const name = process.env.BENCH_COMPARE_NAME || 'compare';
      writeFileSync(
        path.join(packageRoot(), 'bench', 'results', `${name}.json`),
        `${JSON.stringify({ at: new Date().toISOString(), method: METHOD, generator: GENERATOR, repeats: REPEATS, seconds: SECONDS, before: BEFORE, builds: BUILDS, variants: VARIANTS, ratios: Object.fromEntries(ratios) }, null, 2)}\n`,
      );
      writeFileSync(path.join(packageRoot(), 'bench', 'results', `${name}.md`), `${lines}\n`);
    });
  } finally {
    for (const stop of stoppers.reverse()) await stop().catch(() => {});
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
