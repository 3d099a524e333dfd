import { type ServerDuplexStream, status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { invalidArgument } from '../errors';
import type { KeyVerifierServiceServer, VerifyStreamRequest, VerifyStreamResponse } from '../gen/keyward/v1/keyward';
import { LIMITS } from '../keys/fields';
import type { Verifier } from '../verify/Verifier';
import type { TokenCheck } from './auth';
import { toErrorStatus } from './errorStatus';
import { isMalformed } from './malformedRequest';

/** Lookups in flight per stream before it stops reading requests until some are answered. */
const STREAM_MAX_PENDING = 1_024;
/**
 * Answers waiting to be written per stream before it stops reading requests
 * until they are written. grpc-js writes a stream's answers one at a time
 * (each waits for the HTTP/2 write before it), and its write() says "full"
 * at 16 waiting: pausing there stopped and restarted the reading of a busy
 * stream every few answers (bench/results/shapes.md).
 */
const STREAM_MAX_BUFFERED = 512;
const UNAUTHENTICATED = { code: status.UNAUTHENTICATED, details: 'Verify needs "authorization: Bearer <verifier token>" metadata' };

/**
 * The KeyVerifierService handlers. An in-process hit is answered within the
 * call, without an await; only a cache miss goes through a promise.
 */
export function createVerifierService(verifier: Verifier, checkToken: TokenCheck | undefined, logger: Logger): KeyVerifierServiceServer {
  return {
    verify(call, callback) {
      if (checkToken !== undefined && !checkToken(call.metadata)) {
        callback(UNAUTHENTICATED);
        return;
      }
      if (isMalformed(call.request)) {
        callback({ code: status.INVALID_ARGUMENT, details: call.request.message });
        return;
      }
      let answer;
      try {
        answer = verifier.verify(call.request);
      } catch (error) {
        callback(toErrorStatus(error, logger, 'Verify'));
        return;
      }
      if (answer instanceof Promise) {
        answer.then(
          (response) => callback(null, response),
          (error: unknown) => callback(toErrorStatus(error, logger, 'Verify')),
        );
      } else {
        callback(null, answer);
      }
    },

    verifyStream(call) {
      if (checkToken !== undefined && !checkToken(call.metadata)) {
        call.emit('error', UNAUTHENTICATED);
        return;
      }
      serveVerifyStream(call, verifier, logger);
    },
  };
}

/**
 * Answers each request of a stream as soon as its verdict is ready (out of
 * order when a lookup has to wait), and ends the stream once the caller has
 * ended it and every request is answered. A request's error is answered in
 * its own response; the stream goes on.
 *
 * A stream's memory is bounded whatever the caller does: it stops reading
 * requests while its answers are not being read (STREAM_MAX_BUFFERED answers
 * wait to be written, until `drain`) or while STREAM_MAX_PENDING lookups are
 * in flight; HTTP/2 flow control then holds the caller's further requests on
 * its side. At most that many answers (each with a request_id of at most
 * LIMITS.requestIdLength characters) wait in the stream's buffer.
 */
function serveVerifyStream(call: ServerDuplexStream<VerifyStreamRequest, VerifyStreamResponse>, verifier: Verifier, logger: Logger): void {
  let pending = 0;
  let blocked = false;
  let paused = false;
  let ended = false;
  const flow = (): void => {
    if (!paused && (blocked || pending >= STREAM_MAX_PENDING)) {
      paused = true;
      call.pause();
    } else if (paused && !blocked && pending <= STREAM_MAX_PENDING / 2) {
      paused = false;
      call.resume();
    }
  };
  const drained = (): void => {
    blocked = false;
    flow();
  };
  const send = (response: VerifyStreamResponse): void => {
    if (call.cancelled || call.destroyed) return;
    // write() is false from 16 answers waiting on; 'drain' follows once they are all written.
    if (!call.write(response) && !blocked && call.writableLength >= STREAM_MAX_BUFFERED) {
      blocked = true;
      call.once('drain', drained);
      flow();
    }
  };
  const failed = (requestId: string, error: unknown): VerifyStreamResponse => {
    const { code, details } = toErrorStatus(error, logger, 'VerifyStream');
    return { requestId, outcome: { $case: 'error', value: { code, message: details } } };
  };
  const settle = (): void => {
    pending--;
    flow();
    if (ended && pending === 0) call.end();
  };

  call.on('data', (request: VerifyStreamRequest) => {
    if (isMalformed(request)) {
      send({ requestId: '', outcome: { $case: 'error', value: { code: status.INVALID_ARGUMENT, message: request.message } } });
      return;
    }
    const requestId = request.requestId;
    if (requestId.length > LIMITS.requestIdLength) {
      send(failed('', invalidArgument('request_id', `${requestId.length} characters`, `must be at most ${LIMITS.requestIdLength} characters`)));
      return;
    }
    let answer;
    try {
      answer = verifier.verify(request);
    } catch (error) {
      send(failed(requestId, error));
      return;
    }
    if (!(answer instanceof Promise)) {
      send({ requestId, outcome: { $case: 'result', value: answer } });
      return;
    }
    pending++;
    flow();
    answer.then(
      (response) => send({ requestId, outcome: { $case: 'result', value: response } }),
      (error: unknown) => send(failed(requestId, error)),
    ).finally(settle);
  });
  call.on('end', () => {
    ended = true;
    if (pending === 0) call.end();
  });
  call.on('error', () => {
    // The caller went away; answers still pending are dropped by `send`.
  });
}
