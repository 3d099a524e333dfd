import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config';
import type { Metrics } from '../metrics/Metrics';
import type { InvalidationOutbox } from '../store/InvalidationOutbox';
import type { KeyStore } from '../store/KeyStore';
import { CacheCounts, CacheTrust } from './CacheTrust';
import { ChangePropagator, PropagationCounts } from './ChangePropagator';
import type { EntrySeal } from './EntrySeal';
import { FillGuard } from './FillGuard';
import { InvalidationBus } from './InvalidationBus';
import type { KeyLookup } from './KeyLookup';
import { LocalCache } from './LocalCache';
import { RedisNames, RedisTier } from './RedisTier';
import { type CacheControl, type TierCounts, TieredLookup } from './TieredLookup';
import { deriveDurations } from './durations';
import { type CommandClient, createRedisClients, createRedisClusterClients } from './redisClients';

/** The Redis tier, the in-process tier and the machinery that keeps them coherent across instances. */
export function createCaches(
  config: Config,
  logger: Logger,
  store: KeyStore,
  outbox: InvalidationOutbox,
  /** The same outbox on a connection of its own: its reads decide whether the caches are trusted. */
  trustOutbox: InvalidationOutbox,
  tiers: TierCounts,
  metrics: Metrics,
  /** Authenticates the Redis entries (key from keyward.instance_secrets). */
  seal: EntrySeal,
): { lookup: KeyLookup; listener: ChangePropagator; trust: CacheTrust; clients: { command: CommandClient; subscriber: Redis } } {
  const { cache, db } = config;
  // Every duration below comes from one place, whose inequalities configureFromEnv checked.
  const durations = deriveDurations(config);
  // One Redis (REDIS_URL) or a Redis Cluster (REDIS_CLUSTER_NODES; README, "Redis Cluster"): other names, same protocol.
  const names = new RedisNames(config.redisPrefix, config.redisClusterNodes !== undefined);
  const clients =
    config.redisClusterNodes === undefined
      ? createRedisClients(config.redisUrl as string, durations, logger)
      : createRedisClusterClients(config.redisClusterNodes, names.controlSlot, durations, logger);
  const tier = new RedisTier(clients.command, names, { keyMs: cache.redisTtlMs, unknownMs: cache.negativeTtlMs }, seal);
  const local = cache.localEnabled
    ? new LocalCache({
        maxEntries: cache.maxEntries,
        maxBytes: cache.maxBytes,
        ttlMs: cache.ttlMs,
        negativeTtlMs: cache.negativeTtlMs,
      })
    : undefined;
  const bus = new InvalidationBus(clients.subscriber, tier, { leaseMs: cache.leaseMs, heartbeatTimeoutMs: durations.heartbeatTimeoutMs, membershipTtlMs: durations.membershipTtlMs }, logger);
  const cacheCounts = new CacheCounts();
  const guard = new FillGuard(durations.fillGuardRetentionMs, undefined, durations.heldFloorRetentionMs);
  // The trust is the lookup's gate (read on every Verify); the lookup is what the trust's parts drop entries from.
  const control: CacheControl = {
    drop: (hash, version, source, undelivered) => lookup.drop(hash, version, source, undelivered),
    clear: () => lookup.clear(),
    prune: () => lookup.prune(),
  };
  const trust = new CacheTrust(bus, trustOutbox, outbox, tier, control, durations, cache.leaseMs, cacheCounts, logger);
  const lookup = new TieredLookup(local, guard, tier, store, trust, tiers, logger, durations.redisSuspendMs);
  trust.start();
  const propagation = new PropagationCounts();
  const listener = new ChangePropagator(
    bus,
    lookup,
    outbox,
    { ackTimeoutMs: cache.ackTimeoutMs, leaseMs: cache.leaseMs, relayAfterMs: durations.relayAfterMs, markDeliveredDelayMs: durations.markDeliveredDelayMs, queryTimeoutMs: db.queryTimeoutMs },
    propagation,
    logger,
  );
  metrics.trackCache(cacheCounts, propagation, { trusted: () => trust.trusted, localEntries: () => local?.size ?? 0 });
  return { lookup, listener, trust, clients };
}
