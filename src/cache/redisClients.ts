import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { controlSlotConnector, parseNodeAddress } from './ControlSlotConnector';
import type { Durations } from './durations';

/** The command side: one Redis, or a Redis Cluster (REDIS_CLUSTER_NODES). */
export type CommandClient = Redis | Cluster;

type ClientDurations = Pick<Durations, 'redisCommandTimeoutMs' | 'redisConnectTimeoutMs' | 'redisSocketTimeoutMs'>;

/** Options of every connection: fail fast while disconnected, RESP2, time-limited. */
function connectionOptions(durations: ClientDurations): RedisOptions {
  return {
    protocol: 2,
    commandTimeout: durations.redisCommandTimeoutMs,
    connectTimeout: durations.redisConnectTimeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    autoResubscribe: false,
    autoResendUnfulfilledCommands: false,
    retryStrategy: (attempt) => Math.min(50 * attempt, 1_000),
    disableClientInfo: true,
    keepAlive: 10_000,
    // Heartbeats keep both connections busy every quarter lease: silence this
    // long means a dead peer that TCP has not noticed yet; reconnect.
    socketTimeout: durations.redisSocketTimeoutMs,
  };
}

/** Logs a client's errors once per outage (never thrown: an idle connection dying must not crash the process). */
function watch<T extends CommandClient>(client: T, role: string, logger: Logger): T {
  let failing = false;
  client.on('error', (error: Error) => {
    if (!failing) logger.warn({ event: 'redis-error', role, err: error }, 'redis connection failed; retrying');
    failing = true;
  });
  client.on('ready', () => {
    if (failing) logger.info({ event: 'redis-ready', role }, 'redis connection back');
    failing = false;
  });
  return client;
}

/**
 * The two Redis connections of an instance: one for commands (cache reads,
 * fills, announcements, acknowledgements, membership) and one subscriber.
 * Both fail fast while disconnected (no offline queue, no retries: Verify
 * falls back to Postgres) and reconnect forever. RESP2 is used on purpose:
 * its subscriber mode is the long-proven path, and the lease relies on a
 * PING and the messages before it arriving in order on one connection.
 * An error is logged once per outage, never thrown.
 */
export function createRedisClients(url: string, durations: ClientDurations, logger: Logger): { command: Redis; subscriber: Redis } {
  const options = connectionOptions(durations);
  return {
    command: watch(new Redis(url, { ...options, connectionName: 'keyward' }), 'command', logger),
    subscriber: watch(new Redis(url, { ...options, connectionName: 'keyward-sub' }), 'subscriber', logger),
  };
}

/**
 * The same on a Redis Cluster (README, "Redis Cluster"): the command side is
 * an ioredis Cluster (one connection per master, routed by slot, masters
 * only, the same fail-fast options on every node connection and on the
 * cluster itself), and the subscriber is a plain connection to the master
 * that serves `controlSlot` (the slot of keyward's `{ctl}` hash tag), found
 * anew at every reconnection (controlSlotConnector), for sharded pub/sub
 * (SSUBSCRIBE): the invalidations are SPUBLISHed on that master and a PING on
 * that connection is answered after them, as on one Redis.
 *
 * Not ioredis's own sharded subscribers (`shardedSubscribers`): they offer no
 * way to send a PING on the connection that holds a channel (a PING on the
 * Cluster goes to some node's command connection), and they resubscribe
 * after a reconnection silently, where the lease needs to know that
 * messages may have been missed.
 */
export function createRedisClusterClients(
  nodes: readonly string[],
  controlSlot: number,
  durations: ClientDurations,
  logger: Logger,
): { command: Cluster; subscriber: Redis } {
  const { retryStrategy, enableOfflineQueue, ...nodeOptions } = connectionOptions(durations);
  const seeds = nodes.map(parseNodeAddress);
  const command = new Cluster(
    seeds.map(({ host, port }) => ({ host, port })),
    {
      redisOptions: { ...nodeOptions, connectionName: 'keyward' },
      enableOfflineQueue,
      clusterRetryStrategy: retryStrategy,
      scaleReads: 'master',
      slotsRefreshTimeout: durations.redisConnectTimeoutMs,
      // Also notices masters added or failed over while no command was redirected (the witness writes to every master).
      slotsRefreshInterval: 5_000,
    },
  );
  command.on('node error', (error: Error, node: string) => logger.debug({ err: error, node }, 'redis cluster node connection failed'));
  const subscriber = new Redis({
    ...nodeOptions,
    retryStrategy,
    enableOfflineQueue,
    connectionName: 'keyward-sub',
    Connector: controlSlotConnector(command, controlSlot, seeds, durations.redisConnectTimeoutMs),
  });
  return { command: watch(command, 'command', logger), subscriber: watch(subscriber, 'subscriber', logger) };
}

/** Closes a client for good: QUIT when it can, and no reconnecting either way. */
export async function closeRedis(client: CommandClient): Promise<void> {
  if (client.status === 'ready') await client.quit().catch(() => {});
  client.disconnect();
}
