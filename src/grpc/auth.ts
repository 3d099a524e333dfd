import { createHash, timingSafeEqual } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { AdminToken } from '../config';

/** Checks `authorization: Bearer <token>` metadata. */
export type TokenCheck = (metadata: Metadata) => boolean;

/**
 * Why an admin call was not authenticated: `missing` (no authorization
 * metadata), `malformed` (not one `Bearer <token>` value), `unknown_token`
 * (a well-formed token that is none of the configured ones).
 */
export type AdminAuthFailure = 'missing' | 'malformed' | 'unknown_token';
export const ADMIN_AUTH_FAILURES: readonly AdminAuthFailure[] = ['missing', 'malformed', 'unknown_token'];

/** Who made an admin call: the name of the admin token it presented (`default` for KEYWARD_ADMIN_TOKEN). */
export interface AdminActor {
  readonly name: string;
}

export type AdminAuthResult = { readonly actor: AdminActor } | { readonly failure: AdminAuthFailure };

/** Matches an admin call's bearer token against the configured admin tokens. */
export type AdminTokenCheck = (metadata: Metadata) => AdminAuthResult;

/** Authenticates an admin call: its actor, or undefined once the failure is reported. */
export type AdminAuthenticator = (metadata: Metadata, peer: string) => AdminActor | undefined;

/** Records a failed admin authentication (metric and log); never sees the token. */
export type AdminAuthFailureReporter = (reason: AdminAuthFailure, peer: string) => void;

const sha256 = (text: string): Buffer => createHash('sha256').update(text).digest();

/** The token of the one `authorization: Bearer <token>` value, or why there is none. */
function bearerToken(metadata: Metadata): string | Exclude<AdminAuthFailure, 'unknown_token'> {
  const values = metadata.get('authorization');
  if (values.length === 0) return 'missing';
  if (values.length !== 1 || typeof values[0] !== 'string') return 'malformed';
  const match = /^Bearer\s+(\S+)\s*$/i.exec(values[0]);
  return match === null ? 'malformed' : (match[1] as string);
}

/**
 * A check of the bearer token against `expected`, in constant time: both
 * sides are hashed first, so neither the length nor a prefix of the token
 * shows in the time taken.
 */
export function createTokenCheck(expected: string): TokenCheck {
  const expectedDigest = sha256(expected);
  return (metadata) => {
    const token = bearerToken(metadata);
    if (token === 'missing' || token === 'malformed') return false;
    return timingSafeEqual(sha256(token), expectedDigest);
  };
}

/**
 * The check of admin calls against every configured admin token, in constant
 * time: the presented token is hashed once and compared with the digest of
 * every token, with no early exit, so the time taken shows neither which
 * token matched nor how much of one did. (Missing and malformed headers are
 * refused before any comparison: their shape is no secret.)
 */
export function createAdminTokenCheck(tokens: readonly AdminToken[]): AdminTokenCheck {
  if (tokens.length === 0) throw new Error('createAdminTokenCheck needs at least one admin token');
  const known = tokens.map(({ name, token }) => ({ actor: { name } as AdminActor, digest: sha256(token) }));
  return (metadata) => {
    const token = bearerToken(metadata);
    if (token === 'missing' || token === 'malformed') return { failure: token };
    const digest = sha256(token);
    let matched: AdminActor | undefined;
    for (const candidate of known) {
      // Every digest is compared; tokens are distinct (config.ts), so at most one matches.
      if (timingSafeEqual(digest, candidate.digest)) matched = candidate.actor;
    }
    return matched === undefined ? { failure: 'unknown_token' } : { actor: matched };
  };
}

/**
 * Counts every failed admin authentication and logs it as a warning
 * `admin-auth-failed` with the reason and the peer address, at most once per
 * `intervalMs` per reason; the line carries `suppressed`, the failures of that
 * reason left unlogged since the previous line (the metric counts them all).
 * So a caller retrying with a bad token, or a scanner, cannot flood the log.
 * `now` is a monotonic clock in milliseconds.
 */
export function createAdminAuthFailureReporter(
  logger: Logger,
  count: (reason: AdminAuthFailure) => void,
  { intervalMs = 1_000, now = () => performance.now() }: { intervalMs?: number; now?: () => number } = {},
): AdminAuthFailureReporter {
  const lastLogged = new Map<AdminAuthFailure, number>();
  const suppressed = new Map<AdminAuthFailure, number>();
  return (reason, peer) => {
    count(reason);
    const at = now();
    const last = lastLogged.get(reason);
    if (last !== undefined && at - last < intervalMs) {
      suppressed.set(reason, (suppressed.get(reason) ?? 0) + 1);
      return;
    }
    lastLogged.set(reason, at);
    logger.warn({ event: 'admin-auth-failed', reason, peer, suppressed: suppressed.get(reason) ?? 0 }, 'admin call not authenticated');
    suppressed.set(reason, 0);
  };
}

/** The authentication of admin calls: the check, with each failure reported. */
export function createAdminAuthenticator(check: AdminTokenCheck, report: AdminAuthFailureReporter): AdminAuthenticator {
  return (metadata, peer) => {
    const result = check(metadata);
    if ('actor' in result) return result.actor;
    report(result.failure, peer);
    return undefined;
  };
}
