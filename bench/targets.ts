import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { scrapeMetrics } from '../test/helpers/metrics';
import { ServerProcess } from '../test/helpers/serverProcess';


/** Server-side figures, read before and after each step. */
export interface ServerStats {
  /** Calls answered (keyward: every verdict code). */
  readonly calls: number;
  /** keyward only: answers by verdict code. */
  readonly codes: ReadonlyMap<string, number>;
  /** CPU time of the process (process.cpuUsage, user + system), microseconds. */
  readonly cpuUs: number;
  readonly rssBytes: number;
  readonly usageStatements: number;
  readonly postgresLookups: number;
  readonly redisLookups: number;
  readonly redisErrors: number;
}

export interface Target {
  readonly name: string;
  readonly port: number;
  stats(): Promise<ServerStats>;
  stop(): Promise<void>;
}

/** The empty-handler server (bench/floorServer.ts), answering `response` (a base64 VerifyResponse). */
export async function startFloor(response: string, nodeArgs: readonly string[] = []): Promise<Target> {
  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, path.resolve(__dirname, 'floorServer.js')], {
    env: { ...process.env, FLOOR_RESPONSE: response },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const { port, statsPort } = await new Promise<{ port: number; statsPort: number }>((resolve, reject) => {
    child.stdout?.once('data', (chunk: Buffer) => resolve(JSON.parse(chunk.toString()) as { port: number; statsPort: number }));
    child.once('exit', (code) => reject(new Error(`floor server exited ${code}`)));
  });
  return {
    name: 'floor',
    port,
    async stats() {
      const s = (await (await fetch(`http://127.0.0.1:${statsPort}/`)).json()) as { calls: number; cpuUs: number; rssBytes: number };
      return { calls: s.calls, codes: new Map(), cpuUs: s.cpuUs, rssBytes: s.rssBytes, usageStatements: 0, postgresLookups: 0, redisLookups: 0, redisErrors: 0 };
    },
    async stop() {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * A real keyward process (`node dist/src/main.js`) with `env`, and `nodeArgs`
 * before the script (default: BENCH_NODE_ARGS); its figures come from its /metrics.
 */
export async function startKeyward(
  name: string,
  env: Record<string, string>,
  nodeArgs: readonly string[] = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== ''),
): Promise<Target & { server: ServerProcess }> {
  const server = await ServerProcess.start({ KEYWARD_METRICS_ADDR: '127.0.0.1:0', KEYWARD_HEAP_GROWING_PERCENT: process.env.KEYWARD_HEAP_GROWING_PERCENT, ...env }, 30_000, nodeArgs);
  let stopping = false;
  // A server that dies during the run would otherwise show only as a refused scrape: say how, with its last words.
  server.child.once('exit', (code, signal) => {
    if (!stopping) process.stderr.write(`\nbench: ${name} (pid ${server.child.pid}) exited during the run (code ${code}, signal ${signal}); its last output:\n${server.log.slice(-3_000)}\n`);
  });
  return {
    name,
    port: server.port,
    server,
    async stats() {
      const metrics = await scrapeMetrics(server.metricsPort as number);
      const codes = new Map<string, number>();
      for (const [series, value] of metrics) {
        const match = /^keyward_verify_total\{code="(\w+)"\}$/.exec(series);
        if (match !== null) codes.set(match[1] as string, value);
      }
      return {
        calls: [...codes.values()].reduce((sum, n) => sum + n, 0),
        codes,
        cpuUs: (metrics.get('keyward_process_cpu_seconds_total') ?? 0) * 1e6,
        rssBytes: metrics.get('keyward_process_resident_memory_bytes') ?? 0,
        usageStatements: metrics.get('keyward_usage_statements_total') ?? 0,
        postgresLookups: metrics.get('keyward_verify_lookups_total{tier="postgres"}') ?? 0,
        redisLookups: metrics.get('keyward_verify_lookups_total{tier="redis"}') ?? 0,
        redisErrors: metrics.get('keyward_verify_redis_errors_total') ?? 0,
      };
    },
    async stop() {
      stopping = true;
      await server.stop();
    },
  };
}
