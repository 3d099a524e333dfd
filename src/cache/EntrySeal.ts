import { type KeyObject, createHmac, createSecretKey, timingSafeEqual } from 'node:crypto';
import { SEAL_GRACE_MS } from './durations';

/** The layout of field `d` this code writes and reads; any other is refused. */
export const ENTRY_SCHEMA = '1';

/** Why a Redis entry was not trusted: the label of keyward_redis_entries_rejected_total. */
export type EntryRejection =
  /** Not in a sealed layout at all (no MAC): written by hand, or by a release before the MAC. */
  | 'unsealed'
  /** A schema this code does not know. */
  | 'schema'
  /** Field `v` (what the compare-and-set scripts compare) differs from the version the MAC covers. */
  | 'version'
  /** The MAC does not match (forged, or sealed under another secret). */
  | 'mac'
  /** Sealed, but past the expiry it was sealed with (kept alive or put back by someone else). */
  | 'expired'
  /** The Redis key holds something other than a hash. */
  | 'type';

export const ENTRY_REJECTIONS: readonly EntryRejection[] = ['unsealed', 'schema', 'version', 'mac', 'expired', 'type'];

export type OpenedEntry = { readonly ok: true; readonly payload: string } | { readonly ok: false; readonly reason: EntryRejection };

const DIGITS = /^(?:0|[1-9][0-9]{0,15})$/;
const MAC_CHARS = 43; // 32 bytes, base64url without padding
const DOMAIN = 'keyward-redis-entry\n';

/**
 * Authenticates keyward's Redis entries with HMAC-SHA256 under a secret that
 * only keyward instances hold (keyward.instance_secrets, read at start), so
 * that write access to Redis alone cannot make an entry keyward trusts.
 *
 * Field `d` of `<prefix>key:<sha256>` is
 * `<schema>.<version>.<expiresAt>.<mac>.<payload>`: the MAC covers the
 * schema, the entry's hash (from its Redis key name), the version, the
 * expiry (epoch ms, by the writer's clock) and the payload (the record as
 * JSON, "-" for "no such key", "" for a tombstone). The version is also in
 * field `v` for the compare-and-set scripts, which cannot check a MAC: an
 * entry whose `v` differs from the sealed one is refused.
 */
export class EntrySeal {
  private readonly key: KeyObject;

  /** @param graceMs how long past its sealed expiry an entry is still accepted (clock differences between instances). */
  constructor(
    secret: Buffer,
    private readonly graceMs = SEAL_GRACE_MS,
  ) {
    if (secret.length < 32) throw new Error('the Redis MAC secret must be at least 32 bytes');
    this.key = createSecretKey(secret);
  }

  /** Field `d` for `payload` at `version`, valid for `ttlMs` from `now` (epoch ms). */
  seal(hash: string, version: number, payload: string, ttlMs: number, now: number): string {
    const head = `${ENTRY_SCHEMA}.${version}.${now + ttlMs}`;
    return `${head}.${this.mac(hash, head, payload).toString('base64url')}.${payload}`;
  }

  /** Checks fields `v` and `d` of the entry of `hash` at `now` (epoch ms); only a sealed, matching, live entry yields its payload. */
  open(hash: string, versionField: string | null, data: string | null, now: number): OpenedEntry {
    if (data === null) return { ok: false, reason: 'unsealed' };
    const schemaEnd = data.indexOf('.');
    if (schemaEnd < 0) return { ok: false, reason: 'unsealed' };
    if (data.slice(0, schemaEnd) !== ENTRY_SCHEMA) return { ok: false, reason: 'schema' };
    const versionEnd = data.indexOf('.', schemaEnd + 1);
    const expiryEnd = versionEnd < 0 ? -1 : data.indexOf('.', versionEnd + 1);
    const macEnd = expiryEnd < 0 ? -1 : expiryEnd + 1 + MAC_CHARS;
    if (macEnd < 0 || data.charCodeAt(macEnd) !== 46 /* . */) return { ok: false, reason: 'unsealed' };
    const version = data.slice(schemaEnd + 1, versionEnd);
    const expiry = data.slice(versionEnd + 1, expiryEnd);
    if (!DIGITS.test(version) || !DIGITS.test(expiry)) return { ok: false, reason: 'unsealed' };
    const given = Buffer.from(data.slice(expiryEnd + 1, macEnd), 'base64url');
    const payload = data.slice(macEnd + 1);
    const expected = this.mac(hash, data.slice(0, expiryEnd), payload);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, reason: 'mac' };
    if (versionField !== version) return { ok: false, reason: 'version' };
    if (now > Number(expiry) + this.graceMs) return { ok: false, reason: 'expired' };
    return { ok: true, payload };
  }

  /** HMAC over the domain, hash, `<schema>.<version>.<expiresAt>` and payload; only the payload is of free form, and it comes last. */
  private mac(hash: string, head: string, payload: string): Buffer {
    // One update of one string: each update() call costs about as much as hashing a few hundred bytes.
    return createHmac('sha256', this.key).update(`${DOMAIN}${hash}\n${head}\n${payload}`).digest();
  }
}
