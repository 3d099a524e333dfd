import { invalidArgument } from '../errors';

/**
 * The documented maximum of every string and list field of every request
 * (README, "Limits"). Beyond one, the call is refused with INVALID_ARGUMENT
 * naming the field; Verify's `key` is the exception: anything that is not a
 * well-formed key, whatever its length, is an INVALID_KEY answer. The whole
 * request message is bounded too (src/grpc/server.ts).
 */
export const LIMITS = {
  accountIdLength: 128,
  nameLength: 200,
  /** Scopes in one request's list, duplicates included (the catalog has 11). */
  scopes: 64,
  /** Verify's required_scopes. */
  requiredScopes: 64,
  whitelistEntries: 1_000,
  /** An address or CIDR range: the longest IPv6 CIDR is 43 characters. */
  whitelistEntryLength: 64,
  clientIpLength: 64,
  /** VerifyStream's request_id: room for a UUID or a W3C traceparent, not for a payload. */
  requestIdLength: 256,
  pageTokenLength: 512,
  defaultPageSize: 50,
  maxPageSize: 1_000,
  /** Metadata (src/keys/metadata.ts): entries per key; keys match ^[a-z][a-z0-9_.-]{0,39}$. */
  metadataEntries: 16,
  /** A metadata value, in characters; no control characters. */
  metadataValueLength: 256,
  /** All of a key's metadata keys and values, in UTF-8 bytes. */
  metadataBytes: 2_048,
  /** expires_at must be before this (10000-01-01T00:00:00Z): four-digit years only. */
  expiresAtBeforeMs: Date.UTC(10_000, 0, 1),
  /** RotateKey's grace_period: at most 30 days, in microseconds. */
  gracePeriodMaxMicros: 30n * 24n * 3600n * 1_000_000n,
} as const;

const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function checkAccountId(value: string): string {
  if (value.length === 0) throw invalidArgument('account_id', value, 'must not be empty');
  if (value.length > LIMITS.accountIdLength) throw invalidArgument('account_id', value, `must be at most ${LIMITS.accountIdLength} characters`);
  if (value.trim() !== value || CONTROL_CHARACTERS.test(value)) {
    throw invalidArgument('account_id', value, 'must not hold control characters or surrounding spaces');
  }
  return value;
}

export function checkKeyId(value: string): string {
  if (!UUID.test(value)) throw invalidArgument('key_id', value, 'must be a key id as CreateKey returned it (a UUID)');
  return value.toLowerCase();
}

export function checkName(value: string): string {
  const name = value.trim();
  if (name.length === 0) throw invalidArgument('name', value, 'must not be empty');
  if (name.length > LIMITS.nameLength) throw invalidArgument('name', value, `must be at most ${LIMITS.nameLength} characters`);
  if (CONTROL_CHARACTERS.test(name)) throw invalidArgument('name', value, 'must not hold control characters');
  return name;
}

export function checkExpiresAt(value: Date | undefined, nowMs: number): Date | null {
  if (value === undefined) return null;
  if (Number.isNaN(value.getTime())) {
    throw invalidArgument('expires_at', 'out of range', 'is not a valid google.protobuf.Timestamp (seconds within the years 1 to 9999, nanos 0 to 999999999)');
  }
  if (value.getTime() <= nowMs) throw invalidArgument('expires_at', value.toISOString(), 'must be in the future');
  if (value.getTime() >= LIMITS.expiresAtBeforeMs) throw invalidArgument('expires_at', value.toISOString(), 'must be before the year 10000');
  return value;
}

/** 0 means the default; values above the maximum are treated as the maximum (AIP-158); negative is refused. */
export function checkPageSize(value: number): number {
  if (value < 0) throw invalidArgument('page_size', value, 'must not be negative (0 means the default, 50)');
  if (value === 0) return LIMITS.defaultPageSize;
  return Math.min(value, LIMITS.maxPageSize);
}

/**
 * RotateKey's grace_period as whole microseconds (nanos truncated): unset is
 * 0 (AIP: an unset Duration is zero), which revokes the old key at once.
 * Negative, mixed signs or over 30 days is refused.
 */
export function checkGracePeriod(value: { readonly seconds: bigint; readonly nanos: number } | undefined): bigint {
  if (value === undefined) return 0n;
  const shown = `${value.seconds}s ${value.nanos}ns`;
  if (value.nanos <= -1_000_000_000 || value.nanos >= 1_000_000_000 || (value.seconds > 0n && value.nanos < 0) || (value.seconds < 0n && value.nanos > 0)) {
    throw invalidArgument('grace_period', shown, 'is not a valid google.protobuf.Duration (nanos within ±999999999, of the sign of seconds)');
  }
  const micros = value.seconds * 1_000_000n + BigInt(Math.trunc(value.nanos / 1_000));
  if (value.seconds < 0n || value.nanos < 0) throw invalidArgument('grace_period', shown, 'must not be negative (0 revokes the old key at once)');
  if (micros > LIMITS.gracePeriodMaxMicros) throw invalidArgument('grace_period', shown, 'must be at most 30 days (2592000s)');
  return micros;
}
