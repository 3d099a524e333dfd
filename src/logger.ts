import pino, { type Logger } from 'pino';
import type { LogLevel } from './config';

/**
 * One JSON line per event on stdout. Requests are never logged: a Verify
 * request carries a secret. Errors are serialised by pino's `err` serialiser
 * (message, stack, code), whose text keyward composes without secrets.
 */
export function createLogger(level: LogLevel = 'info'): Logger {
  return pino({ level, base: { service: 'keyward', pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
}
