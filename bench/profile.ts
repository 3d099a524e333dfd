/**
 * `npm run bench:profile`: where a Verify call's CPU goes, beside the floor's.
 *
 * Starts the floor (bench/floorServer.ts) and keyward (warm key, in-process
 * hit: the case of the throughput target) under `--cpu-prof`, loads each with
 * h2load at 64 in flight in alternating windows, and attributes the sampled
 * self time of the main thread inside those windows (V8's profiler and
 * process.hrtime read the same monotonic clock) to categories: grpc-js,
 * Node's HTTP/2, garbage collection, protobuf, keyward's own code… per call.
 * Writes bench/results/profile.md and keeps the .cpuprofile files (open them
 * in Chrome DevTools) under bench/results/profiles/ (not committed).
 *
 * BENCH_PROFILE_SHAPE=several loads it over up to 4 connections instead of
 * one (the shape of a grpc-js channel, the default), and writes
 * profile-several.md (profile-redis-several.md).
 *
 * BENCH_PROFILE_VARIANT='{"VAR":"value"}': a second keyward with that
 * environment too, profiled in the same alternating windows, its figures in a
 * section of their own (a setting's cost, before/after in one run).
 *
 * BENCH_NODE_ARGS and BENCH_FLOOR_NODE_ARGS: more node flags for keyward
 * and for the floor (e.g. a V8 flag, or a preload that gives the floor some of
 * keyward's state, to find what makes a cost keyward's).
 *
 * BENCH_PROFILE_CASE=redis profiles the Redis hit instead (keyward with its
 * in-process cache off: a call reads Redis and checks the entry's MAC, or
 * waits for a read of the same key already in flight) and writes
 * bench/results/profile-redis.md.
 */
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { arch, cpus, release, totalmem } from 'node:os';
import path from 'node:path';
import { VerifyCode, VerifyResponse } from '../src/gen/keyward/v1/keyward';
import { packageRoot } from '../src/packageRoot';
import { VerifierClient } from '../test/helpers/clients';
import { waitForMetric } from '../test/helpers/metrics';
import { PrivateRedis } from '../test/helpers/PrivateRedis';
import { withScratchDatabase } from '../test/helpers/scratchDatabase';
import { seedKeys } from './fixtures';
import { verifyBody } from './grpcFrames';
import { GENERATOR, type LoadShape, SHAPE_LABELS, benchFile, h2load, spread } from './loadGenerators';
import { type Target, startFloor, startKeyward } from './targets';

const IN_FLIGHT = 64;
const WINDOWS = 4;
const WINDOW_SECONDS = 5;
const WARM_SECONDS = 8;
const SAMPLING_US = 100;
/** Which keyward case is profiled: the in-process hit (default), or the Redis hit. */
const CASE = process.env.BENCH_PROFILE_CASE ?? 'in-process';
if (CASE !== 'in-process' && CASE !== 'redis') throw new Error(`BENCH_PROFILE_CASE: ${CASE} is neither in-process nor redis`);
/** How the load reaches the servers: one connection (default), or several. */
const SHAPE = (process.env.BENCH_PROFILE_SHAPE || 'one') as LoadShape;
if (SHAPE !== 'one' && SHAPE !== 'several') throw new Error(`BENCH_PROFILE_SHAPE: ${SHAPE} is neither one nor several`);
const CASE_LABEL = CASE === 'redis' ? 'warm key, in-process cache off: Redis hit with its MAC check' : 'warm key, in-process hit';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
}
interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** The category of a frame's self time. */
function category(frame: ProfileNode['callFrame']): string {
  const { functionName: name, url } = frame;
  if (name === '(garbage collector)') return 'garbage collection';
  if (name === '(program)') return 'V8 and native, unattributed ((program))';
  if (name === '(idle)' || name === '(root)') return '(idle)';
  if (url.includes('/@grpc/grpc-js/')) return 'grpc-js';
  if (url.includes('/dist/src/gen/') || url.includes('/@bufbuild/protobuf/') || url.includes('/protobufjs/')) return 'protobuf (generated code)';
  if (url.includes('/dist/src/')) return "keyward's own code";
  if (url.includes('/dist/bench/')) return "the floor's handler";
  const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (pkg !== null) return `package ${pkg[1]}`;
  if (url.startsWith('node:internal/http2') || url === 'node:http2') return "Node's HTTP/2 (JS)";
  if (url.startsWith('node:internal/streams') || url === 'node:stream') return "Node's streams";
  if (url.startsWith('node:')) return "Node's other internals (JS)";
  if (url === '') return 'native functions called from JS';
  return 'other';
}

/** Self time (µs) per category and per keyward function, of the samples whose time falls in one of `windows`. */
function attribute(
  profile: CpuProfile,
  windows: ReadonlyArray<readonly [number, number]>,
): { byCategory: Map<string, number>; byFunction: Map<string, number>; byNodeFunction: Map<string, number>; sampledUs: number } {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const byCategory = new Map<string, number>();
  const byFunction = new Map<string, number>();
  const byNodeFunction = new Map<string, number>();
  let at = profile.startTime;
  let sampledUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0;
    // A sample stands for the time until the next one.
    const duration = profile.timeDeltas[i + 1] ?? 0;
    if (!windows.some(([from, to]) => at >= from && at < to)) continue;
    const node = nodes.get(profile.samples[i] as number);
    if (node === undefined) continue;
    const cat = category(node.callFrame);
    if (cat === '(idle)') continue;
    sampledUs += duration;
    byCategory.set(cat, (byCategory.get(cat) ?? 0) + duration);
    if (cat === "keyward's own code") {
      const where = `${node.callFrame.functionName || '(anonymous)'} (${node.callFrame.url.replace(/^.*\/dist\//, '')}:${node.callFrame.lineNumber + 1})`;
      byFunction.set(where, (byFunction.get(where) ?? 0) + duration);
    } else if (node.callFrame.url.startsWith('node:')) {
      const where = `${node.callFrame.functionName || '(anonymous)'} (${node.callFrame.url}:${node.callFrame.lineNumber + 1})`;
      byNodeFunction.set(where, (byNodeFunction.get(where) ?? 0) + duration);
    }
  }
  return { byCategory, byFunction, byNodeFunction, sampledUs };
}

function readProfile(dir: string): CpuProfile {
  const [file] = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  if (file === undefined) throw new Error(`no .cpuprofile in ${dir}`);
  return JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as CpuProfile;
}

const nowUs = (): number => Number(process.hrtime.bigint() / 1000n);

async function main(): Promise<void> {
  const out = path.join(packageRoot(), 'bench', 'results');
  const profiles = path.join(out, 'profiles');
  rmSync(profiles, { recursive: true, force: true });
  const dirs = { floor: path.join(profiles, 'floor'), keyward: path.join(profiles, 'keyward'), variant: path.join(profiles, 'variant') };
  const variantEnv = process.env.BENCH_PROFILE_VARIANT ? (JSON.parse(process.env.BENCH_PROFILE_VARIANT) as Record<string, string>) : undefined;
  const profArgs = (dir: string) => ['--cpu-prof', `--cpu-prof-dir=${dir}`, `--cpu-prof-interval=${SAMPLING_US}`];
  const redis = await PrivateRedis.start();
  try {
    await withScratchDatabase('keyward_bench_profile', async (database) => {
      const [secret] = await seedKeys(database, 1_000, { accountId: 'bench-account', scopes: ['jobs:read', 'technicians:read'], ipWhitelist: ['203.0.113.0/24'] });
      const hot = { key: secret as string, clientIp: '203.0.113.7', requiredScopes: ['jobs:read'] };
      const keyward = await startKeyward(
        'keyward',
        { DATABASE_URL: database, REDIS_URL: redis.url, KEYWARD_REDIS_PREFIX: 'bench-profile:', ...(CASE === 'redis' ? { KEYWARD_LOCAL_CACHE: 'false' } : {}) },
        // BENCH_NODE_ARGS: more flags for keyward (e.g. a V8 flag under test).
        [...profArgs(dirs.keyward), ...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '')],
      );
      const variant =
        variantEnv === undefined
          ? undefined
          : await startKeyward(
              'keyward (variant)',
              { DATABASE_URL: database, REDIS_URL: redis.url, KEYWARD_REDIS_PREFIX: 'bench-profile:', ...(CASE === 'redis' ? { KEYWARD_LOCAL_CACHE: 'false' } : {}), ...variantEnv },
              [...profArgs(dirs.variant), ...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '')],
            );
      const body = benchFile(verifyBody(hot));
      const targets: Array<{ target: Target; dir: string; windows: Array<[number, number]>; calls: number; cpuUs: number }> = [];
      try {
        for (const k of [keyward, variant]) if (k !== undefined) await waitForMetric(k.server.metricsPort as number, (m) => m.get('keyward_cache_trusted') === 1);
        const client = new VerifierClient(keyward.server.address);
        const answer = await client.verify(hot);
        client.close();
        if (answer.code !== VerifyCode.VERIFY_CODE_OK) throw new Error(`the hot key answered ${answer.code}`);
        // BENCH_FLOOR_NODE_ARGS: more flags for the floor (e.g. a preload that gives it keyward's heap).
        const floor = await startFloor(Buffer.from(VerifyResponse.encode(answer).finish()).toString('base64'), [
          ...profArgs(dirs.floor),
          ...(process.env.BENCH_FLOOR_NODE_ARGS ?? '').split(' ').filter((a) => a !== ''),
        ]);
        targets.push({ target: floor, dir: dirs.floor, windows: [], calls: 0, cpuUs: 0 }, { target: keyward, dir: dirs.keyward, windows: [], calls: 0, cpuUs: 0 });
        if (variant !== undefined) targets.push({ target: variant, dir: dirs.variant, windows: [], calls: 0, cpuUs: 0 });
        for (const t of targets) await h2load(t.target.port, 'Verify', body, IN_FLIGHT, WARM_SECONDS, SHAPE);
        for (let w = 0; w < WINDOWS; w++) {
          for (const t of w % 2 === 0 ? targets : [...targets].reverse()) {
            process.stderr.write(`\r\x1b[2Kwindow ${w + 1}/${WINDOWS}: ${t.target.name}`);
            const before = await t.target.stats();
            const from = nowUs();
            await h2load(t.target.port, 'Verify', body, IN_FLIGHT, WINDOW_SECONDS, SHAPE);
            const to = nowUs();
            const after = await t.target.stats();
            t.windows.push([from, to]);
            t.calls += after.calls - before.calls;
            t.cpuUs += after.cpuUs - before.cpuUs;
          }
        }
      } finally {
        process.stderr.write('\r\x1b[2K');
        for (const t of targets) await t.target.stop();
        if (targets.length === 0) {
          await keyward.stop();
          await variant?.stop();
        }
      }
      const [f, k, v] = targets.map((t) => ({ ...t, ...attribute(readProfile(t.dir), t.windows) })) as [
        (typeof targets)[number] & ReturnType<typeof attribute>,
        (typeof targets)[number] & ReturnType<typeof attribute>,
        ((typeof targets)[number] & ReturnType<typeof attribute>) | undefined,
      ];
      for (const t of [f, k, ...(v === undefined ? [] : [v])]) if (t.sampledUs === 0) throw new Error(`${t.target.name}: no samples inside the load windows`);
      const perCall = (us: number, calls: number) => us / calls;
      const categories = [...new Set([...f.byCategory.keys(), ...k.byCategory.keys()])].sort(
        (a, b) => (k.byCategory.get(b) ?? 0) / k.calls - (k.byCategory.get(a) ?? 0) / k.calls,
      );
      const fmt = (v: number) => v.toFixed(2);
      const lines = [
        '# Where a Verify call\'s CPU goes (`npm run bench:profile`)',
        '',
        `${new Date().toISOString()} · ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()} ${arch()}, Node ${process.version}`,
        '',
        `The floor and keyward (${CASE_LABEL}) under \`--cpu-prof --cpu-prof-interval=${SAMPLING_US}\`, loaded by ${GENERATOR === 'h2load' ? 'h2load' : 'bench/h2rawLoad.ts'} at ${IN_FLIGHT} in flight over ${SHAPE_LABELS[SHAPE].replace('≤', 'up to')} (${spread(IN_FLIGHT, SHAPE).clients} × ${spread(IN_FLIGHT, SHAPE).streams}) in ${WINDOWS} alternating windows of ${WINDOW_SECONDS} s each, after ${WARM_SECONDS} s of warm-up. Self time of the main thread's samples inside the windows, per call. The process's CPU per call (process.cpuUsage) also counts libuv's and V8's helper threads, which the profile does not sample.`,
        '',
        `| | floor | keyward | keyward − floor |`,
        '|---|---:|---:|---:|',
        `| calls | ${f.calls.toLocaleString('en-US')} | ${k.calls.toLocaleString('en-US')} | |`,
        `| process CPU µs/call | ${fmt(f.cpuUs / f.calls)} | ${fmt(k.cpuUs / k.calls)} | ${fmt(k.cpuUs / k.calls - f.cpuUs / f.calls)} |`,
        `| sampled main-thread µs/call | ${fmt(perCall(f.sampledUs, f.calls))} | ${fmt(perCall(k.sampledUs, k.calls))} | ${fmt(perCall(k.sampledUs, k.calls) - perCall(f.sampledUs, f.calls))} |`,
        ...categories.map((c) => {
          const a = perCall(f.byCategory.get(c) ?? 0, f.calls);
          const b = perCall(k.byCategory.get(c) ?? 0, k.calls);
          return `| ${c} | ${fmt(a)} | ${fmt(b)} | ${fmt(b - a)} |`;
        }),
        '',
        "Node's internals by self time (µs per call), the ten costliest in keyward beside the floor:",
        '',
        '| function | floor | keyward |',
        '|---|---:|---:|',
        ...[...k.byNodeFunction]
          .sort((a, b) => b[1] - a[1])
          .slice(0, 10)
          .map(([where, us]) => `| \`${where}\` | ${((f.byNodeFunction.get(where) ?? 0) / f.calls).toFixed(3)} | ${(us / k.calls).toFixed(3)} |`),
        '',
        "keyward's own functions by self time (µs per call):",
        '',
        '| function | µs/call |',
        '|---|---:|',
        ...[...k.byFunction]
          .sort((a, b) => b[1] - a[1])
          .slice(0, 15)
          .map(([where, us]) => `| \`${where}\` | ${(us / k.calls).toFixed(3)} |`),
        '',
        ...(v === undefined
          ? []
          : [
              `## keyward with ${Object.entries(variantEnv ?? {}).map(([name, value]) => `${name}=${value}`).join(' ')}, in the same windows`,
              '',
              '| µs per call | floor | keyward | keyward, variant |',
              '|---|---:|---:|---:|',
              `| calls | ${f.calls.toLocaleString('en-US')} | ${k.calls.toLocaleString('en-US')} | ${v.calls.toLocaleString('en-US')} |`,
              `| process CPU | ${fmt(f.cpuUs / f.calls)} | ${fmt(k.cpuUs / k.calls)} | ${fmt(v.cpuUs / v.calls)} |`,
              `| process CPU ÷ floor's | 1 | ${fmt(k.cpuUs / k.calls / (f.cpuUs / f.calls))} | ${fmt(v.cpuUs / v.calls / (f.cpuUs / f.calls))} |`,
              `| sampled main thread | ${fmt(f.sampledUs / f.calls)} | ${fmt(k.sampledUs / k.calls)} | ${fmt(v.sampledUs / v.calls)} |`,
              ...categories.map((c) => `| ${c} | ${fmt((f.byCategory.get(c) ?? 0) / f.calls)} | ${fmt((k.byCategory.get(c) ?? 0) / k.calls)} | ${fmt((v.byCategory.get(c) ?? 0) / v.calls)} |`),
              // The costliest five of each keyward, and nextTick (issue 14).
              ...[
                ...new Set([
                  ...[...k.byNodeFunction, ...v.byNodeFunction].sort((a, b) => b[1] - a[1]).slice(0, 10).map(([where]) => where),
                  ...[...k.byNodeFunction.keys()].filter((where) => where.startsWith('nextTick ')),
                ]),
              ]
                .map((where) => [where] as const)
                .map(([where]) => `| \`${where}\` | ${fmt((f.byNodeFunction.get(where) ?? 0) / f.calls)} | ${fmt((k.byNodeFunction.get(where) ?? 0) / k.calls)} | ${fmt((v.byNodeFunction.get(where) ?? 0) / v.calls)} |`),
              '',
            ]),
      ].join('\n');
      mkdirSync(out, { recursive: true });
      const name = [CASE === 'in-process' ? 'profile' : `profile-${CASE}`, ...(SHAPE === 'several' ? ['several'] : []), ...(v === undefined ? [] : ['variant'])].join('-');
      writeFileSync(path.join(out, `${name}.md`), lines);
      console.log(lines);
    });
  } finally {
    await redis.stop();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
