import { KeywardError, invalidArgument, keyNotFound } from '../errors';
import { type Environment, type KeyFormat, hashSecret } from '../keys/KeyFormat';
import type { AdminContext, KeyEventRecord } from '../keys/KeyEvent';
import type { KeyRecord } from '../keys/KeyRecord';
import { checkAccountId, checkExpiresAt, checkGracePeriod, checkKeyId, checkName, checkPageSize } from '../keys/fields';
import { normaliseWhitelist } from '../keys/ipWhitelist';
import { checkMetadata } from '../keys/metadata';
import type { ScopeCatalog } from '../keys/scopes';
import type { ChangeOutcome, KeyChange, KeyStore, KeyUpdate } from '../store/KeyStore';
import { decodeEventPageToken, decodePageToken, encodeEventPageToken, encodePageToken } from './pageToken';

/** A ListKeys (or ListKeyEvents) page ends once its estimated size reaches this (half a gRPC client's default limit). */
export const PAGE_MAX_BYTES = 2 << 20;

/** An upper estimate of a key's size in an ApiKey message: its strings, plus room for the tags, numbers and times. */
function estimatedBytes(record: KeyRecord): number {
  let bytes = 128 + Buffer.byteLength(record.name) + Buffer.byteLength(record.accountId) + Buffer.byteLength(record.display) + (record.usage.lastUsedIp?.length ?? 0);
  for (const scope of record.scopes) bytes += scope.length + 2;
  for (const entry of record.ipWhitelist) bytes += entry.length + 2;
  for (const [key, value] of Object.entries(record.metadata)) bytes += 8 + Buffer.byteLength(key) + Buffer.byteLength(value);
  return bytes;
}

/** An upper estimate of an event's size in a KeyEvent message. */
function estimatedEventBytes(event: KeyEventRecord): number {
  let bytes = 160 + Buffer.byteLength(event.actor);
  for (const change of event.changes) {
    bytes += 16 + change.field.length + Buffer.byteLength(JSON.stringify(change.before) ?? '') + Buffer.byteLength(JSON.stringify(change.after) ?? '');
  }
  return bytes;
}

/** How many of `items`, from the first, fit in a page of about PAGE_MAX_BYTES (at least one). */
function fittingCount<T>(items: readonly T[], size: (item: T) => number): number {
  let count = 0;
  for (let bytes = 0; count < items.length; count++) {
    bytes += size(items[count] as T);
    if (bytes > PAGE_MAX_BYTES && count > 0) break;
  }
  return count;
}

/**
 * Told of every committed change to a key before the admin call that made it
 * returns; the call succeeds only once this resolves. The caches use it to
 * make "revoked keys stop working immediately" true on every instance.
 */
export interface KeyChangeListener {
  keyChanged(change: KeyChange): Promise<void>;
}

export interface CreateKeyInput {
  readonly accountId: string;
  readonly name: string;
  readonly environment: Environment | undefined;
  readonly scopes: readonly string[];
  readonly ipWhitelist: readonly string[];
  readonly expiresAt: Date | undefined;
  /** Absent: none. */
  readonly metadata?: Readonly<Record<string, string>>;
}

/** UpdateKey's request: the fields named by `updateMask` are set, the others ignored (AIP-134). */
export interface UpdateKeyInput {
  readonly accountId: string;
  readonly keyId: string;
  readonly name: string;
  /** Undefined with `expires_at` in the mask: the key no longer expires. */
  readonly expiresAt?: Date | undefined;
  readonly metadata: Readonly<Record<string, string>>;
  /** The update_mask's paths; undefined when the request had no mask. */
  readonly updateMask?: readonly string[] | undefined;
}

/** The paths UpdateKey's update_mask may name. */
export const UPDATE_PATHS = ['name', 'expires_at', 'metadata'] as const;
type UpdatePath = (typeof UPDATE_PATHS)[number];

/**
 * The update mask's paths, checked: at least one, each one of UPDATE_PATHS,
 * none twice (a path named twice is a caller's bug, not worth guessing at).
 * No `*`: a full replacement would have to clear fields added later.
 */
export function checkUpdateMask(paths: readonly string[] | undefined): ReadonlySet<UpdatePath> {
  if (paths === undefined || paths.length === 0) {
    throw invalidArgument('update_mask', '', `must name at least one field: ${UPDATE_PATHS.join(', ')}`);
  }
  const seen = new Set<UpdatePath>();
  paths.forEach((path, index) => {
    if (!(UPDATE_PATHS as readonly string[]).includes(path)) {
      throw invalidArgument(`update_mask.paths[${index}]`, path, `unknown path; UpdateKey changes ${UPDATE_PATHS.join(', ')}`);
    }
    if (seen.has(path as UpdatePath)) throw invalidArgument(`update_mask.paths[${index}]`, path, 'named twice');
    seen.add(path as UpdatePath);
  });
  return seen;
}

export interface ListKeyEventsInput {
  readonly accountId: string;
  /** '' for every key of the account. */
  readonly keyId: string;
  readonly pageSize: number;
  readonly pageToken: string;
}

export interface ListKeysInput {
  readonly accountId: string;
  readonly includeRevoked: boolean;
  readonly pageSize: number;
  readonly pageToken: string;
}

/**
 * The admin use cases: validate, write to Postgres, tell the listener.
 * Transport-free; src/grpc/adminService.ts maps messages to and from it.
 * Every change takes the caller's AdminContext, recorded with its audit
 * event in the change's own statement (see KeyStore).
 */
export class KeyAdmin {
  constructor(
    private readonly store: KeyStore,
    private readonly format: KeyFormat,
    private readonly catalog: ScopeCatalog,
    private readonly listener: KeyChangeListener,
    private readonly now: () => number = Date.now,
  ) {}

  /** Creates a key; the secret in the result is the only copy there will ever be. */
  async create(context: AdminContext, input: CreateKeyInput): Promise<{ record: KeyRecord; secret: string }> {
    const accountId = checkAccountId(input.accountId);
    const name = checkName(input.name);
    if (input.environment === undefined) {
      throw invalidArgument('environment', 'ENVIRONMENT_UNSPECIFIED', 'must be ENVIRONMENT_LIVE or ENVIRONMENT_TEST');
    }
    const scopes = this.catalog.normalise('scopes', input.scopes);
    const ipWhitelist = normaliseWhitelist('ip_whitelist', input.ipWhitelist);
    const expiresAt = checkExpiresAt(input.expiresAt, this.now());
    const metadata = checkMetadata('metadata', input.metadata ?? {});
    const secret = this.format.generate(input.environment);
    const record = await this.store.insert(
      {
        accountId,
        name,
        environment: input.environment,
        secretHash: hashSecret(secret),
        display: this.format.display(secret, input.environment),
        scopes,
        ipWhitelist,
        expiresAt,
        metadata,
      },
      context,
    );
    return { record, secret };
  }

  async get(accountIdInput: string, keyIdInput: string): Promise<KeyRecord> {
    const accountId = checkAccountId(accountIdInput);
    const keyId = checkKeyId(keyIdInput);
    const record = await this.store.get(accountId, keyId);
    if (record === undefined) throw keyNotFound(accountId, keyId);
    return record;
  }

  /**
   * One page of an account's keys. A page holds at most `page_size` keys and
   * ends early (AIP-158 allows fewer) once it reaches about PAGE_MAX_BYTES,
   * so that a page of keys with long whitelists stays far below a gRPC
   * client's default 4 MiB receive limit.
   */
  async list(input: ListKeysInput): Promise<{ records: KeyRecord[]; nextPageToken: string }> {
    const accountId = checkAccountId(input.accountId);
    const pageSize = checkPageSize(input.pageSize);
    const beforeSeq = decodePageToken(input.pageToken, accountId, input.includeRevoked);
    const page = await this.store.list(accountId, input.includeRevoked, beforeSeq, pageSize);
    const count = fittingCount(page.records, estimatedBytes);
    const more = page.more || count < page.records.length;
    const lastSeq = page.seqs[count - 1];
    const nextPageToken = more && lastSeq !== undefined ? encodePageToken({ accountId, includeRevoked: input.includeRevoked, lastSeq }) : '';
    return { records: page.records.slice(0, count), nextPageToken };
  }

  /**
   * One page of the audit trail of an account, or of one of its keys, newest
   * first; paged as `list` is. A key id of another account, or of no key,
   * gives an empty list, the same answer as a key without events, so the
   * call tells nothing about other accounts.
   */
  async listEvents(input: ListKeyEventsInput): Promise<{ events: KeyEventRecord[]; nextPageToken: string }> {
    const accountId = checkAccountId(input.accountId);
    const keyId = input.keyId === '' ? '' : checkKeyId(input.keyId);
    const pageSize = checkPageSize(input.pageSize);
    const beforeId = decodeEventPageToken(input.pageToken, accountId, keyId);
    const page = await this.store.listEvents(accountId, keyId === '' ? undefined : keyId, beforeId, pageSize);
    const count = fittingCount(page.events, estimatedEventBytes);
    const more = page.more || count < page.events.length;
    const lastId = page.events[count - 1]?.id;
    const nextPageToken = more && lastId !== undefined ? encodeEventPageToken({ accountId, keyId, lastId }) : '';
    return { events: page.events.slice(0, count), nextPageToken };
  }

  async updateScopes(context: AdminContext, accountIdInput: string, keyIdInput: string, scopesInput: readonly string[]): Promise<KeyRecord> {
    const accountId = checkAccountId(accountIdInput);
    const keyId = checkKeyId(keyIdInput);
    const scopes = this.catalog.normalise('scopes', scopesInput);
    return this.settle(accountId, keyId, await this.store.updateScopes(accountId, keyId, scopes, context));
  }

  async updateIpWhitelist(context: AdminContext, accountIdInput: string, keyIdInput: string, entries: readonly string[]): Promise<KeyRecord> {
    const accountId = checkAccountId(accountIdInput);
    const keyId = checkKeyId(keyIdInput);
    const ipWhitelist = normaliseWhitelist('ip_whitelist', entries);
    return this.settle(accountId, keyId, await this.store.updateIpWhitelist(accountId, keyId, ipWhitelist, context));
  }

  /**
   * Sets the fields the update mask names (name, expires_at, metadata), each
   * validated as CreateKey validates it; expires_at unset in the request with
   * the path in the mask clears the expiry. Fields outside the mask are
   * ignored. Setting the values the key already has still makes a new version
   * and writes its event (as updateScopes does). A revoked key cannot be
   * changed (FAILED_PRECONDITION).
   */
  async update(context: AdminContext, input: UpdateKeyInput): Promise<KeyRecord> {
    const accountId = checkAccountId(input.accountId);
    const keyId = checkKeyId(input.keyId);
    const paths = checkUpdateMask(input.updateMask);
    const update: { -readonly [F in keyof KeyUpdate]: KeyUpdate[F] } = {};
    if (paths.has('name')) update.name = checkName(input.name);
    if (paths.has('expires_at')) update.expiresAt = checkExpiresAt(input.expiresAt, this.now());
    if (paths.has('metadata')) update.metadata = checkMetadata('metadata', input.metadata);
    const outcome = await this.store.updateKey(accountId, keyId, update, context);
    if (outcome === 'grace_extended') {
      throw new KeywardError(
        'FAILED_PRECONDITION',
        `expires_at ${update.expiresAt === null ? 'unset' : `"${(update.expiresAt as Date).toISOString()}"`}: key "${keyId}" was replaced by a rotation and its expiry is the end of its grace period; it can be brought forward, not moved later or cleared`,
      );
    }
    return this.settle(accountId, keyId, outcome);
  }

  /**
   * Revokes a key. Revoking a revoked key is not an error and changes nothing
   * (no audit event), but the revocation is announced again, so that retrying a revoke whose
   * first attempt failed after committing still ends with every cache told.
   */
  async revoke(context: AdminContext, accountIdInput: string, keyIdInput: string): Promise<KeyRecord> {
    const accountId = checkAccountId(accountIdInput);
    const keyId = checkKeyId(keyIdInput);
    return this.settle(accountId, keyId, await this.store.revoke(accountId, keyId, context));
  }

  /**
   * Disables a key until `enable`: Verify answers DISABLED. Disabling a
   * disabled key is not an error and changes nothing (no new version, the
   * same `disabled_at`, no audit event), but is announced again, as a repeated revoke is. A
   * revoked key cannot be disabled (FAILED_PRECONDITION): it is refused for
   * good already, and a later "enable" could not undo the revocation anyway.
   */
  async disable(context: AdminContext, accountIdInput: string, keyIdInput: string): Promise<KeyRecord> {
    const accountId = checkAccountId(accountIdInput);
    const keyId = checkKeyId(keyIdInput);
    return this.settle(accountId, keyId, await this.store.disable(accountId, keyId, context), 'disabled');
  }

  /**
   * Enables a disabled key again. Enabling an enabled key changes nothing
   * (announced again, no new version, no audit event); a revoked key cannot be enabled
   * (FAILED_PRECONDITION): revocation is for good.
   */
  async enable(context: AdminContext, accountIdInput: string, keyIdInput: string): Promise<KeyRecord> {
    const accountId = checkAccountId(accountIdInput);
    const keyId = checkKeyId(keyIdInput);
    return this.settle(accountId, keyId, await this.store.enable(accountId, keyId, context), 'enabled');
  }

  /**
   * Replaces a key by a new one (same name, environment, scopes, whitelist,
   * metadata; no expiry; enabled) whose secret is in the result, the only
   * copy there will ever be. The old key's `expires_at` becomes now + grace
   * period (never later than the expiry it had); a grace period of 0 (or
   * unset) revokes it at once. The old key's change reaches every cache
   * before this returns. A revoked key, or one already replaced, is
   * FAILED_PRECONDITION saying which.
   */
  async rotate(
    context: AdminContext,
    accountIdInput: string,
    keyIdInput: string,
    gracePeriod: { readonly seconds: bigint; readonly nanos: number } | undefined,
  ): Promise<{ old: KeyRecord; record: KeyRecord; secret: string }> {
    const accountId = checkAccountId(accountIdInput);
    const keyId = checkKeyId(keyIdInput);
    const graceMicros = checkGracePeriod(gracePeriod);
    const existing = await this.store.get(accountId, keyId);
    if (existing === undefined) throw keyNotFound(accountId, keyId);
    const secret = this.format.generate(existing.environment);
    const fresh = { secretHash: hashSecret(secret), display: this.format.display(secret, existing.environment) };
    const outcome = await this.store.rotate(accountId, keyId, fresh, graceMicros, context);
    if (outcome === 'not_found') throw keyNotFound(accountId, keyId);
    if (outcome === 'revoked') {
      throw new KeywardError('FAILED_PRECONDITION', `key_id "${keyId}": the key is revoked; a revoked key cannot be rotated`);
    }
    if ('replacedBy' in outcome) {
      throw new KeywardError('FAILED_PRECONDITION', `key_id "${keyId}": the key was already replaced by key "${outcome.replacedBy}"; a key can be rotated once`);
    }
    await this.listener.keyChanged(outcome.old);
    return { old: outcome.old.record, record: outcome.created, secret };
  }

  private async settle(accountId: string, keyId: string, outcome: ChangeOutcome, refused: 'changed' | 'disabled' | 'enabled' = 'changed'): Promise<KeyRecord> {
    if (outcome === 'not_found') throw keyNotFound(accountId, keyId);
    if (outcome === 'revoked') {
      throw new KeywardError('FAILED_PRECONDITION', `key_id "${keyId}": the key is revoked; a revoked key cannot be ${refused}`);
    }
    await this.listener.keyChanged(outcome);
    return outcome.record;
  }
}
