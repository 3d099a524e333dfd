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
/**
 * What could be a key's body (its 49 base62 characters, with or without
 * the prefix, in any case): a run of at least 40 letters and digits that
 * mixes lower case with digits or capitals. Shown by its first four
 * characters only. A run of one kind (`nnnn…`, a long lower-case name) is
 * echoed as it is.
 */
const LONG_RUN = /[0-9A-Za-z]{40,}/g;
const maskRun = (run: string): string => (/[a-z]/.test(run) && /[0-9A-Z]/.test(run) ? `${run.slice(0, 4)}…` : run);
/** How much of a value the mask reads: bounded, and long enough that a key starting within the echoed part is read whole. */
const MASKED_LENGTH = MAX_ECHOED_LENGTH + 2 * 64;

/**
 * Quotes a caller's value for an error message: cut to a readable length,
 * with anything that could be a key's secret masked (a caller who pastes a
 * key into the wrong field must not see it echoed into logs and dashboards),
 * and control characters escaped (JSON).
 */
export function quote(value: unknown): string {
  const text = typeof value === 'string' ? value : String(value);
  const masked = text.slice(0, MASKED_LENGTH).replace(LONG_RUN, maskRun);
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
