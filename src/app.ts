import type { Server as HttpServer } from 'node:http';
import path from 'node:path';
import type { Server } from '@grpc/grpc-js';
import type { HealthImplementation } from 'grpc-health-check';
import type pg from 'pg';
import type { Logger } from 'pino';
import { KeyAdmin } from './admin/KeyAdmin';
import { PostgresLookup } from './cache/PostgresLookup';
import type { Config } from './config';
import { createAdminService } from './grpc/adminService';
import { createTokenCheck } from './grpc/auth';
import { SERVICE_NAMES, bindServer, createGrpcServer, shutdownServer } from './grpc/server';
import { createVerifierService } from './grpc/verifierService';
import { KeyFormat } from './keys/KeyFormat';
import { ScopeCatalog } from './keys/scopes';
import { Metrics } from './metrics/Metrics';
import { startMetricsServer } from './metrics/metricsServer';
import { packageRoot } from './packageRoot';
import { KeyStore } from './store/KeyStore';
import { createPool } from './store/db';
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
}

/**
 * The composition root: one pool, one server, each part built with what it
 * needs. Nothing connects or listens until `start`.
 */
export function createApp(config: Config, logger: Logger): App {
  let pool: pg.Pool | undefined;
  let grpc: { server: Server; health: HealthImplementation } | undefined;
  let metricsHttp: HttpServer | undefined;
  let starting: Promise<StartedApp> | undefined;
  let stopping: Promise<void> | undefined;

  const start = async (): Promise<StartedApp> => {
    const startedAt = Date.now();
    pool = createPool(config, logger);
    if (config.migrateOnStart) await migrate(pool, path.join(packageRoot(), 'migrations'), logger);

    const metrics = new Metrics();
    const store = new KeyStore(pool, { verifyMs: config.db.verifyTimeoutMs, queryMs: config.db.queryTimeoutMs });
    const format = new KeyFormat(config.livePrefix, config.testPrefix);
    const catalog = new ScopeCatalog(config.scopes);
    const admin = new KeyAdmin(store, format, catalog, { keyChanged: async () => {} });
    const verifier = new Verifier(format, catalog, new PostgresLookup(store), undefined, metrics.countVerdict);

    grpc = createGrpcServer(
      createAdminService(admin, createTokenCheck(config.adminToken), logger, metrics.observeAdminCall),
      createVerifierService(verifier, config.verifierToken === undefined ? undefined : createTokenCheck(config.verifierToken), logger),
    );
    let metricsPort: number | undefined;
    if (config.metricsAddr !== undefined) {
      const started = await startMetricsServer(metrics.registry, config.metricsAddr);
      metricsHttp = started.server;
      metricsPort = started.port;
    }
    const port = await bindServer(grpc.server, config.addr);
    for (const name of ['', ...SERVICE_NAMES]) grpc.health.setStatus(name, 'SERVING');
    logger.info({ event: 'start', addr: config.addr, port, metricsPort, ms: Date.now() - startedAt }, 'keyward started');
    return { port, metricsPort };
  };

  const stop = async (): Promise<void> => {
    const stoppedAt = Date.now();
    if (grpc !== undefined) {
      for (const name of ['', ...SERVICE_NAMES]) grpc.health.setStatus(name, 'NOT_SERVING');
      const how = await shutdownServer(grpc.server, config.shutdownTimeoutMs);
      if (how === 'forced') logger.warn({ timeoutMs: config.shutdownTimeoutMs }, 'calls still in flight at the shutdown timeout were cancelled');
    }
    if (metricsHttp !== undefined) {
      const server = metricsHttp;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    }
    if (pool !== undefined) await pool.end().catch((error: unknown) => logger.warn({ err: error }, 'closing the postgres pool failed'));
    logger.info({ event: 'stop', ms: Date.now() - stoppedAt }, 'keyward stopped');
  };

  return {
    start: () => (starting ??= start()),
    stop: () =>
      (stopping ??= (starting ?? Promise.resolve())
        .catch(() => undefined)
        .then(stop)
        .catch((error: unknown) => logger.error({ err: error }, 'stop failed'))),
  };
}
