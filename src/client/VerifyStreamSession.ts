import { type ClientDuplexStream, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import type { KeyVerifierServiceClient, VerifyRequest, VerifyResponse, VerifyStreamRequest, VerifyStreamResponse } from '../gen/keyward/v1/keyward';
import { withRetries } from './retryPolicy';

/** One request waiting for its answer on a stream. */
interface Pending {
  readonly stream: ClientDuplexStream<VerifyStreamRequest, VerifyStreamResponse>;
  readonly resolve: (response: VerifyResponse) => void;
  readonly reject: (error: ServiceError) => void;
  readonly timer: NodeJS.Timeout;
}

/** A ServiceError as grpc-js makes them (code, details, metadata), for failures the session itself decides. */
function serviceError(code: status, details: string): ServiceError {
  return Object.assign(new Error(`${code} ${status[code]}: ${details}`), { code, details, metadata: new Metadata() });
}

/**
 * Verify calls multiplexed over one long-lived VerifyStream (README, "Client
 * library"): each call writes one request with an id of the session's own and
 * resolves with the answer carrying that id, in whatever order answers come.
 * A stream carries many calls without a new HTTP/2 stream each, which is what
 * makes it cheaper than unary Verify for a busy REST service.
 *
 * Semantics are those of `KeywardClient.verify`: a refused key is an answer;
 * an error of one request (INVALID_ARGUMENT naming the field, UNAVAILABLE when
 * the store cannot answer) rejects that call only, with a ServiceError of the
 * code and message the stream sent. Each call has its deadline
 * (DEADLINE_EXCEEDED when it passes) and is retried like unary Verify after
 * UNAVAILABLE or DEADLINE_EXCEEDED. When the stream itself fails (the
 * connection drops, the server stops), every call waiting on it rejects with
 * the stream's error (UNAVAILABLE, so retried) and the next call opens a new
 * stream.
 */
export class VerifyStreamSession {
  private stream: ClientDuplexStream<VerifyStreamRequest, VerifyStreamResponse> | undefined;
  private readonly pending = new Map<string, Pending>();
  private nextId = 0;
  private closed = false;

  constructor(
    private readonly client: KeyVerifierServiceClient,
    private readonly token: string | undefined,
    private readonly deadlineMs: number,
    private readonly retries: number,
  ) {}

  /** Calls waiting for their answers. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Whether a key may proceed, answered over the session's stream; `deadlineMs` overrides the client's for this call. */
  verify(request: Partial<VerifyRequest>, options: { deadlineMs?: number } = {}): Promise<VerifyResponse> {
    const deadlineMs = options.deadlineMs ?? this.deadlineMs;
    if (!Number.isFinite(deadlineMs) || deadlineMs <= 0) {
      return Promise.reject(new RangeError(`VerifyStreamSession: options.deadlineMs must be a positive number of milliseconds, not ${deadlineMs}`));
    }
    const deadline = Date.now() + deadlineMs;
    return withRetries(this.retries, deadline, () => this.attempt(request, deadline));
  }

  /** Ends the stream; calls still waiting reject with CANCELLED, later ones at once. */
  close(): void {
    this.closed = true;
    const stream = this.stream;
    this.stream = undefined;
    this.fail(stream, serviceError(status.CANCELLED, 'the VerifyStream session was closed'));
    stream?.cancel();
  }

  private attempt(request: Partial<VerifyRequest>, deadline: number): Promise<VerifyResponse> {
    if (this.closed) return Promise.reject(serviceError(status.CANCELLED, 'the VerifyStream session was closed'));
    let stream: ClientDuplexStream<VerifyStreamRequest, VerifyStreamResponse>;
    try {
      stream = this.open();
    } catch (error) {
      return Promise.reject(error);
    }
    const requestId = (this.nextId++).toString(36);
    return new Promise<VerifyResponse>((resolve, reject) => {
      const timer = setTimeout(
        () => {
          if (this.pending.delete(requestId)) reject(serviceError(status.DEADLINE_EXCEEDED, 'Deadline exceeded waiting for the VerifyStream answer'));
        },
        Math.max(0, deadline - Date.now()),
      );
      this.pending.set(requestId, { stream, resolve, reject, timer });
      stream.write({ requestId, key: request.key ?? '', clientIp: request.clientIp ?? '', requiredScopes: request.requiredScopes ?? [] });
    });
  }

  /** The open stream, or a new one (with the bearer token, without a deadline: it lives as long as the session). */
  private open(): ClientDuplexStream<VerifyStreamRequest, VerifyStreamResponse> {
    if (this.stream !== undefined) return this.stream;
    const metadata = new Metadata();
    if (this.token !== undefined) {
      try {
        metadata.set('authorization', `Bearer ${this.token}`);
      } catch {
        // grpc-js's message would echo the token.
        throw new TypeError('KeywardClient: the token holds characters a gRPC header cannot carry (a line break?)');
      }
    }
    const stream = this.client.verifyStream(metadata);
    stream.on('data', (response: VerifyStreamResponse) => {
      const waiting = this.pending.get(response.requestId);
      if (waiting === undefined) return; // its deadline passed
      this.pending.delete(response.requestId);
      clearTimeout(waiting.timer);
      const outcome = response.outcome;
      if (outcome?.$case === 'result') waiting.resolve(outcome.value);
      else if (outcome?.$case === 'error') waiting.reject(serviceError(outcome.value.code as status, outcome.value.message));
      else waiting.reject(serviceError(status.INTERNAL, 'the VerifyStream answer holds neither a result nor an error'));
    });
    stream.on('error', (error: ServiceError) => this.fail(stream, error));
    // The server ended the stream with OK (it is stopping): whatever still waits was not answered.
    stream.on('end', () => this.fail(stream, serviceError(status.UNAVAILABLE, 'the server ended the VerifyStream')));
    this.stream = stream;
    return stream;
  }

  /** Rejects every call waiting on `stream`, which is done. */
  private fail(stream: ClientDuplexStream<VerifyStreamRequest, VerifyStreamResponse> | undefined, error: ServiceError): void {
    if (stream === undefined) return;
    if (this.stream === stream) this.stream = undefined;
    for (const [requestId, waiting] of this.pending) {
      if (waiting.stream !== stream) continue;
      this.pending.delete(requestId);
      clearTimeout(waiting.timer);
      waiting.reject(error);
    }
  }
}
