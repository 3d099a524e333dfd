/**
 * A load generator for the one case h2load cannot drive: unary calls whose
 * bodies differ (h2load posts one body). Plain node:http2, bodies encoded
 * beforehand, no gRPC library: a fraction of the server's cost per call.
 * Used for the floor and keyward alike in that case.
 *
 *   node dist/bench/h2mixLoad.js <port> <path> <bodies.json> <clients> <streams per client> <seconds>
 *
 * bodies.json: an array of base64 gRPC frames, sent in turn (or a .bin file:
 * one body, sent on every call, as h2load does). Prints one JSON
 * line: {"succeeded","failed","seconds","latencyUs":{"p50","p99","p999"}}.
 */
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import { percentiles } from './stats';

const [port, path, bodiesFile, clients, streams, seconds] = process.argv.slice(2);
const bodies = (bodiesFile as string).endsWith('.json')
  ? (JSON.parse(readFileSync(bodiesFile as string, 'utf8')) as string[]).map((b) => Buffer.from(b, 'base64'))
  : [readFileSync(bodiesFile as string)];
const headers = { ':method': 'POST', ':path': path as string, 'content-type': 'application/grpc', te: 'trailers' };
const latencies: number[] = [];
let succeeded = 0;
let failed = 0;
let next = 0;
const deadline = performance.now() + Number(seconds) * 1000;

function call(session: http2.ClientHttp2Session): Promise<void> {
  return new Promise((resolve) => {
    const started = performance.now();
    const request = session.request(headers);
    let grpcStatus: string | undefined;
    request.on('response', (h) => {
      if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']);
    });
    request.on('trailers', (t) => {
      grpcStatus = String(t['grpc-status']);
    });
    request.on('data', () => {});
    request.on('close', () => {
      if (grpcStatus === '0') {
        succeeded++;
        latencies.push((performance.now() - started) * 1000);
      } else {
        failed++;
      }
      resolve();
    });
    request.end(bodies[next++ % bodies.length]);
  });
}

async function main(): Promise<void> {
  const started = performance.now();
  const sessions = Array.from({ length: Number(clients) }, () => http2.connect(`http://127.0.0.1:${port}`));
  await Promise.all(
    sessions.flatMap((session) =>
      Array.from({ length: Number(streams) }, async () => {
        while (performance.now() < deadline) await call(session);
      }),
    ),
  );
  const elapsed = (performance.now() - started) / 1000;
  for (const session of sessions) session.close();
  const [p50, p99, p999] = percentiles(latencies, [50, 99, 99.9]);
  console.log(JSON.stringify({ succeeded, failed, seconds: elapsed, latencyUs: { p50, p99, p999 } }));
}

void main();
