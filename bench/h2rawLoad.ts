/**
 * A lean load generator for machines without h2load: gRPC calls as HTTP/2
 * POSTs written as raw frames on plain sockets (no node:http2, no gRPC
 * library), so that the client spends a few µs per call, as h2load does, and
 * the server stays the bottleneck even on one connection. Every request of a
 * run is the same pre-encoded HEADERS block (no HPACK dynamic table) and one
 * DATA frame; answers are counted by their closing HEADERS frame (trailers),
 * not decoded: the benchmark checks verdicts with the server's own counts.
 *
 *   node dist/bench/h2rawLoad.js <port> <path> <bodies> <clients> <streams per client> <seconds>
 *
 * <bodies>: a .bin file (one body, sent on every call) or a .json list of
 * base64 bodies sent in turn. Prints one JSON line as bench/h2mixLoad.ts does:
 * {"succeeded","failed","seconds","latencyUs":{"p50","p99","p999"}}
 * (failed: streams reset by the server).
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { percentiles } from './stats';

const [port, path, bodiesFile, clients, streams, seconds] = process.argv.slice(2);
const bodies = (bodiesFile as string).endsWith('.json')
  ? (JSON.parse(readFileSync(bodiesFile as string, 'utf8')) as string[]).map((b) => Buffer.from(b, 'base64'))
  : [readFileSync(bodiesFile as string)];

const DATA = 0x0;
const HEADERS = 0x1;
const RST_STREAM = 0x3;
const SETTINGS = 0x4;
const PING = 0x6;
const GOAWAY = 0x7;
const WINDOW_UPDATE = 0x8;
const CONTINUATION = 0x9;
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const MAX_WINDOW = 2 ** 31 - 1;
const DEFAULT_WINDOW = 65_535;

function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId, 5);
  return header;
}

/** An HPACK string literal, not Huffman-coded (lengths here fit a one-byte 7-bit prefix). */
function literal(text: string): Buffer {
  const bytes = Buffer.from(text, 'latin1');
  if (bytes.length > 126) throw new Error(`header value too long for this generator: ${text}`);
  return Buffer.concat([Buffer.from([bytes.length]), bytes]);
}

// :method POST (static 3), :scheme http (static 6), then literals without indexing:
// :path (static name 4), :authority (1), content-type (31, 4-bit prefix: 15 + 16), te (new name).
const headerBlock = Buffer.concat([
  Buffer.from([0x83, 0x86, 0x04]),
  literal(path as string),
  Buffer.from([0x01]),
  literal(`127.0.0.1:${port}`),
  Buffer.from([0x0f, 0x10]),
  literal('application/grpc'),
  Buffer.from([0x00]),
  literal('te'),
  literal('trailers'),
]);
for (const body of bodies) if (body.length > 16_384) throw new Error('a body larger than one DATA frame (16 KiB)');
/** Each body's HEADERS and DATA frames, stream id 0 (written per call). */
const requests = bodies.map((body) => Buffer.concat([frameHeader(headerBlock.length, HEADERS, END_HEADERS, 0), headerBlock, frameHeader(body.length, DATA, END_STREAM, 0), body]));
const dataOffset = 9 + headerBlock.length;

const latencies: number[] = [];
let succeeded = 0;
let failed = 0;
let next = 0;
const started = performance.now();
const deadline = started + Number(seconds) * 1000;

function connection(streamsPerConnection: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1');
    socket.setNoDelay(true);
    const startedAt = new Map<number, number>();
    let nextStreamId = 1;
    let sendWindow = DEFAULT_WINDOW;
    let inFlight = 0;
    let waiting = 0;
    let buffered: Buffer = Buffer.alloc(0);
    let out: Buffer[] = [];
    let closing = false;

    const start = (): void => {
      const request = requests[next++ % requests.length] as Buffer;
      const bodyLength = request.length - dataOffset - 9;
      if (bodyLength > sendWindow) {
        waiting++;
        next--;
        return;
      }
      sendWindow -= bodyLength;
      const copy = Buffer.from(request);
      const id = nextStreamId;
      nextStreamId += 2;
      copy.writeUInt32BE(id, 5);
      copy.writeUInt32BE(id, dataOffset + 5);
      out.push(copy);
      startedAt.set(id, performance.now());
      inFlight++;
    };
    const flush = (): void => {
      if (out.length > 0) socket.write(out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out));
      out = [];
    };
    const finish = (): void => {
      if (!closing && inFlight === 0 && waiting === 0) {
        closing = true;
        socket.end();
      }
    };
    const done = (id: number, ok: boolean): void => {
      const at = startedAt.get(id);
      if (at === undefined) return;
      startedAt.delete(id);
      inFlight--;
      const now = performance.now();
      if (ok) {
        succeeded++;
        latencies.push((now - at) * 1000);
      } else {
        failed++;
      }
      if (now < deadline) start();
    };

    socket.on('connect', () => {
      // The preface, our SETTINGS (a stream window the server never waits on), and a connection window as large.
      const settings = Buffer.alloc(6);
      settings.writeUInt16BE(0x4, 0);
      settings.writeUInt32BE(MAX_WINDOW, 2);
      const increment = Buffer.alloc(4);
      increment.writeUInt32BE(MAX_WINDOW - DEFAULT_WINDOW, 0);
      out.push(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), frameHeader(6, SETTINGS, 0, 0), settings, frameHeader(4, WINDOW_UPDATE, 0, 0), increment);
      for (let i = 0; i < streamsPerConnection; i++) start();
      flush();
    });
    socket.on('data', (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      let offset = 0;
      while (buffered.length - offset >= 9) {
        const length = buffered.readUIntBE(offset, 3);
        if (buffered.length - offset < 9 + length) break;
        const type = buffered[offset + 3] as number;
        const flags = buffered[offset + 4] as number;
        const id = buffered.readUInt32BE(offset + 5) & 0x7fffffff;
        const payload = offset + 9;
        if ((type === HEADERS || type === CONTINUATION || type === DATA) && (flags & END_STREAM) !== 0) done(id, true);
        else if (type === RST_STREAM) done(id, false);
        else if (type === SETTINGS && (flags & ACK) === 0) {
          out.push(frameHeader(0, SETTINGS, ACK, 0));
          for (let p = payload; p + 6 <= payload + length; p += 6) {
            // A changed initial window counts for our streams' windows only; one DATA frame per stream never nears it.
            if (buffered.readUInt16BE(p) === 0x4 && buffered.readUInt32BE(p + 2) < 16_384) reject(new Error('server stream window below one body'));
          }
        } else if (type === PING && (flags & ACK) === 0) out.push(frameHeader(8, PING, ACK, 0), buffered.subarray(payload, payload + 8));
        else if (type === WINDOW_UPDATE && id === 0) {
          sendWindow += buffered.readUInt32BE(payload) & 0x7fffffff;
          const blocked = waiting;
          waiting = 0;
          for (let i = 0; i < blocked; i++) start();
        } else if (type === GOAWAY) {
          failed += inFlight;
          inFlight = 0;
          socket.destroy();
          resolve();
          return;
        }
        offset += 9 + length;
      }
      buffered = offset === buffered.length ? Buffer.alloc(0) : buffered.subarray(offset);
      flush();
      if (performance.now() >= deadline) {
        waiting = 0;
        finish();
      }
    });
    socket.on('error', reject);
    socket.on('close', () => resolve());
  });
}

async function main(): Promise<void> {
  await Promise.all(Array.from({ length: Number(clients) }, () => connection(Number(streams))));
  const elapsed = (performance.now() - started) / 1000;
  const [p50, p99, p999] = percentiles(latencies, [50, 99, 99.9]);
  console.log(JSON.stringify({ succeeded, failed, seconds: elapsed, latencyUs: { p50, p99, p999 } }));
}

void main();
