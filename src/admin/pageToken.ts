import { invalidArgument } from '../errors';
import { LIMITS } from '../keys/fields';

/** The largest seq a token may name: PostgreSQL's bigint. */
const MAX_SEQ = 2n ** 63n - 1n;

/** Where a ListKeys page ended, and the query it belongs to. Opaque to callers. */
export interface PageCursor {
  readonly accountId: string;
  readonly includeRevoked: boolean;
  /** seq of the last key returned: the next page starts below it. */
  readonly lastSeq: string;
}

export function encodePageToken(cursor: PageCursor): string {
  return Buffer.from(JSON.stringify({ v: 1, a: cursor.accountId, r: cursor.includeRevoked, s: cursor.lastSeq })).toString('base64url');
}

/**
 * Reads a page token and checks that it was issued for this account and
 * include_revoked; anything else is INVALID_ARGUMENT naming page_token.
 */
export function decodePageToken(token: string, accountId: string, includeRevoked: boolean): string | undefined {
  if (token === '') return undefined;
  if (token.length > LIMITS.pageTokenLength) {
    throw invalidArgument('page_token', `${token.length} characters`, 'is not a next_page_token returned by ListKeys');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    parsed = undefined;
  }
  const cursor = parsed as { v?: unknown; e?: unknown; a?: unknown; r?: unknown; s?: unknown } | undefined;
  if (cursor?.v !== 1 || cursor.e !== undefined || typeof cursor.s !== 'string' || !/^[1-9]\d{0,18}$/.test(cursor.s) || BigInt(cursor.s) > MAX_SEQ) {
    throw invalidArgument('page_token', token, 'is not a next_page_token returned by ListKeys');
  }
  if (cursor.a !== accountId || cursor.r !== includeRevoked) {
    throw invalidArgument('page_token', token, 'was issued for another account_id or include_revoked');
  }
  return cursor.s;
}

/** Where a ListKeyEvents page ended, and the query it belongs to. Opaque to callers. */
export interface EventPageCursor {
  readonly accountId: string;
  /** '' for the whole account. */
  readonly keyId: string;
  /** id of the last event returned: the next page starts below it. */
  readonly lastId: string;
}

export function encodeEventPageToken(cursor: EventPageCursor): string {
  return Buffer.from(JSON.stringify({ v: 1, e: 1, a: cursor.accountId, k: cursor.keyId, s: cursor.lastId })).toString('base64url');
}

/**
 * Reads a ListKeyEvents page token and checks that it was issued for this
 * account_id and key_id (a ListKeys token is not one); anything else is
 * INVALID_ARGUMENT naming page_token.
 */
export function decodeEventPageToken(token: string, accountId: string, keyId: string): string | undefined {
  if (token === '') return undefined;
  if (token.length > LIMITS.pageTokenLength) {
    throw invalidArgument('page_token', `${token.length} characters`, 'is not a next_page_token returned by ListKeyEvents');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    parsed = undefined;
  }
  const cursor = parsed as { v?: unknown; e?: unknown; a?: unknown; k?: unknown; s?: unknown } | undefined;
  if (cursor?.v !== 1 || cursor.e !== 1 || typeof cursor.s !== 'string' || !/^[1-9]\d{0,18}$/.test(cursor.s) || BigInt(cursor.s) > MAX_SEQ) {
    throw invalidArgument('page_token', token, 'is not a next_page_token returned by ListKeyEvents');
  }
  if (cursor.a !== accountId || cursor.k !== keyId) {
    throw invalidArgument('page_token', token, 'was issued for another account_id or key_id');
  }
  return cursor.s;
}
