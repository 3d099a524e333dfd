import { randomUUID } from 'node:crypto';
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
 * Tombstones have a script of their own (TOMBSTONE_SCRIPT).
 * KEYS[1] entry; ARGV: version, data (sealed), ttl ms.
 */
const FILL_SCRIPT = `
local current = tonumber(redis.call('HGET', KEYS[1], 'v'))
local version = tonumber(ARGV[1])
if current and current > version then return 0 end
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
 * The write witness (see WriteWitness), as a Lua prelude: raises the
 * instance's counter at KEYS[w] to ARGV[w] (never lowers it: a script resent
 * after NOSCRIPT may run after a later one) and answers what it held before
 * ("" for nothing).
 */
const WITNESS_LUA = `
local function witness(key, value, ttl)
  local seen = redis.call('GET', key)
  if not seen or tonumber(seen) < tonumber(value) then redis.call('SET', key, value, 'PX', ttl)
  else redis.call('PEXPIRE', key, ttl) end
  return seen or ''
end`;

/**
 * A tombstone (outbox relay, repair): written over older versions only, never
 * over data of its own version (the written-through record it marks), and
 * witnessed, so that a Redis that lost it is noticed as one that lost an
 * announcement is.
 * KEYS[1] entry, KEYS[2] witness; ARGV: version, data (sealed), ttl ms, witness value, witness ttl ms.
 * Answers {1 if written else 0, what the witness held}.
 */
const TOMBSTONE_SCRIPT = `${WITNESS_LUA}
local seen = witness(KEYS[2], ARGV[4], ARGV[5])
local current = tonumber(redis.call('HGET', KEYS[1], 'v'))
if current and current >= tonumber(ARGV[1]) then return {0, seen} end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, seen}`;

/**
 * An admin change, in one round trip: write the new record through (as
 * FILL_SCRIPT does), announce it on the channel, and list the members whose
 * lease is live at this moment, by Redis's clock; the write is witnessed.
 * KEYS[1] entry, KEYS[2] members, KEYS[3] witness; ARGV: version, data, ttl ms, channel, message, witness value, witness ttl ms.
 */
const ANNOUNCE_SCRIPT = `${WITNESS_LUA}
local seen = witness(KEYS[3], ARGV[6], ARGV[7])
local current = tonumber(redis.call('HGET', KEYS[1], 'v'))
local version = tonumber(ARGV[1])
if not current or current < version or (current == version and ARGV[2] ~= '') then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
local receivers = redis.call('PUBLISH', ARGV[4], ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {receivers, redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf'), seen}`;

/**
 * Renews this instance's membership: live until Redis's now + ARGV[2] ms.
 * The member string carries the instance's lease (see memberOf), so the lease
 * is published with the membership in one write and can never be found
 * without it. Also forgets members dead for a minute, and returns every
 * member left (live or not): announcers remember their leases. Witnessed,
 * so that a Redis that lost writes is noticed within a renewal.
 * KEYS[1] members, KEYS[2] witness; ARGV: member, ttl ms, witness value, witness ttl ms.
 * Answers {members, what the witness held}.
 */
const RENEW_SCRIPT = `${WITNESS_LUA}
local seen = witness(KEYS[2], ARGV[3], ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
return {redis.call('ZRANGE', KEYS[1], 0, -1), seen}`;

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

interface ScriptCommands {
  keywardFill(entry: string, version: number, data: string, ttlMs: number): Promise<number>;
  keywardDiscard(entry: string, version: string, data: string): Promise<number>;
  keywardTombstone(entry: string, witness: string, version: number, data: string, ttlMs: number, witnessValue: number, witnessTtlMs: number): Promise<[number, string]>;
  keywardAnnounce(
    entry: string,
    members: string,
    witness: string,
    version: number,
    data: string,
    ttlMs: number,
    channel: string,
    message: string,
    witnessValue: number,
    witnessTtlMs: number,
  ): Promise<[number, string[], string]>;
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
  witness(tierId: string): string {
    return `${this.prefix}witness:${tierId}`;
  }
}

/** What a witnessed write found: Redis held less than this instance had written (see WriteWitness). */
export interface DataLoss {
  /** The highest value this instance had seen written (its write answered). */
  readonly expected: number;
  /** What Redis held instead: an older value, or null when the witness was gone (flushed, restored from before it existed). */
  readonly found: number | null;
}

/** How long a witness outlives its instance's last witnessed write (every quarter lease while subscribed). */
const WITNESS_TTL_MS = 600_000;

/**
 * Notices a Redis that lost writes without dropping connections: a restore
 * from an older snapshot behind a proxy that keeps client connections, a
 * failover to a lagging replica behind one, FLUSHALL, DEBUG RELOAD. Each
 * instance owns a counter `<prefix>witness:<id>`; every membership renewal
 * and every announcement raises it, in the same script (no extra round trip),
 * and reads what it held. Commands on one connection run in order, so a
 * witnessed write must find at least the highest value whose write was
 * answered on this connection; finding less (or nothing) means Redis lost
 * that write, and whatever else was written with or after it. A write lost
 * before it was answered is not counted on (its caller already treats it as
 * failed). Forgotten when the connection closes: a Redis restart drops the
 * subscription too, which already costs the caches their trust and repairs
 * Redis; only a loss behind a live connection needs this.
 */
export class WriteWitness {
  readonly id = randomUUID();
  private next = 0;
  private confirmed: number | undefined;

  /** The value the next witnessed write raises the counter to. */
  take(): number {
    return ++this.next;
  }

  /** A witnessed write of `value` was answered with what the counter held; answers the loss, if any. */
  answered(value: number, seen: string): DataLoss | undefined {
    const found = seen === '' ? null : Number(seen);
    const expected = this.confirmed;
    this.confirmed = Math.max(this.confirmed ?? 0, value);
    if (expected === undefined || (found !== null && found >= expected)) return undefined;
    return { expected, found };
  }

  /** The connection closed: what it wrote proves nothing about what the next one finds. */
  reset(): void {
    this.confirmed = undefined;
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
  private readonly witness = new WriteWitness();
  private readonly witnessKey: string;
  private readonly dataLossListeners: Array<(loss: DataLoss) => void> = [];

  constructor(
    redis: Redis,
    readonly names: RedisNames,
    private readonly ttl: { readonly keyMs: number; readonly unknownMs: number },
    private readonly seal: EntrySeal,
  ) {
    redis.defineCommand('keywardFill', { numberOfKeys: 1, lua: FILL_SCRIPT });
    redis.defineCommand('keywardDiscard', { numberOfKeys: 1, lua: DISCARD_SCRIPT });
    redis.defineCommand('keywardTombstone', { numberOfKeys: 2, lua: TOMBSTONE_SCRIPT });
    redis.defineCommand('keywardAnnounce', { numberOfKeys: 3, lua: ANNOUNCE_SCRIPT });
    this.redis = redis as Redis & ScriptCommands;
    this.witnessKey = names.witness(this.witness.id);
    redis.on('close', () => this.witness.reset());
  }

  /** Calls `listener` whenever a witnessed write finds that Redis lost writes (see WriteWitness). */
  onDataLoss(listener: (loss: DataLoss) => void): void {
    this.dataLossListeners.push(listener);
  }

  private witnessed(value: number, seen: string): void {
    const loss = this.witness.answered(value, seen);
    if (loss !== undefined) for (const listener of this.dataLossListeners) listener(loss);
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
    return { kind: 'key', state: JSON.parse(opened.payload) as KeyState };
  }

  /** Deletes a rejected entry if it still holds what was read (see DISCARD_SCRIPT), so that the next fill can write. */
  discard(hash: string, entry: { readonly version: string | null; readonly data: string | null }): Promise<number> {
    return this.redis.keywardDiscard(this.names.entry(hash), entry.version ?? '', entry.data ?? '');
  }

  /** Stores a record read from Postgres, unless Redis already knows a newer version. */
  fill(hash: string, state: KeyState): Promise<number> {
    return this.write(hash, state.version, JSON.stringify(state), this.ttl.keyMs);
  }

  /** Remembers for a short time that no key has this hash (version 0: any real version wins). */
  fillUnknown(hash: string): Promise<number> {
    return this.write(hash, 0, UNKNOWN, this.ttl.unknownMs);
  }

  /** Marks entries older than `version` stale (outbox relay, where the new record is not at hand). */
  async tombstone(hash: string, version: number): Promise<number> {
    const value = this.witness.take();
    const sealed = this.seal.seal(hash, version, TOMBSTONE, this.ttl.keyMs, Date.now());
    const [written, seen] = await this.redis.keywardTombstone(this.names.entry(hash), this.witnessKey, version, sealed, this.ttl.keyMs, value, WITNESS_TTL_MS);
    this.witnessed(value, seen);
    return written;
  }

  private write(hash: string, version: number, payload: string, ttlMs: number): Promise<number> {
    return this.redis.keywardFill(this.names.entry(hash), version, this.seal.seal(hash, version, payload, ttlMs, Date.now()), ttlMs);
  }

  /** Writes a changed record through, publishes `message`, returns subscribers reached and live members. */
  async announce(hash: string, state: KeyState, message: string): Promise<{ receivers: number; members: Member[] }> {
    const value = this.witness.take();
    const [receivers, members, seen] = await this.redis.keywardAnnounce(
      this.names.entry(hash),
      this.names.members,
      this.witnessKey,
      state.version,
      this.seal.seal(hash, state.version, JSON.stringify(state), this.ttl.keyMs, Date.now()),
      this.ttl.keyMs,
      this.names.invalidations,
      message,
      value,
      WITNESS_TTL_MS,
    );
    this.witnessed(value, seen);
    return { receivers, members: members.map(parseMember) };
  }

  /**
   * Renews `member` (see memberOf) for `ttlMs` by Redis's clock; resolves with
   * every member listed. Its time limit is `timeoutMs`, not the connection's
   * command timeout: a renewal answered late still proves what it wrote.
   */
  async renewMembership(member: string, ttlMs: number, timeoutMs: number): Promise<Member[]> {
    const value = this.witness.take();
    const command = new Command('eval', [RENEW_SCRIPT, 2, this.names.members, this.witnessKey, member, ttlMs, value, WITNESS_TTL_MS], { replyEncoding: 'utf8' });
    command.setTimeout(timeoutMs);
    const [members, seen] = (await this.redis.sendCommand(command)) as [string[], string];
    this.witnessed(value, seen);
    return members.map(parseMember);
  }

  async leaveMembership(member: string): Promise<void> {
    await this.redis.zrem(this.names.members, member);
  }

  publish(channel: string, message: string): Promise<number> {
    return this.redis.publish(channel, message);
  }
}
