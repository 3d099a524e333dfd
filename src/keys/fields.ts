import { invalidArgument } from '../errors';

/**
 * Validation of the plain fields of admin requests. Each function returns the
 * value to store or throws INVALID_ARGUMENT naming the field and the value.
 */
export const LIMITS = {
  accountIdLength: 128,
  nameLength: 200,
  defaultPageSize: 50,
  maxPageSize: 1_000,
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
  if (Number.isNaN(value.getTime())) throw invalidArgument('expires_at', value, 'is not a valid time');
  if (value.getTime() <= nowMs) throw invalidArgument('expires_at', value.toISOString(), 'must be in the future');
  return value;
}

/** 0 means the default; values above the maximum are treated as the maximum (AIP-158). */
export function checkPageSize(value: number): number {
  if (value === 0) return LIMITS.defaultPageSize;
  return Math.min(value, LIMITS.maxPageSize);
}
