import { spawn } from 'node:child_process';
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

/** How a concurrency level (calls in flight) is spread over connections. */
export function spread(inFlight: number): { clients: number; streams: number } {
  const clients = Math.min(inFlight, 4);
  return { clients, streams: Math.max(1, Math.round(inFlight / clients)) };
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
export async function h2load(port: number, method: string, body: string, inFlight: number, seconds: number): Promise<LoadResult> {
  const { clients, streams } = spread(inFlight);
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

/** The node:http2 generator (bench/h2mixLoad.ts) for bodies that differ call to call. */
export async function h2mix(port: number, bodies: string, inFlight: number, seconds: number): Promise<LoadResult> {
  const { clients, streams } = spread(inFlight);
  const script = path.resolve(__dirname, 'h2mixLoad.js');
  const out = await run(process.execPath, [script, String(port), '/keyward.v1.KeyVerifierService/Verify', bodies, String(clients), String(streams), String(seconds)]);
  const result = JSON.parse(out) as { succeeded: number; failed: number; seconds: number; latencyUs: LoadResult['latencyUs'] };
  if (result.failed > 0) throw new Error(`${result.failed} calls failed in the mix generator`);
  return { requests: result.succeeded, seconds: result.seconds, latencyUs: result.latencyUs };
}
