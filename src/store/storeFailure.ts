import { KeywardError } from '../errors';
import { SqlState, sqlStateOf } from './sqlState';

/**
 * What a failed PostgreSQL call says about PostgreSQL, decided from error
 * codes and from what keyward itself observed (the phase that failed, its
 * own timer, the connection ending), never from a driver's message text:
 *
 * - `unreachable`: no connection could be made or kept (refused, reset,
 *   unreachable host, the server shutting down, the connection ending under
 *   a statement). Nobody can commit through this path; CacheTrust may keep
 *   trusting its caches (README, "When a dependency fails").
 * - `slow`: PostgreSQL is there but did not answer in time (keyward's
 *   timer, PostgreSQL's statement_timeout) or is too busy to take the call
 *   (too many connections, out of resources). It may still commit changes
 *   for others: caches must not be trusted on it.
 * - `failed`: PostgreSQL answered that it refuses the statement, or the
 *   cause is unknown. Proves nothing either way.
 */
export type FailureKind = 'unreachable' | 'slow' | 'failed';

/** Where the call failed: making (or waiting for) a connection, or running the statement on one. */
export type FailurePhase = 'connect' | 'query';

export interface StoreFailure {
  readonly kind: FailureKind;
  readonly phase: FailurePhase;
}

/** What keyward saw of a failed call besides the error itself. */
export interface Observed {
  /** keyward's own time limit for the call ran out (it then ended the connection or the wait). */
  readonly timedOut: boolean;
  /** The connection ended (the driver emitted an error event) while the statement ran. */
  readonly connectionLost: boolean;
}

/** Node's codes for a peer that cannot be reached or dropped the connection. */
const NETWORK_CODES: ReadonlySet<string> = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ECONNABORTED']);
/** SQLSTATEs of a server that is going away or not accepting connections (class 08 is matched by prefix). */
const GOING_AWAY: ReadonlySet<string> = new Set([SqlState.adminShutdown, SqlState.crashShutdown, SqlState.cannotConnectNow]);

function nodeCodeOf(error: unknown): string | undefined {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof AggregateError) {
      for (const inner of e.errors) {
        const code = nodeCodeOf(inner);
        if (code !== undefined) return code;
      }
    }
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return code;
  }
  return undefined;
}

/** Classifies a failed call (pure: codes and observations only). */
export function classifyStoreFailure(error: unknown, phase: FailurePhase, observed: Observed): FailureKind {
  if (observed.timedOut) return 'slow';
  if (nodeCodeOf(error) !== undefined) return 'unreachable';
  const state = sqlStateOf(error);
  if (state !== undefined) {
    if (state.startsWith(SqlState.connectionExceptionClass) || GOING_AWAY.has(state)) return 'unreachable';
    if (state === SqlState.queryCanceled || state.startsWith(SqlState.insufficientResourcesClass)) return 'slow';
    return 'failed';
  }
  // No code at all: a connection that could not be made, or ended under the statement.
  if (phase === 'connect' || observed.connectionLost) return 'unreachable';
  return 'failed';
}

const UNAVAILABLE_MESSAGE = 'the key store (PostgreSQL) is unavailable; try again';

/**
 * UNAVAILABLE carrying its classification: what a store call throws when
 * PostgreSQL is unreachable or slow (the driver's error as its cause).
 */
export class StoreUnavailable extends KeywardError {
  constructor(
    readonly failure: StoreFailure,
    cause: unknown,
  ) {
    super('UNAVAILABLE', UNAVAILABLE_MESSAGE, { cause });
  }
}

/**
 * The error a store call throws for `error`: StoreUnavailable when
 * PostgreSQL is unreachable or slow, the error itself otherwise (a refused
 * statement is a bug or bad data: INTERNAL unless the caller maps it).
 */
export function storeError(error: unknown, phase: FailurePhase, observed: Observed): unknown {
  if (error instanceof StoreUnavailable) return error;
  const kind = classifyStoreFailure(error, phase, observed);
  return kind === 'failed' ? error : new StoreUnavailable({ kind, phase }, error);
}

/** The classification of any error a store call threw: `failed` for anything but StoreUnavailable. */
export function failureOf(error: unknown): StoreFailure {
  return error instanceof StoreUnavailable ? error.failure : { kind: 'failed', phase: 'query' };
}
