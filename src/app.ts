import { mkdirSync } from 'node:fs';
import type { Server as HttpServer } from 'node:http';
import path from 'node:path';
import type { Server } from '@grpc/grpc-js';
import type { HealthImplementation } from 'grpc-health-check';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { Redis } from 'ioredis';
import { KeyAdmin, type KeyChangeListener } from './admin/KeyAdmin';
import type { CacheTrust } from './cache/CacheTrust';
import type { ChangePropagator } from './cache/ChangePropagator';
import { createCaches } from './cache/createCaches';
import type { KeyLookup } from './cache/KeyLookup';
import { PostgresLookup } from './cache/PostgresLookup';
import { TierCounts } from './cache/TieredLookup';
import { type CommandClient, closeRedis } from './cache/redisClients';
import { deriveDurations } from './cache/durations';
import { EntrySeal } from './cache/EntrySeal';
import { FillGuard } from './cache/FillGuard';
import { LocalCache } from './cache/LocalCache';
import { LocalLookup } from './cache/LocalLookup';
import { type AdminToken, type Config, DEFAULT_ADMIN_TOKEN_NAME } from './config';
import { DataDirLock } from './embedded/DataDirLock';
import { type EmbeddedPostgres, startEmbeddedPostgres } from './embedded/EmbeddedPostgres';
import { loadOrCreateAdminToken } from './embedded/generatedAdminToken';
import { createAdminService } from './grpc/adminService';
import { createAdminAuthFailureReporter, createAdminAuthenticator, createAdminTokenCheck, createTokenCheck } from './grpc/auth';
import { SERVICE_NAMES, bindServer, createGrpcServer, shutdownServer } from './grpc/server';
import { type ServerTls, startTls } from './grpc/tls';
import { createVerifierService } from './grpc/verifierService';
import { KeyFormat } from './keys/KeyFormat';
import { ScopeCatalog } from './keys/scopes';
import { Metrics } from './metrics/Metrics';
import { startMetricsServer } from './metrics/metricsServer';
import { packageRoot } from './packageRoot';
import { InvalidationOutbox } from './store/InvalidationOutbox';
import { MAC_SECRET_NAME, readInstanceSecret } from './store/instanceSecrets';
import { KeyStore } from './store/KeyStore';
import { UsageStore } from './store/UsageStore';
import { UsageCounts, UsageRecorder } from './usage/UsageRecorder';
import { DedicatedConnection, EMBEDDED_POOL_SIZE, createPool, poolRunner, poolSizes } from './store/db';
import { migrate } from './store/migrate';
import { Verifier } from './verify/Verifier';

export interface StartedApp {
  /** The bound gRPC port (useful with port 0). */
  readonly port: number;
  /** The bound metrics port, when KEYWARD_METRICS_ADDR is set. */
  readonly metricsPort: number | undefined;
}

export interface App {
  /** Migrates (unless disabled), listens, reports SERVING. Safe to call twice. */
  start(): Promise<StartedApp>;
  /** Stops accepting calls, drains, closes pools. Safe to call twice; never rejects. */
  stop(): Promise<void>;
  /**
   * Reads the TLS files again (SIGHUP): new connections get the new
   * certificates; unusable files keep the current ones. Never rejects.
   */
  reloadCertificates(): Promise<void>;
}

/**
 * The composition root: one pool, one server, each part built with what it
 * needs. Nothing connects or listens until `start`.
 */
export function createApp(config: Config, logger: Logger): App {
  let pool: pg.Pool | undefined;
  let verifyPool: pg.Pool | undefined;
  let grpc: { server: Server; health: HealthImplementation } | undefined;
  let metricsHttp: HttpServer | undefined;
  let redis: { command: CommandClient; subscriber: Redis } | undefined;
  let outboxConnection: DedicatedConnection | undefined;
  let trust: CacheTrust | undefined;
  let propagator: ChangePropagator | undefined;
  let pruneTimer: NodeJS.Timeout | undefined;
  let usage: UsageRecorder | undefined;
  let tls: ServerTls | undefined;
  let starting: Promise<StartedApp> | undefined;
  let stopping: Promise<void> | undefined;
  let dataDirLock: DataDirLock | undefined;
  let embedded: EmbeddedPostgres | undefined;

  const start = async (): Promise<StartedApp> => {
    const startedAt = Date.now();
    // Unusable certificate files fail the start before anything connects.
    if (config.tls !== undefined) tls = await startTls(config.tls, logger);
    let adminTokens = config.adminTokens;
    let embeddedLog: Record<string, unknown> = {};
    if (config.databaseUrl === undefined) {
      // Embedded mode (README, "Embedded mode"): lock the data directory, then start PGlite on it.
      const dataDir = path.resolve(config.dataDir);
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      dataDirLock = DataDirLock.acquire(dataDir);
      if (adminTokens.length === 0) adminTokens = [useGeneratedAdminToken(dataDir, logger)];
      const embeddedAt = Date.now();
      embedded = await startEmbeddedPostgres(dataDir);
      embeddedLog = { database: 'embedded, single instance', dataDir, pgdata: embedded.pgdata, embeddedStartMs: Date.now() - embeddedAt };
      // One connection in total, for every role (EMBEDDED_POOL_SIZE says why).
      pool = createPool(config, logger, 'main', { connectionString: embedded.connectionString, max: EMBEDDED_POOL_SIZE });
      verifyPool = pool;
    } else {
      pool = createPool(config, logger);
      verifyPool = createPool(config, logger, 'verify');
    }
    if (config.migrateOnStart) {
      const migratedAt = Date.now();
      await migrate(pool, path.join(packageRoot(), 'migrations'), logger);
      if (embedded !== undefined) embeddedLog = { ...embeddedLog, migrateMs: Date.now() - migratedAt };
    }

    const metrics = new Metrics();
    const store = new KeyStore(
      pool,
      verifyPool,
      { verifyMs: config.db.verifyTimeoutMs, queryMs: config.db.queryTimeoutMs },
      embedded === undefined ? poolSizes(config.db.poolMax).verify : EMBEDDED_POOL_SIZE,
    );
    const outbox = new InvalidationOutbox(poolRunner(pool));
    const format = new KeyFormat(config.livePrefix, config.testPrefix);
    const catalog = new ScopeCatalog(config.scopes);
    const tiers = new TierCounts();
    metrics.trackTiers(tiers);
    let lookup: KeyLookup;
    let listener: KeyChangeListener = { keyChanged: async () => {} };
    if (config.redisUrl === undefined && config.redisClusterNodes === undefined) {
      if (embedded !== undefined && config.cache.localEnabled) {
        // One process holds the data (the directory is locked): every change passes through this
        // process's KeyAdmin, which drops the cached copy before the call returns.
        const inProcess = new LocalLookup(new LocalCache(config.cache), new FillGuard(inProcessFloorRetentionMs(config)), store, tiers);
        lookup = inProcess;
        listener = inProcess;
      } else {
        // No bus to hear other instances' changes: no cache at all (README, "Caching and revocation").
        lookup = new PostgresLookup(store, tiers);
      }
      const prune = (): void => {
        outbox.prune(outboxRetentionMs(config), config.db.queryTimeoutMs).catch(() => {});
      };
      pruneTimer = setInterval(prune, 60_000);
      pruneTimer.unref();
    } else {
      // Read before serving: every Redis entry is sealed and checked with it (README, "Caching and revocation").
      const seal = new EntrySeal(await readInstanceSecret(poolRunner(pool), MAC_SECRET_NAME, config.db.queryTimeoutMs));
      // Embedded: the outbox reads share the one connection (EMBEDDED_POOL_SIZE); otherwise they get one of their own.
      let outboxRunner = poolRunner(pool);
      if (config.databaseUrl !== undefined) {
        outboxConnection = new DedicatedConnection(config.databaseUrl, logger);
        outboxRunner = outboxConnection.run;
      }
      ({ lookup, listener: propagator, trust, clients: redis } = createCaches(config, logger, store, outbox, new InvalidationOutbox(outboxRunner), tiers, metrics, seal));
      listener = propagator;
    }
    const admin = new KeyAdmin(store, format, catalog, listener);
    if (config.usage.enabled) {
      const usageCounts = new UsageCounts();
      usage = new UsageRecorder(new UsageStore(pool), { ...config.usage, queryTimeoutMs: config.db.queryTimeoutMs }, usageCounts, logger);
      const recorder = usage;
      metrics.trackUsage(usageCounts, () => recorder.pendingKeys);
      usage.start();
    }
    const verifier = new Verifier(format, catalog, lookup, usage, metrics.countVerdict);

    grpc = createGrpcServer(
      createAdminService(
        admin,
        createAdminAuthenticator(createAdminTokenCheck(adminTokens), createAdminAuthFailureReporter(logger, metrics.countAdminAuthFailure)),
        logger,
        metrics.observeAdminCall,
      ),
      createVerifierService(verifier, config.verifierToken === undefined ? undefined : createTokenCheck(config.verifierToken), logger),
    );
    let metricsPort: number | undefined;
    if (config.metricsAddr !== undefined) {
      const started = await startMetricsServer(metrics.registry, config.metricsAddr);
      metricsHttp = started.server;
      metricsPort = started.port;
    }
    const port = await bindServer(grpc.server, config.addr, tls?.credentials);
    for (const name of ['', ...SERVICE_NAMES]) grpc.health.setStatus(name, 'SERVING');
    const transport = config.tls === undefined ? 'plaintext' : config.tls.clientCaFile === undefined ? 'tls' : 'mtls';
    logger.info({ event: 'start', addr: config.addr, port, metricsPort, transport, ...embeddedLog, ms: Date.now() - startedAt }, 'keyward started');
    return { port, metricsPort };
  };

  const stop = async (): Promise<void> => {
    const stoppedAt = Date.now();
    if (grpc !== undefined) {
      for (const name of ['', ...SERVICE_NAMES]) grpc.health.setStatus(name, 'NOT_SERVING');
      const how = await shutdownServer(grpc.server, config.shutdownTimeoutMs);
      if (how === 'forced') logger.warn({ timeoutMs: config.shutdownTimeoutMs }, 'calls still in flight at the shutdown timeout were cancelled');
    }
    tls?.stop();
    // Every use counted so far is written before the pool closes (retried until the shutdown timeout).
    await usage?.stop(Date.now() + config.shutdownTimeoutMs);
    clearInterval(pruneTimer);
    await propagator?.flush();
    await trust?.stop();
    if (redis !== undefined) await Promise.all([closeRedis(redis.command), closeRedis(redis.subscriber)]);
    await outboxConnection?.close();
    if (metricsHttp !== undefined) {
      const server = metricsHttp;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    }
    for (const opened of new Set([verifyPool, pool])) {
      if (opened !== undefined) await opened.end().catch((error: unknown) => logger.warn({ err: error }, 'closing a postgres pool failed'));
    }
    // After the pools: PGlite closes with a checkpoint, so the next start finds consistent files; then the lock goes.
    await embedded?.stop().catch((error: unknown) => logger.warn({ err: error }, 'stopping the embedded PostgreSQL failed'));
    dataDirLock?.release();
    logger.info({ event: 'stop', ms: Date.now() - stoppedAt }, 'keyward stopped');
  };

  return {
    start: () => (starting ??= start()),
    stop: () =>
      (stopping ??= (starting ?? Promise.resolve())
        .catch(() => undefined)
        .then(stop)
        .catch((error: unknown) => logger.error({ err: error }, 'stop failed'))),
    reloadCertificates: async () => {
      // A SIGHUP during the start reloads once the first certificates are in.
      await starting?.catch(() => undefined);
      if (tls === undefined) logger.info({ event: 'tls-unchanged' }, 'TLS is not configured: no certificates to reload');
      else await tls.reload('signal');
    },
  };
}

/**
 * How long the in-process-only cache keeps a change's version floor: longer
 * than any lookup that may have read the old row (a Verify lookup is answered
 * or failed within KEYWARD_DB_VERIFY_TIMEOUT_MS), twice over.
 */
function inProcessFloorRetentionMs(config: Config): number {
  return 2 * config.db.verifyTimeoutMs + 1_000;
}

/**
 * The admin token of an embedded keyward configured without one: the file's,
 * or a new one (README, "Embedded mode"). The token is printed when it is
 * made, the one time; later starts print only where it is kept.
 */
function useGeneratedAdminToken(dataDir: string, logger: Logger): AdminToken {
  const generated = loadOrCreateAdminToken(dataDir);
  if (generated.created) {
    logger.warn(
      { event: 'admin-token', file: generated.file, name: DEFAULT_ADMIN_TOKEN_NAME },
      `no admin token configured: generated one, kept in ${generated.file} (mode 0600), printed only this once: ${generated.token}`,
    );
  } else {
    logger.info({ event: 'admin-token', file: generated.file, name: DEFAULT_ADMIN_TOKEN_NAME }, `no admin token configured: using the one kept in ${generated.file}`);
  }
  return { name: DEFAULT_ADMIN_TOKEN_NAME, token: generated.token };
}

/** Outbox rows older than this concern no Redis entry any more: all have expired (Durations.outboxRetentionMs). */
function outboxRetentionMs(config: Config): number {
  return deriveDurations(config).outboxRetentionMs;
}
