/**
 * The one error type keyward raises on purpose. Its code maps one-to-one to a
 * gRPC status (src/grpc/errorStatus.ts); its message goes to the caller, so it
 * must never hold a secret. Anything else thrown is an internal error: logged,
 * never sent.
 */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'FAILED_PRECONDITION'
  | 'UNAUTHENTICATED'
  | 'UNAVAILABLE'
  | 'DEADLINE_EXCEEDED';

export class KeywardError extends Error {
  override readonly name = 'KeywardError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const MAX_ECHOED_LENGTH = 80;
/** What could be a key (a prefix like `fsm_live_` and at least 43 base62 characters): shown by its prefix and four characters only. */
const SECRET_LIKE = /([a-z][a-z0-9]*_(?:[a-z0-9]+_)?)([0-9A-Za-z]{4})[0-9A-Za-z]{39,}/g;
/**
 * How much of a value the mask reads: bounded, so that masking a huge value
 * costs nothing (the pattern backtracks), and long enough that a key starting
 * within the echoed part is read whole.
 */
const MASKED_LENGTH = MAX_ECHOED_LENGTH + 2 * 64;

/**
 * Quotes a caller's value for an error message: cut to a readable length,
 * with anything that could be a key's secret masked (a caller who pastes a
 * key into the wrong field must not see it echoed into logs and dashboards),
 * and control characters escaped (JSON).
 */
export function quote(value: unknown): string {
  const text = typeof value === 'string' ? value : String(value);
  const masked = text.slice(0, MASKED_LENGTH).replace(SECRET_LIKE, '$1$2…');
  const cut = masked.length > MAX_ECHOED_LENGTH || text.length > MASKED_LENGTH ? `${masked.slice(0, MAX_ECHOED_LENGTH)}…` : masked;
  return JSON.stringify(cut);
}

/** INVALID_ARGUMENT naming the field and the value: `name "": must not be empty`. */
export function invalidArgument(field: string, value: unknown, problem: string): KeywardError {
  return new KeywardError('INVALID_ARGUMENT', `${field} ${quote(value)}: ${problem}`);
}

export function keyNotFound(accountId: string, keyId: string): KeywardError {
  return new KeywardError('NOT_FOUND', `key_id ${quote(keyId)}: no such key in account_id ${quote(accountId)}`);
}

/** Turns anything thrown into an Error (graphile/worker's coerceError). */
export function coerceError(thrown: unknown): Error {
  if (thrown instanceof Error) return thrown;
  return new Error(typeof thrown === 'string' ? thrown : `non-error thrown: ${String(thrown)}`);
}
