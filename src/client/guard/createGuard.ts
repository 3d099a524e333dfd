import type { VerifyRequest, VerifyResponse } from '../../gen/keyward/v1/keyward';
import { parseTrustedProxies, resolveClientAddress, splitForwardedFor } from './clientAddress';
import { type GuardOutcome, type RefusalOptions, failureOutcome, missingKeyOutcome, outcomeOfResponse } from './guardOutcome';
import { type HttpHeaders, apiKeyOf, forwardedForOf } from './httpHeaders';

/** What the guard needs of a keyward client: `KeywardClient` is one. */
export interface Verifier {
  verify(request: Partial<VerifyRequest>, options?: { deadlineMs?: number }): Promise<VerifyResponse>;
}

export interface GuardOptions {
  /** Asks keyward; typically `new KeywardClient({ address, verifierToken })`. */
  readonly verifier: Verifier;
  /**
   * Addresses and CIDR ranges of the proxies in front of the service
   * (`['10.0.0.0/8']`), whose `X-Forwarded-For` is believed. Empty (the
   * default): the header is ignored and the socket's peer is the client.
   */
  readonly trustedProxies?: readonly string[];
  /** How long a request waits for keyward's answer before it is answered 503 (default 2000 ms). */
  readonly deadlineMs?: number;
  /** `Retry-After` of a 503, in seconds (default 1). */
  readonly retryAfterSeconds?: number;
  /** The realm of `WWW-Authenticate` (default "api"). */
  readonly realm?: string;
  /** Told of every failure to get keyward's answer (the 503s and 500s), for the service's log. */
  readonly onError?: (error: Error) => void;
}

export interface Guard {
  /**
   * Decides one HTTP request: its `X-API-Key` (any case), the client address
   * (the socket's `remoteAddress`, or `X-Forwarded-For` walked past trusted
   * proxies), and the scopes the route needs, all of which must be granted.
   * Never rejects: a keyward that cannot answer in time is a 503 outcome.
   */
  verifyHttpRequest(headers: HttpHeaders, remoteAddress: string | undefined, requiredScopes: readonly string[]): Promise<GuardOutcome>;
}

export const GUARD_DEFAULTS = {
  trustedProxies: [] as readonly string[],
  deadlineMs: 2000,
  retryAfterSeconds: 1,
  realm: 'api',
} satisfies Omit<Required<GuardOptions>, 'verifier' | 'onError'>;

/**
 * gRPC codes that say the service itself is misconfigured (answered 500, as
 * retrying cannot help): a route requiring a scope outside keyward's catalog
 * (INVALID_ARGUMENT), a missing or wrong verifier token (UNAUTHENTICATED,
 * PERMISSION_DENIED), a keyward without Verify (UNIMPLEMENTED). Every other
 * failure, and no answer within the deadline, is 503.
 */
const MISCONFIGURED_GRPC_CODES: ReadonlySet<number> = new Set([3, 7, 12, 16]);

/**
 * Makes the framework-neutral guard; the Express, Fastify and node:http
 * adapters wrap it. Options are checked here: a bad trusted-proxy entry or
 * deadline throws, naming it.
 *
 * The guard keeps no cache of keyward's answers, on purpose: keyward
 * promises that a revoked key is refused from the moment RevokeKey returns,
 * and a copy kept here would let it through until the copy aged out. Every
 * request asks keyward (whose own caches are invalidated on every change).
 */
export function createGuard(options: GuardOptions): Guard {
  const trusted = parseTrustedProxies(options.trustedProxies ?? GUARD_DEFAULTS.trustedProxies);
  const deadlineMs = options.deadlineMs ?? GUARD_DEFAULTS.deadlineMs;
  if (!Number.isInteger(deadlineMs) || deadlineMs < 1) throw new Error(`deadlineMs: ${deadlineMs} is not a whole number of milliseconds of at least 1`);
  const retryAfterSeconds = options.retryAfterSeconds ?? GUARD_DEFAULTS.retryAfterSeconds;
  if (!Number.isInteger(retryAfterSeconds) || retryAfterSeconds < 0) throw new Error(`retryAfterSeconds: ${retryAfterSeconds} is not a whole number of seconds`);
  const wording: RefusalOptions = { realm: options.realm ?? GUARD_DEFAULTS.realm, retryAfterSeconds };
  const { verifier, onError } = options;

  return {
    async verifyHttpRequest(headers, remoteAddress, requiredScopes) {
      const key = apiKeyOf(headers);
      // keyward answers MISSING_KEY without I/O; answering it here also keeps it a 401 while keyward is down.
      if (key === '') return missingKeyOutcome(wording);
      const clientIp = resolveClientAddress(remoteAddress, splitForwardedFor(forwardedForOf(headers)), trusted);
      try {
        const response = await withDeadline(verifier.verify({ key, clientIp, requiredScopes: [...requiredScopes] }, { deadlineMs }), deadlineMs);
        return outcomeOfResponse(response, clientIp, wording);
      } catch (caught) {
        const error = caught instanceof Error ? caught : new Error(String(caught));
        onError?.(error);
        return failureOutcome(error, isMisconfiguration(error), wording);
      }
    },
  };
}

function isMisconfiguration(error: Error): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'number' && MISCONFIGURED_GRPC_CODES.has(code);
}

/** The verifier's own deadline should fire first; this bounds the wait even when it does not. */
function withDeadline<T>(promise: Promise<T>, deadlineMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`keyward did not answer within ${deadlineMs} ms`)), deadlineMs);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}
