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
} as const;

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);
/** Driver messages of a connection that failed or died (not of a slow query or a busy pool). */
const CONNECTION_MESSAGES = ['Connection terminated', 'Client has encountered a connection error', 'Connection refused', 'connection timeout'];
const DRIVER_MESSAGES = [
  'Connection terminated',
  'timeout exceeded when trying to connect',
  'Query read timeout',
  'Client has encountered a connection error',
  'Connection refused',
  'connection timeout',
];

/**
 * Whether an error from pg means "Postgres is down, unreachable or too slow"
 * (answered UNAVAILABLE) rather than a bug (answered INTERNAL).
 */
export function isStoreUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (NETWORK_CODES.has(code)) return true;
    if (code.startsWith(SqlState.connectionExceptionClass)) return true;
    if (
      code === SqlState.queryCanceled ||
      code === SqlState.adminShutdown ||
      code === SqlState.crashShutdown ||
      code === SqlState.cannotConnectNow ||
      code === SqlState.tooManyConnections
    ) {
      return true;
    }
  }
  return DRIVER_MESSAGES.some((m) => error.message.includes(m));
}

/**
 * Whether an error means Postgres cannot be reached at all (refused, reset,
 * unreachable, dropped, shutting down), as opposed to slow or busy. Only this
 * lets an instance keep trusting its caches without reading the outbox
 * (CacheTrust): a slow Postgres still commits changes.
 */
export function isConnectionFailure(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error instanceof AggregateError && error.errors.some(isConnectionFailure)) return true;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (NETWORK_CODES.has(code) || code.startsWith(SqlState.connectionExceptionClass)) return true;
    if (code === SqlState.adminShutdown || code === SqlState.crashShutdown || code === SqlState.cannotConnectNow) return true;
  }
  return CONNECTION_MESSAGES.some((m) => error.message.includes(m));
}
