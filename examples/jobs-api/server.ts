/**
 * `npm run example`: the jobs API on EXAMPLE_PORT (default 8080), protected
 * by keyward at KEYWARD_ADDR (default 127.0.0.1:50051). Logs one JSON line
 * once listening, with the port; exits 1 on a bad configuration.
 */
import type { AddressInfo } from 'node:net';
import { KeywardClient, createGuard } from '../../src/client';
import { createJobsApp } from './app';
import { configureFromEnv } from './config';

function log(fields: Record<string, unknown>): void {
  console.log(JSON.stringify({ time: new Date().toISOString(), ...fields }));
}

function main(): void {
  let config;
  try {
    config = configureFromEnv(process.env);
  } catch (error) {
    log({ msg: 'invalid configuration', error: (error as Error).message });
    process.exit(1);
  }
  const keyward = new KeywardClient({ address: config.keywardAddress, verifierToken: config.verifierToken });
  let guard;
  try {
    guard = createGuard({
      verifier: keyward,
      trustedProxies: config.trustedProxies,
      // The cause of a 503 or 500 goes to the log, never to the caller.
      onError: (error) => log({ msg: 'keyward unavailable', error: error.message, code: (error as { code?: unknown }).code }),
    });
  } catch (error) {
    log({ msg: 'invalid configuration', error: `EXAMPLE_TRUSTED_PROXIES: ${(error as Error).message}` });
    process.exit(1);
  }
  const server = createJobsApp(guard).listen(config.port, () => {
    log({ msg: 'jobs-api listening', port: (server.address() as AddressInfo).port, keyward: config.keywardAddress });
  });
  server.on('error', (error) => {
    log({ msg: 'listen failed', error: error.message });
    process.exit(1);
  });
  const stop = (): void => {
    server.close(() => {
      keyward.close();
      process.exit(0);
    });
    server.closeAllConnections();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main();
