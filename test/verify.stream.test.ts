import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import http2 from 'node:http2';
import { VerifyCode, VerifyStreamRequest, VerifyStreamResponse } from '../src/gen/keyward/v1/keyward';
import { LIMITS } from '../src/keys/fields';
import { VerifierClient } from './helpers/clients';
import { assertNoLeaks } from './helpers/leaks';
import { scrapeMetrics } from './helpers/metrics';
import { ServerProcess } from './helpers/serverProcess';
import { waitUntil } from './helpers/waitUntil';

const MISSING = 'keyward_verify_total{code="VERIFY_CODE_MISSING_KEY"}';
const HEAP = 'keyward_nodejs_heap_size_used_bytes';

/** A gRPC length-prefixed message. */
function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

/** The messages of a gRPC response body, once it has ended (with grpc-status 0). */
function readGrpcFrames(call: http2.ClientHttp2Stream): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const frames: Buffer[] = [];
    let pending = Buffer.alloc(0);
    call.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
        const length = pending.readUInt32BE(1);
        frames.push(pending.subarray(5, 5 + length));
        pending = pending.subarray(5 + length);
      }
    });
    call.on('trailers', (trailers) => {
      if (trailers['grpc-status'] !== '0') reject(new Error(`grpc-status ${String(trailers['grpc-status'])}: ${String(trailers['grpc-message'])}`));
    });
    call.on('end', () => resolve(frames));
    call.on('error', reject);
  });
}

describe('VerifyStream back-pressure', () => {
  let server: ServerProcess;
  let verifier: VerifierClient;

  before(async () => {
    server = await ServerProcess.start({ KEYWARD_METRICS_ADDR: '127.0.0.1:0' });
    verifier = new VerifierClient(server.address);
  });

  after(async () => {
    verifier.close();
    assert.equal(await server.stop(), 0);
    await assertNoLeaks();
  });

  it('stops reading a stream whose answers are not read, so its memory stays bounded, and answers everything once they are', async () => {
    const metricsPort = server.metricsPort as number;
    const total = 40_000;
    const before = await scrapeMetrics(metricsPort);
    // A raw HTTP/2 caller that writes requests and reads nothing (a grpc-js client would read and buffer on its side).
    const session = http2.connect(`http://${server.address}`);
    const call = session.request({ ':method': 'POST', ':path': '/keyward.v1.KeyVerifierService/VerifyStream', 'content-type': 'application/grpc', te: 'trailers' });
    call.pause();
    const ids = Array.from({ length: total }, (_, i) => `${String(i).padStart(8, '0')}${'r'.repeat(LIMITS.requestIdLength - 8)}`);
    let written = 0;
    const writeAll = (async () => {
      for (const requestId of ids) {
        if (!call.write(grpcFrame(VerifyStreamRequest.encode(VerifyStreamRequest.fromPartial({ requestId, key: '' })).finish()))) {
          await new Promise((resolve) => call.once('drain', resolve));
        }
        written++;
      }
      call.end();
    })();

    // Wait until the server has stopped answering: its count of answers stays put over five scrapes.
    let answered = -1;
    let still = 0;
    await waitUntil(
      'the server stops answering the stream that is not read',
      async () => {
        const now = (await scrapeMetrics(metricsPort)).get(MISSING) ?? 0;
        still = now === answered ? still + 1 : 0;
        answered = now;
        return still >= 5;
      },
      { intervalMs: 50, timeoutMs: 20_000 },
    );
    const stalled = await scrapeMetrics(metricsPort);
    const answeredWhileUnread = answered - (before.get(MISSING) ?? 0);
    assert.ok(written < total, `the caller cannot write everything: the server stopped reading (${written} of ${total} taken)`);
    assert.ok(answeredWhileUnread < 2_000, `a bounded number of answers wait unread (${answeredWhileUnread})`);
    const heapGrowth = (stalled.get(HEAP) ?? 0) - (before.get(HEAP) ?? 0);
    assert.ok(heapGrowth < 16 * 1024 * 1024, `the server's heap grew by ${heapGrowth} bytes`);

    // Once the caller reads, every request is answered, in order (no I/O), and the stream ends.
    const responses = readGrpcFrames(call).then((frames) => frames.map((frame) => VerifyStreamResponse.decode(frame)));
    call.resume();
    await writeAll;
    const answers = await responses;
    session.close();
    assert.equal(answers.length, total);
    assert.deepEqual(
      answers.map((r) => r.requestId),
      ids,
    );
    assert.ok(answers.every((r) => r.outcome?.$case === 'result' && r.outcome.value.code === VerifyCode.VERIFY_CODE_MISSING_KEY));
  });

  it('answers a request_id over the limit with INVALID_ARGUMENT naming it, and goes on', async () => {
    const tooLong = 'x'.repeat(LIMITS.requestIdLength + 1);
    const responses = await verifier.verifyStream([
      { requestId: tooLong, key: '' },
      { requestId: 'next', key: '' },
    ]);
    assert.equal(responses.length, 2);
    const [refused, next] = responses;
    assert.equal(refused?.requestId, '');
    assert.equal(refused?.outcome?.$case, 'error');
    if (refused?.outcome?.$case === 'error') {
      assert.equal(refused.outcome.value.code, 3);
      assert.match(refused.outcome.value.message, /^request_id "257 characters": must be at most 256 characters/);
    }
    assert.equal(next?.requestId, 'next');
  });
});
