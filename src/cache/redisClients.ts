import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { Durations } from './durations';

/**
 * The two Redis connections of an instance: one for commands (cache reads,
 * fills, announcements, acknowledgements, membership) and one subscriber.
 * Both fail fast while disconnected (no offline queue, no retries: Verify
 * falls back to Postgres) and reconnect forever. RESP2 is used on purpose:
 * its subscriber mode is the long-proven path, and the lease relies on a
 * PING and the messages before it arriving in order on one connection.
 * An error is logged once per outage, never thrown.
 */
export function createRedisClients(
  url: string,
  durations: Pick<Durations, 'redisCommandTimeoutMs' | 'redisConnectTimeoutMs' | 'redisSocketTimeoutMs'>,
  logger: Logger,
): { command: Redis; subscriber: Redis } {
  const options: RedisOptions = {
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
  const watch = (client: Redis, role: string): Redis => {
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
  };
  return {
    command: watch(new Redis(url, { ...options, connectionName: 'keyward' }), 'command'),
    subscriber: watch(new Redis(url, { ...options, connectionName: 'keyward-sub' }), 'subscriber'),
  };
}

/** Closes a client for good: QUIT when it can, and no reconnecting either way. */
export async function closeRedis(client: Redis): Promise<void> {
  if (client.status === 'ready') await client.quit().catch(() => {});
  client.disconnect();
}
