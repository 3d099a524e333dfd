import { Environment, VerifyCode, type VerifyResponse } from '../../gen/keyward/v1/keyward';

/** What a refused request's JSON body says in `error.code`. */
export type GuardErrorCode =
  | 'missing_api_key'
  | 'invalid_api_key'
  | 'revoked_api_key'
  | 'expired_api_key'
  | 'disabled_api_key'
  | 'ip_not_allowed'
  | 'insufficient_scope'
  | 'service_unavailable'
  | 'internal_error';

/** The JSON body of every answer the guard gives instead of the route. */
export interface GuardErrorBody {
  readonly error: { readonly code: GuardErrorCode; readonly message: string };
}

/** The key a request was allowed with, as the guard puts it on the request (`req.apiKey`). */
export interface VerifiedApiKey {
  /** The key's public id (a UUID), never the secret. */
  readonly id: string;
  /** The tenant that owns the key: scope every query by it. */
  readonly accountId: string;
  readonly name: string;
  readonly environment: 'live' | 'test' | 'unspecified';
  /** Every scope the key holds, not only the route's. */
  readonly scopes: readonly string[];
  /** The key's metadata, when keyward's answer carries any. */
  readonly metadata?: Readonly<Record<string, string>>;
  /** The client address keyward judged (canonical text), '' when there was none. */
  readonly clientIp: string;
}

/** A guard's decision: let the request through with its key, or answer it with this. */
export type GuardOutcome =
  | { readonly allowed: true; readonly apiKey: VerifiedApiKey }
  | {
      readonly allowed: false;
      readonly status: 401 | 403 | 500 | 503;
      /** `WWW-Authenticate`, `Cache-Control`, `Retry-After`, as they apply; the adapters add `Content-Type`. */
      readonly headers: Readonly<Record<string, string>>;
      readonly body: GuardErrorBody;
      /** Why keyward could not answer (503, 500): for the service's log, never sent. */
      readonly cause?: Error;
    };

/** How the guard words its refusals; `realm` goes into `WWW-Authenticate`. */
export interface RefusalOptions {
  readonly realm: string;
  readonly retryAfterSeconds: number;
}

interface Refusal {
  readonly status: 401 | 403;
  readonly code: GuardErrorCode;
  /** The `error` of `WWW-Authenticate`; none when no key was presented (as RFC 6750 §3.1 has it). */
  readonly challenge?: string;
}

/**
 * Verify's codes by their proto name, the stable part of the contract: a code
 * added to the proto later is mapped here by name (as `VERIFY_CODE_DISABLED`
 * was before the proto had it), and takes effect once the code is regenerated.
 */
const REFUSAL_BY_CODE_NAME: Readonly<Record<string, Refusal>> = {
  VERIFY_CODE_MISSING_KEY: { status: 401, code: 'missing_api_key' },
  VERIFY_CODE_INVALID_KEY: { status: 401, code: 'invalid_api_key', challenge: 'invalid_key' },
  VERIFY_CODE_REVOKED: { status: 401, code: 'revoked_api_key', challenge: 'invalid_key' },
  VERIFY_CODE_EXPIRED: { status: 401, code: 'expired_api_key', challenge: 'invalid_key' },
  VERIFY_CODE_DISABLED: { status: 401, code: 'disabled_api_key', challenge: 'invalid_key' },
  VERIFY_CODE_IP_NOT_ALLOWED: { status: 403, code: 'ip_not_allowed', challenge: 'ip_not_allowed' },
  VERIFY_CODE_INSUFFICIENT_SCOPE: { status: 403, code: 'insufficient_scope', challenge: 'insufficient_scope' },
};

/** A code this guard does not know (or an OK that is not valid) refuses, as an invalid key. */
const UNKNOWN_REFUSAL: Refusal = { status: 401, code: 'invalid_api_key', challenge: 'invalid_key' };

const MESSAGES: Readonly<Record<GuardErrorCode, string>> = {
  missing_api_key: 'This request needs an API key in the X-API-Key header.',
  invalid_api_key: 'The API key is not valid.',
  revoked_api_key: 'The API key has been revoked.',
  expired_api_key: 'The API key has expired.',
  disabled_api_key: 'The API key is disabled.',
  ip_not_allowed: 'The API key may not be used from this address.',
  insufficient_scope: 'The API key lacks a scope this request needs.',
  service_unavailable: 'API keys cannot be checked right now; retry later.',
  internal_error: 'API keys cannot be checked: the service is misconfigured.',
};

/** The guard's error code for a Verify answer's `code`, and the status to answer with. */
export function refusalOf(code: VerifyCode): Refusal {
  const name = (VerifyCode as unknown as Record<number, string | undefined>)[code];
  return (name === undefined ? undefined : REFUSAL_BY_CODE_NAME[name]) ?? UNKNOWN_REFUSAL;
}

/** Decides from Verify's answer: through only on `valid` with `VERIFY_CODE_OK`. */
export function outcomeOfResponse(response: VerifyResponse, clientIp: string, options: RefusalOptions): GuardOutcome {
  if (response.valid && response.code === VerifyCode.VERIFY_CODE_OK) {
    return { allowed: true, apiKey: verifiedKeyOf(response, clientIp) };
  }
  const refusal = refusalOf(response.code);
  let message = MESSAGES[refusal.code];
  if (refusal.code === 'ip_not_allowed' && clientIp !== '') message = `The API key may not be used from ${clientIp}.`;
  if (refusal.code === 'insufficient_scope' && response.missingScopes.length > 0) {
    message = `The API key lacks the scope${response.missingScopes.length > 1 ? 's' : ''} ${response.missingScopes.join(', ')}.`;
  }
  let challenge = `ApiKey realm=${quoted(options.realm)}`;
  if (refusal.challenge !== undefined) challenge += `, error="${refusal.challenge}"`;
  if (refusal.code === 'insufficient_scope' && response.missingScopes.length > 0) challenge += `, scope=${quoted(response.missingScopes.join(' '))}`;
  return {
    allowed: false,
    status: refusal.status,
    headers: { 'WWW-Authenticate': challenge, 'Cache-Control': 'no-store' },
    body: { error: { code: refusal.code, message } },
  };
}

/** The answer when no key was presented, decided without asking keyward. */
export function missingKeyOutcome(options: RefusalOptions): GuardOutcome {
  return {
    allowed: false,
    status: 401,
    headers: { 'WWW-Authenticate': `ApiKey realm=${quoted(options.realm)}`, 'Cache-Control': 'no-store' },
    body: { error: { code: 'missing_api_key', message: MESSAGES.missing_api_key } },
  };
}

/**
 * The answer when keyward gave none in time or failed: 503 with
 * `Retry-After`, or 500 when the failure is the service's own
 * configuration (`misconfigured`: a wrong verifier token, a route requiring
 * a scope outside keyward's catalog), which retrying cannot cure.
 */
export function failureOutcome(cause: Error, misconfigured: boolean, options: RefusalOptions): GuardOutcome {
  if (misconfigured) {
    return { allowed: false, status: 500, headers: { 'Cache-Control': 'no-store' }, body: { error: { code: 'internal_error', message: MESSAGES.internal_error } }, cause };
  }
  return {
    allowed: false,
    status: 503,
    headers: { 'Retry-After': String(options.retryAfterSeconds), 'Cache-Control': 'no-store' },
    body: { error: { code: 'service_unavailable', message: MESSAGES.service_unavailable } },
    cause,
  };
}

function verifiedKeyOf(response: VerifyResponse, clientIp: string): VerifiedApiKey {
  // Checked, not trusted: an older keyward sends no metadata (decoded as {}), and a hand-built response may hold anything.
  const metadata = (response as { metadata?: unknown }).metadata;
  return {
    id: response.keyId,
    accountId: response.accountId,
    name: response.keyName,
    environment: response.environment === Environment.ENVIRONMENT_LIVE ? 'live' : response.environment === Environment.ENVIRONMENT_TEST ? 'test' : 'unspecified',
    scopes: [...response.scopes],
    ...(isStringRecord(metadata) && Object.keys(metadata).length > 0 ? { metadata: { ...metadata } } : {}),
    clientIp,
  };
}

function isStringRecord(value: unknown): value is Record<string, string> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && Object.values(value).every((v) => typeof v === 'string');
}

/** An RFC 7230 quoted-string. */
function quoted(text: string): string {
  return `"${text.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}
