import { Command, type Redis } from 'ioredis';
import type { KeyState } from '../keys/VerifiableKey';
import type { EntryRejection, EntrySeal } from './EntrySeal';

/** What Redis holds for a hash. */
export type RedisEntry =
  | { readonly kind: 'key'; readonly state: KeyState }
  | { readonly kind: 'unknown' }
  /** Nothing, or a tombstone: a change went by, read Postgres. */
  | { readonly kind: 'miss' }
  /** An entry keyward did not seal (or not for this hash, version, time): a miss, never trusted. Pass it to `discard`. */
  | { readonly kind: 'rejected'; readonly reason: EntryRejection; readonly version: string | null; readonly data: string | null };

/** Payload of a negative entry. */
const UNKNOWN = '-';
/** Payload of a tombstone. */
const TOMBSTONE = '';

/**
 * Writes `data` at `version` unless Redis already holds a newer version, so a
 * lookup that read an old record cannot overwrite a change (compare-and-set).
 * A tombstone never replaces data of its own version or newer.
 * KEYS[1] entry; ARGV: version, data (sealed), ttl ms, "1" for a tombstone.
 */
const FILL_SCRIPT = `
local current = tonumber(redis.call('HGET', KEYS[1], 'v'))
local version = tonumber(ARGV[1])
if current and (current > version or (current == version and ARGV[4] == '1')) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`;

/**
 * Deletes an entry keyward refused (see EntrySeal), so that a forged `v` (say,
 * a huge version) cannot block the compare-and-set writes that follow: the
 * scripts cannot check a MAC, so the reader that found the entry bad removes
 * it. Only if it still holds what was read (a write in between is left alone),
 * or if the key is not a hash at all.
 * KEYS[1] entry; ARGV: v and d as read ("" for absent).
 */
const DISCARD_SCRIPT = `
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return 0 end
if t ~= 'hash' then return redis.call('DEL', KEYS[1]) end
local f = redis.call('HMGET', KEYS[1], 'v', 'd')
if (f[1] or '') == ARGV[1] and (f[2] or '') == ARGV[2] then return redis.call('DEL', KEYS[1]) end
return 0`;

/**
 * An admin change, in one round trip: write the new record through (as
 * FILL_SCRIPT does), announce it on the channel, and list the members whose
 * lease is live at this moment, by Redis's clock.
 * KEYS[1] entry, KEYS[2] members; ARGV: version, data, ttl ms, channel, message.
 */
const ANNOUNCE_SCRIPT = `
local current = tonumber(redis.call('HGET', KEYS[1], 'v'))
local version = tonumber(ARGV[1])
if not current or current < version or (current == version and ARGV[2] ~= '') then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
local receivers = redis.call('PUBLISH', ARGV[4], ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {receivers, redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf')}`;

/**
 * Renews this instance's membership: live until Redis's now + ARGV[2] ms.
 * The member string carries the instance's lease (see memberOf), so the lease
 * is published with the membership in one write and can never be found
 * without it. Also forgets members dead for a minute, and returns every
 * member left (live or not): announcers remember their leases.
 * KEYS[1] members; ARGV: member, ttl ms.
 */
const RENEW_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
return redis.call('ZRANGE', KEYS[1], 0, -1)`;

/** An entry of `<prefix>members`: an instance, and the lease it trusts its caches for (unknown for entries of older releases). */
export interface Member {
  readonly id: string;
  readonly leaseMs: number | undefined;
}

/** The member string of an instance: `<id> lease=<ms>`. */
export function memberOf(id: string, leaseMs: number): string {
  return `${id} lease=${leaseMs}`;
}

/** Reads a member string; a bare id (older releases) has no known lease. */
export function parseMember(text: string): Member {
  const [id = '', lease] = text.split(' ');
  const leaseMs = lease?.startsWith('lease=') === true ? Number(lease.slice('lease='.length)) : Number.NaN;
  return { id, leaseMs: Number.isSafeInteger(leaseMs) && leaseMs > 0 ? leaseMs : undefined };
}

/**
 * The write witness of one instance (RedisServerWatch): KEYS[1] its witness;
 * ARGV: the new value, its TTL in ms. Answers the value it replaced (or
 * false) and the server's `INFO server` (for its run_id), in one step.
 */
const WITNESS_SCRIPT = `
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {previous, redis.call('INFO', 'server')}
`;

interface ScriptCommands {
  keywardFill(entry: string, version: number, data: string, ttlMs: number, tombstone: '0' | '1'): Promise<number>;
  keywardDiscard(entry: string, version: string, data: string): Promise<number>;
  keywardAnnounce(entry: string, members: string, version: number, data: string, ttlMs: number, channel: string, message: string): Promise<[number, string[]]>;
}

/** Names of everything keyward keeps in Redis, under the configured prefix. */
export class RedisNames {
  readonly members: string;
  readonly invalidations: string;
  constructor(readonly prefix: string) {
    this.members = `${prefix}members`;
    this.invalidations = `${prefix}invalidations`;
  }
  entry(hash: string): string {
    return `${this.prefix}key:${hash}`;
  }
  acks(instanceId: string): string {
    return `${this.prefix}acks:${instanceId}`;
  }
  witness(instanceId: string): string {
    return `${this.prefix}witness:${instanceId}`;
  }
}

/**
 * The Redis tier: versioned entries `<prefix>key:<sha256>` = hash {v, d},
 * where d is sealed by EntrySeal (schema, version, expiry, MAC) around the
 * record as JSON, "-" for "no such key", or "" for a tombstone. Every write
 * goes through a compare-and-set script; an entry that fails the seal is
 * reported as `rejected`, never trusted.
 */
export class RedisTier {
  private readonly redis: Redis & ScriptCommands;

  constructor(
    redis: Redis,
    readonly names: RedisNames,
    private readonly ttl: { readonly keyMs: number; readonly unknownMs: number },
    private readonly seal: EntrySeal,
  ) {
    redis.defineCommand('keywardFill', { numberOfKeys: 1, lua: FILL_SCRIPT });
    redis.defineCommand('keywardDiscard', { numberOfKeys: 1, lua: DISCARD_SCRIPT });
    redis.defineCommand('keywardAnnounce', { numberOfKeys: 2, lua: ANNOUNCE_SCRIPT });
    this.redis = redis as Redis & ScriptCommands;
  }

  get ready(): boolean {
    return this.redis.status === 'ready';
  }

  /** Calls `listener` whenever the command connection closes. */
  onClose(listener: () => void): void {
    this.redis.on('close', listener);
  }

  /** Reads the entry of `hash`; only what passes the seal at `now` (epoch ms) is trusted. */
  async get(hash: string, now = Date.now()): Promise<RedisEntry> {
    let fields: Array<string | null>;
    try {
      fields = await this.redis.hmget(this.names.entry(hash), 'v', 'd');
    } catch (error) {
      // Redis's error code is the reply's first word: a key of another type is bad data, not a Redis failure.
      if (error instanceof Error && error.message.startsWith('WRONGTYPE')) return { kind: 'rejected', reason: 'type', version: null, data: null };
      throw error;
    }
    const [version = null, data = null] = fields;
    if (version === null && data === null) return { kind: 'miss' };
    const opened = this.seal.open(hash, version, data, now);
    if (!opened.ok) return { kind: 'rejected', reason: opened.reason, version, data };
    if (opened.payload === TOMBSTONE) return { kind: 'miss' };
    if (opened.payload === UNKNOWN) return { kind: 'unknown' };
    const state = JSON.parse(opened.payload) as Partial<KeyState>;
    // Written by a release before DisableKey (a rolling upgrade): it cannot say
    // whether the key is disabled, so Postgres is asked and the fill replaces it.
    if (state.disabledAt === undefined) return { kind: 'miss' };
    // Likewise a release before metadata: an entry without it is not "no metadata".
    if (state.metadata === undefined) return { kind: 'miss' };
    return { kind: 'key', state: state as KeyState };
  }

  /** Deletes a rejected entry if it still holds what was read (see DISCARD_SCRIPT), so that the next fill can write. */
  discard(hash: string, entry: { readonly version: string | null; readonly data: string | null }): Promise<number> {
    return this.redis.keywardDiscard(this.names.entry(hash), entry.version ?? '', entry.data ?? '');
  }

  /** Stores a record read from Postgres, unless Redis already knows a newer version. */
  fill(hash: string, state: KeyState): Promise<number> {
    return this.write(hash, state.version, JSON.stringify(state), this.ttl.keyMs, '0');
  }

  /** Remembers for a short time that no key has this hash (version 0: any real version wins). */
  fillUnknown(hash: string): Promise<number> {
    return this.write(hash, 0, UNKNOWN, this.ttl.unknownMs, '0');
  }

  /** Marks entries older than `version` stale (outbox relay, where the new record is not at hand). */
  tombstone(hash: string, version: number): Promise<number> {
    return this.write(hash, version, TOMBSTONE, this.ttl.keyMs, '1');
  }

  private write(hash: string, version: number, payload: string, ttlMs: number, tombstone: '0' | '1'): Promise<number> {
    return this.redis.keywardFill(this.names.entry(hash), version, this.seal.seal(hash, version, payload, ttlMs, Date.now()), ttlMs, tombstone);
  }

  /** Writes a changed record through, publishes `message`, returns subscribers reached and live members. */
  async announce(hash: string, state: KeyState, message: string): Promise<{ receivers: number; members: Member[] }> {
    const [receivers, members] = await this.redis.keywardAnnounce(
      this.names.entry(hash),
      this.names.members,
      state.version,
      this.seal.seal(hash, state.version, JSON.stringify(state), this.ttl.keyMs, Date.now()),
      this.ttl.keyMs,
      this.names.invalidations,
      message,
    );
    return { receivers, members: members.map(parseMember) };
  }

  /**
   * Renews `member` (see memberOf) for `ttlMs` by Redis's clock; resolves with
   * every member listed. Its time limit is `timeoutMs`, not the connection's
   * command timeout: a renewal answered late still proves what it wrote.
   */
  async renewMembership(member: string, ttlMs: number, timeoutMs: number): Promise<Member[]> {
    const command = new Command('eval', [RENEW_SCRIPT, 1, this.names.members, member, ttlMs], { replyEncoding: 'utf8' });
    command.setTimeout(timeoutMs);
    const members = (await this.redis.sendCommand(command)) as string[];
    return members.map(parseMember);
  }

  /**
   * Replaces this instance's witness with `value` (TTL `ttlMs`); resolves with
   * the value replaced (null if none) and the server's run_id. Time limit
   * `timeoutMs`, like renewMembership.
   */
  async witness(instanceId: string, value: string, ttlMs: number, timeoutMs: number): Promise<{ previous: string | null; runId: string | undefined }> {
    const command = new Command('eval', [WITNESS_SCRIPT, 1, this.names.witness(instanceId), value, ttlMs], { replyEncoding: 'utf8' });
    command.setTimeout(timeoutMs);
    const [previous, info] = (await this.redis.sendCommand(command)) as [string | null, string];
    return { previous: previous ?? null, runId: /^run_id:(\w+)/m.exec(info)?.[1] };
  }

  /** The server's eviction policy (INFO memory), or undefined if it does not say. */
  async evictionPolicy(): Promise<string | undefined> {
    const info = await this.redis.info('memory');
    return /^maxmemory_policy:(\S+)/m.exec(info)?.[1];
  }

  async leaveMembership(member: string): Promise<void> {
    await this.redis.zrem(this.names.members, member);
  }

  publish(channel: string, message: string): Promise<number> {
    return this.redis.publish(channel, message);
  }
}
