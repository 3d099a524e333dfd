import type { Environment } from './KeyFormat';
import type { KeyMetadata } from './metadata';

/** Usage of a key as last flushed to Postgres. */
export interface KeyUsage {
  /** Verify calls that presented the key, whatever their verdict. */
  readonly requestCount: bigint;
  /** Of those, the ones refused (revoked, disabled, expired, address, scope). */
  readonly refusedCount: bigint;
  readonly lastUsedAt: Date | null;
  readonly lastUsedIp: string | null;
}

/** A stored key as admin RPCs see it: everything but the secret, which is never stored. */
export interface KeyRecord {
  readonly id: string;
  readonly accountId: string;
  readonly name: string;
  readonly environment: Environment;
  readonly display: string;
  readonly scopes: readonly string[];
  readonly ipWhitelist: readonly string[];
  readonly createdAt: Date;
  readonly expiresAt: Date | null;
  readonly revokedAt: Date | null;
  /** Set while the key is disabled (DisableKey), cleared by EnableKey. */
  readonly disabledAt: Date | null;
  /** Labels set by CreateKey or UpdateKey (checked by checkMetadata); {} when none. */
  readonly metadata: KeyMetadata;
  /** Incremented by every change; caches refuse anything older than what they have seen. */
  readonly version: number;
  /** The key this one replaced (RotateKey); null when it was made by CreateKey. */
  readonly rotatedFromKeyId: string | null;
  /** The key that replaced this one (RotateKey); null until rotated. */
  readonly replacedByKeyId: string | null;
  readonly usage: KeyUsage;
}
