import { setFlagsFromString } from 'node:v8';
import { createApp } from './app';
import { ConfigError, configureFromEnv } from './config';
import { createLogger } from './logger';
import { checkRuntime } from './runtime';

/** Entry point: configure, start, stop on SIGTERM/SIGINT, reload TLS files on SIGHUP; exit 1 on a failed start. */
function main(): void {
  const runtimeProblem = checkRuntime();
  if (runtimeProblem !== undefined) {
    createLogger().fatal({ event: 'runtime', node: process.version }, runtimeProblem);
    process.exit(1);
  }
  let config;
  try {
    config = configureFromEnv(process.env);
  } catch (error) {
    const logger = createLogger();
    if (error instanceof ConfigError) logger.fatal({ event: 'config' }, `invalid configuration: ${error.message}`);
    else logger.fatal({ err: error }, 'invalid configuration');
    process.exit(1);
  }
  // V8 lets the old generation grow to several times what is live before a full
  // collection; with an in-process cache of 100,000 keys that slack costs more
  // memory than the cache itself. A fixed, smaller growing factor keeps the
  // process near its live size (README, "Performance": the cost is measured).
  if (config.heapGrowingPercent > 0) setFlagsFromString(`--heap-growing-percent=${config.heapGrowingPercent}`);
  const logger = createLogger(config.logLevel);
  const app = createApp(config, logger);
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (signalled) return;
    signalled = true;
    logger.info({ event: 'signal', signal }, 'stopping');
    void app.stop().then(() => process.exit(0));
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  // Node's default for SIGHUP is to exit; here it means "read the certificate files again".
  process.on('SIGHUP', () => {
    logger.info({ event: 'signal', signal: 'SIGHUP' }, 'reloading TLS certificates');
    void app.reloadCertificates();
  });
  app.start().catch((error: unknown) => {
    logger.fatal({ err: error }, 'start failed');
    void app.stop().then(() => process.exit(1));
  });
}

// Only as the program (`npm start`, `node dist/src/main.js`, the image's CMD): `require('keyward')` must not start a server.
if (require.main === module) main();
