import { type Metadata, type StatusObject, status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { type ErrorCode, KeywardError, coerceError } from '../errors';

const CODES: Record<ErrorCode, status> = {
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  NOT_FOUND: status.NOT_FOUND,
  FAILED_PRECONDITION: status.FAILED_PRECONDITION,
  UNAUTHENTICATED: status.UNAUTHENTICATED,
  UNAVAILABLE: status.UNAVAILABLE,
  DEADLINE_EXCEEDED: status.DEADLINE_EXCEEDED,
};

export type ErrorStatus = Partial<StatusObject> & { code: status; details: string; metadata?: Metadata };

/**
 * The one mapping from a thrown error to what the caller sees. A KeywardError
 * keeps its code and message; an outage is logged as a warning; anything else
 * is logged with its cause and answered as a bare INTERNAL, so that no
 * internal detail (let alone a secret) reaches a caller.
 */
export function toErrorStatus(thrown: unknown, logger: Logger, method: string): ErrorStatus {
  const error = coerceError(thrown);
  if (error instanceof KeywardError) {
    if (error.code === 'UNAVAILABLE') logger.warn({ method, err: error.cause ?? error }, 'dependency unavailable');
    return { code: CODES[error.code], details: error.message };
  }
  logger.error({ method, err: error }, 'internal error');
  return { code: status.INTERNAL, details: 'internal error' };
}
