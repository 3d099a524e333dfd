import type { Redis } from 'ioredis';
import type { KeyState } from '../keys/VerifiableKey';

/** What Redis holds for a hash. */
export type RedisEntry =
  | { readonly kind: 'key'; readonly state: KeyState }
  | { readonly kind: 'unknown' }
  /** Nothing, or a tombstone: a change went by, read Postgres. */
  | { readonly kind: 'miss' };

/** Field `d` of a negative entry. */
const UNKNOWN = '-';

/**
 * Writes `data` at `version` unless Redis already holds a newer version, so a
 * lookup that read an old record cannot overwrite a change (compare-and-set).
 * A tombstone (empty data) never replaces data of its own version or newer.
 * KEYS[1] entry; ARGV: version, data, ttl ms.
 */
const FILL_SCRIPT = `
local current = tonumber(redis.call('HGET', KEYS[1], 'v'))
local version = tonumber(ARGV[1])
if current and (current > version or (current == version and ARGV[2] == '')) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`;

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
 * Also forgets members dead for a minute. KEYS[1] members; ARGV: id, lease ms.
 */
const RENEW_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
return now`;

interface ScriptCommands {
  keywardFill(entry: string, version: number, data: string, ttlMs: number): Promise<number>;
  keywardAnnounce(entry: string, members: string, version: number, data: string, ttlMs: number, channel: string, message: string): Promise<[number, string[]]>;
  keywardRenew(members: string, id: string, leaseMs: number): Promise<number>;
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
}

/**
 * The Redis tier: versioned entries `<prefix>key:<sha256>` = hash {v, d},
 * where d is the record as JSON, "-" for "no such key", or "" for a
 * tombstone. Every write goes through a compare-and-set script.
 */
export class RedisTier {
  private readonly redis: Redis & ScriptCommands;

  constructor(
    redis: Redis,
    readonly names: RedisNames,
    private readonly ttl: { readonly keyMs: number; readonly unknownMs: number },
  ) {
    redis.defineCommand('keywardFill', { numberOfKeys: 1, lua: FILL_SCRIPT });
    redis.defineCommand('keywardAnnounce', { numberOfKeys: 2, lua: ANNOUNCE_SCRIPT });
    redis.defineCommand('keywardRenew', { numberOfKeys: 1, lua: RENEW_SCRIPT });
    this.redis = redis as Redis & ScriptCommands;
  }

  get ready(): boolean {
    return this.redis.status === 'ready';
  }

  /** Calls `listener` whenever the command connection closes. */
  onClose(listener: () => void): void {
    this.redis.on('close', listener);
  }

  async get(hash: string): Promise<RedisEntry> {
    const [version, data] = await this.redis.hmget(this.names.entry(hash), 'v', 'd');
    if (version == null || data == null || data === '') return { kind: 'miss' };
    if (data === UNKNOWN) return { kind: 'unknown' };
    return { kind: 'key', state: JSON.parse(data) as KeyState };
  }

  /** Stores a record read from Postgres, unless Redis already knows a newer version. */
  fill(hash: string, state: KeyState): Promise<number> {
    return this.redis.keywardFill(this.names.entry(hash), state.version, JSON.stringify(state), this.ttl.keyMs);
  }

  /** Remembers for a short time that no key has this hash (version 0: any real version wins). */
  fillUnknown(hash: string): Promise<number> {
    return this.redis.keywardFill(this.names.entry(hash), 0, UNKNOWN, this.ttl.unknownMs);
  }

  /** Marks entries older than `version` stale (outbox relay, where the new record is not at hand). */
  tombstone(hash: string, version: number): Promise<number> {
    return this.redis.keywardFill(this.names.entry(hash), version, '', this.ttl.keyMs);
  }

  /** Writes a changed record through, publishes `message`, returns subscribers reached and live members. */
  async announce(hash: string, state: KeyState, message: string): Promise<{ receivers: number; members: string[] }> {
    const [receivers, members] = await this.redis.keywardAnnounce(
      this.names.entry(hash),
      this.names.members,
      state.version,
      JSON.stringify(state),
      this.ttl.keyMs,
      this.names.invalidations,
      message,
    );
    return { receivers, members };
  }

  renewMembership(instanceId: string, leaseMs: number): Promise<number> {
    return this.redis.keywardRenew(this.names.members, instanceId, leaseMs);
  }

  async leaveMembership(instanceId: string): Promise<void> {
    await this.redis.zrem(this.names.members, instanceId);
  }

  publish(channel: string, message: string): Promise<number> {
    return this.redis.publish(channel, message);
  }
}
