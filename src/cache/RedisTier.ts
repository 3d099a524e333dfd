import { Cluster, Command, type Redis } from 'ioredis';
import type { KeyState } from '../keys/VerifiableKey';
import { SLOT_COUNT, keySlot, tagForSlot } from './clusterSlots';
import type { EntryRejection, EntrySeal } from './EntrySeal';
import type { CommandClient } from './redisClients';

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
 * ANNOUNCE_SCRIPT's second half, on a Redis Cluster (README, "Redis
 * Cluster"): the entry lives in its own slot, and a script may only touch
 * keys (and shard channels) of one slot, so the write-through is a FILL
 * first, and this script runs next on the master of the control slot:
 * publishes on the shard channel (SPUBLISH: delivered by that master alone,
 * to the subscribers connected to it, in order with their PINGs) and lists
 * the live members.
 * KEYS[1] members; ARGV: channel, message (the channel in KEYS[1]'s slot).
 */
const CLUSTER_ANNOUNCE_SCRIPT = `
local receivers = redis.call('SPUBLISH', ARGV[1], ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {receivers, redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')}`;

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

/**
 * RENEW_SCRIPT on a Redis Cluster, also answering the server's `INFO server`:
 * InvalidationBus counts a renewal as proof only when it ran on the server
 * its subscription is on (a renewal routed to a new master while the
 * subscriber still hears an old one proves nothing about what it hears).
 */
const CLUSTER_RENEW_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
return {redis.call('ZRANGE', KEYS[1], 0, -1), redis.call('INFO', 'server')}`;

/** An entry of `<prefix>members` (`<prefix>{ctl}members` on a cluster): an instance, and the lease it trusts its caches for (unknown for entries of older releases). */
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
 * The write witness of one instance (RedisServerWatch): KEYS[1] its witness
 * (on a cluster, one per master);
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
  keywardClusterAnnounce(members: string, channel: string, message: string): Promise<[number, string[]]>;
}

/** The run_id line of an `INFO server` answer. */
export function runIdOf(info: string): string | undefined {
  return /^run_id:(\w+)/m.exec(info)?.[1];
}

/**
 * Names of everything keyward keeps in Redis, under the configured prefix.
 *
 * On one Redis: `<prefix>key:<sha256>` (entries), `<prefix>members`,
 * `<prefix>invalidations` (channel), `<prefix>acks:<instance>` (channels),
 * `<prefix>witness:<instance>`. These names are what instances of different
 * releases share: never rename them.
 *
 * On a Redis Cluster (`cluster`): entries keep their name, without a hash tag,
 * so that they spread over every master; the control names share the hash
 * tag `{ctl}`, so one slot, one master: `<prefix>{ctl}members`,
 * `<prefix>{ctl}invalidations` and `<prefix>{ctl}acks:<instance>` (shard
 * channels), because the announcement lists the members and publishes in one
 * script, and a PING on the subscriber connection must follow the messages
 * it proves; the write witnesses are one per master,
 * `<prefix>{<tag>}witness:<instance>`, the tag chosen to land in a slot that
 * master serves (see clusterSlots.ts).
 */
export class RedisNames {
  readonly members: string;
  readonly invalidations: string;
  /** The slot of the control names (cluster only: -1 on one Redis). */
  readonly controlSlot: number;
  constructor(
    readonly prefix: string,
    readonly cluster = false,
  ) {
    const control = cluster ? `${prefix}{ctl}` : prefix;
    this.members = `${control}members`;
    this.invalidations = `${control}invalidations`;
    this.controlSlot = cluster ? keySlot(this.members) : -1;
  }
  entry(hash: string): string {
    return `${this.prefix}key:${hash}`;
  }
  acks(instanceId: string): string {
    return this.cluster ? `${this.prefix}{ctl}acks:${instanceId}` : `${this.prefix}acks:${instanceId}`;
  }
  /** The instance's witness on one Redis. */
  witness(instanceId: string): string {
    return `${this.prefix}witness:${instanceId}`;
  }
  /** The instance's witness in `slot` (cluster). */
  witnessIn(slot: number, instanceId: string): string {
    return `${this.prefix}{${tagForSlot(slot)}}witness:${instanceId}`;
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
  private readonly redis: CommandClient & ScriptCommands;
  private readonly cluster: Cluster | undefined;

  /** `redis` a Cluster exactly when `names.cluster`. */
  constructor(
    redis: CommandClient,
    readonly names: RedisNames,
    private readonly ttl: { readonly keyMs: number; readonly unknownMs: number },
    private readonly seal: EntrySeal,
  ) {
    if ((redis instanceof Cluster) !== names.cluster) throw new Error('RedisTier: a Cluster client needs cluster names, and only it');
    redis.defineCommand('keywardFill', { numberOfKeys: 1, lua: FILL_SCRIPT });
    redis.defineCommand('keywardDiscard', { numberOfKeys: 1, lua: DISCARD_SCRIPT });
    redis.defineCommand('keywardAnnounce', { numberOfKeys: 2, lua: ANNOUNCE_SCRIPT });
    redis.defineCommand('keywardClusterAnnounce', { numberOfKeys: 1, lua: CLUSTER_ANNOUNCE_SCRIPT });
    this.redis = redis as CommandClient & ScriptCommands;
    this.cluster = redis instanceof Cluster ? redis : undefined;
  }

  get ready(): boolean {
    return this.redis.status === 'ready';
  }

  /**
   * Calls `listener` whenever the command connection closes; on a cluster,
   * when every connection closed, or the one to the master that served the
   * control slot (where the membership is).
   */
  onClose(listener: () => void): void {
    this.redis.on('close', listener);
    const cluster = this.cluster;
    if (cluster !== undefined) {
      cluster.on('-node', (_node: Redis, key: string) => {
        if (cluster.slots[this.names.controlSlot]?.[0] === key) listener();
      });
    }
  }

  /**
   * Whether the witness expectations end with the connection (one Redis: a
   * restart drops the subscription too). Not on a cluster: a master that
   * restarts or fails over is seldom the one the subscription is on, and its
   * new run_id must still be noticed on the next connection.
   */
  get witnessesEndWithConnection(): boolean {
    return this.cluster === undefined;
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
    const data = this.seal.seal(hash, state.version, JSON.stringify(state), this.ttl.keyMs, Date.now());
    if (this.cluster === undefined) {
      const [receivers, members] = await this.redis.keywardAnnounce(
        this.names.entry(hash),
        this.names.members,
        state.version,
        data,
        this.ttl.keyMs,
        this.names.invalidations,
        message,
      );
      return { receivers, members: members.map(parseMember) };
    }
    // On a cluster the entry's slot is not the control slot: two steps, the
    // write-through first. An instance that hears the change drops its copy
    // and may read Redis at once: it then finds the new version (had the
    // message gone first, it would find the old one, refused by the version
    // floor the message left, and read PostgreSQL: safe, but slower). The
    // same compare-and-set as ANNOUNCE_SCRIPT's (FILL with a record: never
    // over a newer version). If the write-through fails, nothing is
    // published and the announcement fails as a whole, as the one script
    // would: the change stays undelivered in the outbox, so every instance
    // relays its tombstone once overdue, and the caller waits out the lease.
    await this.redis.keywardFill(this.names.entry(hash), state.version, data, this.ttl.keyMs, '0');
    const [receivers, members] = await this.redis.keywardClusterAnnounce(this.names.members, this.names.invalidations, message);
    return { receivers, members: members.map(parseMember) };
  }

  /**
   * Renews `member` (see memberOf) for `ttlMs` by Redis's clock; resolves with
   * every member listed. Its time limit is `timeoutMs`, not the connection's
   * command timeout: a renewal answered late still proves what it wrote.
   */
  async renewMembership(member: string, ttlMs: number, timeoutMs: number): Promise<{ members: Member[]; runId: string | undefined }> {
    const script = this.cluster === undefined ? RENEW_SCRIPT : CLUSTER_RENEW_SCRIPT;
    const command = new Command('eval', [script, 1, this.names.members, member, ttlMs], { replyEncoding: 'utf8' });
    command.setTimeout(timeoutMs);
    const reply = await this.redis.sendCommand(command);
    if (this.cluster === undefined) return { members: (reply as string[]).map(parseMember), runId: undefined };
    const [members, info] = reply as [string[], string];
    return { members: members.map(parseMember), runId: runIdOf(info) };
  }

  /**
   * The witness keys of this instance: one on one Redis; on a cluster one per
   * master, in the first slot it serves by the cluster client's table (empty
   * until it has one).
   */
  witnessKeys(instanceId: string): string[] {
    if (this.cluster === undefined) return [this.names.witness(instanceId)];
    const seen = new Set<string>();
    const keys: string[] = [];
    const slots = this.cluster.slots;
    for (let slot = 0; slot < SLOT_COUNT; slot++) {
      const master = slots[slot]?.[0];
      if (master === undefined || seen.has(master)) continue;
      seen.add(master);
      keys.push(this.names.witnessIn(slot, instanceId));
    }
    return keys;
  }

  /**
   * Replaces the witness `key` (from witnessKeys) with `value` (TTL `ttlMs`);
   * resolves with the value replaced (null if none) and the server's run_id.
   * Time limit `timeoutMs`, like renewMembership.
   */
  async witness(key: string, value: string, ttlMs: number, timeoutMs: number): Promise<{ previous: string | null; runId: string | undefined }> {
    const command = new Command('eval', [WITNESS_SCRIPT, 1, key, value, ttlMs], { replyEncoding: 'utf8' });
    command.setTimeout(timeoutMs);
    const [previous, info] = (await this.redis.sendCommand(command)) as [string | null, string];
    return { previous: previous ?? null, runId: runIdOf(info) };
  }

  /** The server's eviction policy (INFO memory; on a cluster the first master's that is not noeviction), or undefined if none says. */
  async evictionPolicy(): Promise<string | undefined> {
    const servers = this.cluster === undefined ? [this.redis as Redis] : this.cluster.nodes('master');
    const policies = await Promise.all(servers.map(async (server) => /^maxmemory_policy:(\S+)/m.exec(await server.info('memory'))?.[1]));
    return policies.find((policy) => policy !== undefined && policy !== 'noeviction') ?? policies.find((policy) => policy !== undefined);
  }

  async leaveMembership(member: string): Promise<void> {
    await this.redis.zrem(this.names.members, member);
  }

  /** Publishes on `channel` (on a cluster a shard channel: SPUBLISH). */
  publish(channel: string, message: string): Promise<number> {
    return this.cluster === undefined ? this.redis.publish(channel, message) : (this.cluster.spublish(channel, message) as Promise<number>);
  }
}
