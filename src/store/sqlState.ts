/** The SQLSTATEs and driver errors keyward treats specially, by name. */
export const SqlState = {
  uniqueViolation: '23505',
  queryCanceled: '57014',
  adminShutdown: '57P01',
  crashShutdown: '57P02',
  cannotConnectNow: '57P03',
  tooManyConnections: '53300',
  /** Class 08: connection exceptions. */
  connectionExceptionClass: '08',
  serializationFailure: '40001',
  deadlockDetected: '40P01',
  statementCompletionUnknown: '40003',
  /** Connected to a standby (e.g. just after a failover). */
  readOnlySqlTransaction: '25006',
  lockNotAvailable: '55P03',
  /** Class 53: insufficient resources (disk full, out of memory, too many connections). */
  insufficientResourcesClass: '53',
  /** Class 57: operator intervention (cancel, shutdown, cannot connect now, idle session timeout). */
  operatorInterventionClass: '57',
  /** Class 58: system errors (I/O) outside PostgreSQL. */
  systemErrorClass: '58',
  /** Class 28: authentication failed (at connect). */
  invalidAuthorizationClass: '28',
  /** The database does not exist (at connect). */
  invalidCatalogName: '3D000',
} as const;

/**
 * How a failed write is retried. `transient`: the statement may succeed as
 * is later (PostgreSQL unreachable, busy, restarting, a conflict with another
 * transaction), and it may even have committed, so it is retried under the
 * same batch id. `permanent`: PostgreSQL answered that it refuses the
 * statement itself, which therefore committed nothing; retrying it as is
 * would fail forever.
 */
export type WriteFailure = 'transient' | 'permanent';

/** SQLSTATE classes and codes that say nothing about a statement's values. */
const TRANSIENT_CLASSES: ReadonlySet<string> = new Set([
  SqlState.connectionExceptionClass,
  SqlState.insufficientResourcesClass,
  SqlState.operatorInterventionClass,
  SqlState.systemErrorClass,
  SqlState.invalidAuthorizationClass,
]);
const TRANSIENT_STATES: ReadonlySet<string> = new Set([
  SqlState.serializationFailure,
  SqlState.deadlockDetected,
  SqlState.statementCompletionUnknown,
  SqlState.readOnlySqlTransaction,
  SqlState.lockNotAvailable,
  SqlState.invalidCatalogName,
]);

/**
 * A SQLSTATE: five digits or capitals. Node's error codes (`EPIPE`,
 * `ECONNRESET`, `ERR_…`) all start with E, which no SQLSTATE class does.
 */
const SQLSTATE = /^[0-9A-DF-Z][0-9A-Z]{4}$/;

/**
 * The SQLSTATE PostgreSQL answered with, if the error (or, for keyward's own
 * UNAVAILABLE, its cause) is such an answer; otherwise undefined.
 */
export function sqlStateOf(error: unknown): string | undefined {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && SQLSTATE.test(code)) return code;
  }
  return undefined;
}

/**
 * Classifies a failed write by SQLSTATE and Node error code, never by
 * message. Permanent only when PostgreSQL answered with a SQLSTATE that is
 * not transient (class 22 data exceptions, 23 integrity violations, 42
 * syntax or access rules, …): only then is it certain that the statement did
 * not commit, and likely that its content is to blame (not always: a
 * privilege revoked or a table dropped is permanent too, and refuses every
 * entry). Everything else (network errors, time limits, keyward's
 * UNAVAILABLE, an error of unknown origin) leaves the outcome unknown and is
 * transient.
 */
export function classifyWriteFailure(error: unknown): WriteFailure {
  if (error instanceof AggregateError && error.errors.some((e) => classifyWriteFailure(e) === 'transient')) return 'transient';
  const code = error instanceof Error ? (error as { code?: unknown }).code : undefined;
  if (typeof code !== 'string' || !SQLSTATE.test(code)) return 'transient';
  if (TRANSIENT_STATES.has(code) || TRANSIENT_CLASSES.has(code.slice(0, 2))) return 'transient';
  return 'permanent';
}
