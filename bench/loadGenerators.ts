import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { percentiles } from './stats';

/** What one load step measured on the client side. */
export interface LoadResult {
  /** Calls answered with grpc-status 0 (a stream's calls: requests × messages). */
  readonly requests: number;
  readonly seconds: number;
  readonly latencyUs: { readonly p50: number; readonly p99: number; readonly p999: number };
}

/**
 * How the calls in flight share HTTP/2 connections: `one`, every call on one
 * connection (a grpc-js channel, so a REST service's client, or a gateway
 * sidecar); `several`, spread over up to 4 connections (4 × 16 at 64).
 */
export type LoadShape = 'one' | 'several';
export const LOAD_SHAPES: readonly LoadShape[] = ['one', 'several'];
export const SHAPE_LABELS: Readonly<Record<LoadShape, string>> = { one: '1 connection', several: '≤ 4 connections' };

/** How a concurrency level (calls in flight) is spread over connections in a shape. */
export function spread(inFlight: number, shape: LoadShape = 'several'): { clients: number; streams: number } {
  const clients = shape === 'one' ? 1 : Math.min(inFlight, 4);
  return { clients, streams: Math.max(1, Math.round(inFlight / clients)) };
}

/**
 * The generator of the cases of one body: h2load, or, with BENCH_GENERATOR=raw
 * or where h2load is not installed, bench/h2rawLoad.ts (raw HTTP/2 frames on
 * a socket: a few µs of client CPU per call too).
 */
export const GENERATOR: 'h2load' | 'raw' = (() => {
  const chosen = process.env.BENCH_GENERATOR;
  if (chosen === 'raw' || chosen === 'h2load') return chosen;
  if (chosen !== undefined && chosen !== '') throw new Error(`BENCH_GENERATOR: ${JSON.stringify(chosen)} is neither h2load nor raw`);
  return spawnSync('h2load', ['--version'], { stdio: 'ignore' }).status === 0 ? 'h2load' : 'raw';
})();

/** bench/h2rawLoad.ts: `body` (a .bin file, or a .json list of base64 bodies) on raw HTTP/2 frames. */
export async function h2raw(port: number, method: string, body: string, inFlight: number, seconds: number, shape: LoadShape = 'several'): Promise<LoadResult> {
  const { clients, streams } = spread(inFlight, shape);
  const script = path.resolve(__dirname, 'h2rawLoad.js');
  const out = await run(process.execPath, [script, String(port), `/keyward.v1.KeyVerifierService/${method}`, body, String(clients), String(streams), String(seconds)]);
  const result = JSON.parse(out) as { succeeded: number; failed: number; seconds: number; latencyUs: LoadResult['latencyUs'] };
  if (result.failed > 0) throw new Error(`${result.failed} calls were reset in the raw generator`);
  return { requests: result.succeeded, seconds: result.seconds, latencyUs: result.latencyUs };
}

function run(command: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${command} exited ${code}: ${err || out}`))));
  });
}

const workDir = mkdtempSync(path.join(tmpdir(), 'keyward-bench-'));
process.on('exit', () => rmSync(workDir, { recursive: true, force: true }));
let files = 0;

/** Writes a file for the generators to read (a body, or the mix generator's list of bodies). */
export function benchFile(content: Buffer | string, extension = 'bin'): string {
  const file = path.join(workDir, `input-${files++}.${extension}`);
  writeFileSync(file, content);
  return file;
}

/**
 * h2load: gRPC unary (or one whole stream) calls as HTTP/2 POSTs of a
 * pre-encoded body, `inFlight` at a time, for `seconds`. Latencies come from
 * its per-request log. gRPC errors are HTTP 200 too: the caller checks the
 * server's own verdict counts.
 */
export async function h2load(port: number, method: string, body: string, inFlight: number, seconds: number, shape: LoadShape = 'several'): Promise<LoadResult> {
  if (GENERATOR === 'raw') return h2raw(port, method, body, inFlight, seconds, shape);
  const { clients, streams } = spread(inFlight, shape);
  const log = path.join(workDir, `h2load-${files++}.log`);
  const out = await run('h2load', [
    '-D', `${Math.round(seconds * 1000)}ms`,
    '-c', String(clients),
    '-m', String(streams),
    '-t', '1',
    '-d', body,
    '-H', 'content-type: application/grpc',
    '-H', 'te: trailers',
    `--log-file=${log}`,
    `http://127.0.0.1:${port}/keyward.v1.KeyVerifierService/${method}`,
  ]);
  const finished = /finished in ([\d.]+)(ms|s),/.exec(out);
  const succeeded = /(\d+) succeeded/.exec(out);
  if (finished === null || succeeded === null) throw new Error(`unexpected h2load output:\n${out}`);
  const durations = readFileSync(log, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => Number(line.split('\t')[2]));
  rmSync(log, { force: true });
  const [p50, p99, p999] = percentiles(durations, [50, 99, 99.9]) as [number, number, number];
  const elapsed = Number(finished[1]) / (finished[2] === 'ms' ? 1000 : 1);
  return { requests: Number(succeeded[1]), seconds: elapsed, latencyUs: { p50, p99, p999 } };
}

/**
 * The node:http2 generator (bench/h2mixLoad.ts) for bodies that differ call to
 * call (`bodies`: a .json list of base64 frames), or for one body (a .bin file).
 */
export async function h2mix(port: number, bodies: string, inFlight: number, seconds: number, shape: LoadShape = 'several', method = 'Verify'): Promise<LoadResult> {
  const { clients, streams } = spread(inFlight, shape);
  const script = path.resolve(__dirname, 'h2mixLoad.js');
  const out = await run(process.execPath, [script, String(port), `/keyward.v1.KeyVerifierService/${method}`, bodies, String(clients), String(streams), String(seconds)]);
  const result = JSON.parse(out) as { succeeded: number; failed: number; seconds: number; latencyUs: LoadResult['latencyUs'] };
  if (result.failed > 0) throw new Error(`${result.failed} calls failed in the mix generator`);
  return { requests: result.succeeded, seconds: result.seconds, latencyUs: result.latencyUs };
}
