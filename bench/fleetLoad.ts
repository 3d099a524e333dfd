/**
 * Load run of the cache tiers with three instances (issue: "Verify from
 * cache, revoke across the whole fleet"): 100,000 Verify calls on 1,000 warm
 * keys, counting how many reached Postgres, then the latency of revokes.
 *
 *   node --import tsx bench/fleetLoad.ts [--calls 100000] [--keys 1000] [--revokes 300]
 *
 * Needs PostgreSQL and Redis as `npm test` does; makes and drops its own database.
 */
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { withScratchDatabase } from '../test/helpers/scratchDatabase';
import { newAccountId } from '../test/helpers/env';
import { Fleet } from '../test/helpers/Fleet';
import { scrapeMetrics } from '../test/helpers/metrics';

const { values } = parseArgs({
  options: { calls: { type: 'string', default: '100000' }, keys: { type: 'string', default: '1000' }, revokes: { type: 'string', default: '300' } },
});
const CALLS = Number(values.calls);
const KEYS = Number(values.keys);
const REVOKES = Number(values.revokes);
const CONCURRENCY = 64;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

async function postgresLookups(fleet: Fleet): Promise<number> {
  const all = await Promise.all(fleet.instances.map((i) => scrapeMetrics(i.server.metricsPort as number)));
  return all.reduce((sum, m) => sum + (m.get('keyward_verify_lookups_total{tier="postgres"}') ?? 0), 0);
}

async function main(): Promise<void> {
  await withScratchDatabase('keyward_bench', async (databaseUrl) => {
    const fleet = await Fleet.start(3, { DATABASE_URL: databaseUrl });
    try {
      const accountId = `bench-${randomUUID()}`;
      const secrets: string[] = [];
      for (let i = 0; i < KEYS; i += 50) {
        const batch = await Promise.all(Array.from({ length: Math.min(50, KEYS - i) }, () => fleet.at(0).admin.newKey(accountId)));
        secrets.push(...batch.map((created) => created.secret));
      }
      for (const instance of fleet.instances) {
        for (let i = 0; i < secrets.length; i += 100) await Promise.all(secrets.slice(i, i + 100).map((key) => instance.verifier.verify({ key })));
      }
      const before = await postgresLookups(fleet);
      let next = 0;
      const started = Date.now();
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async (_, worker) => {
          const instance = fleet.at(worker % 3);
          while (next < CALLS) {
            const i = next++;
            const answer = await instance.verifier.verify({ key: secrets[i % secrets.length] as string });
            if (!answer.valid) throw new Error(`unexpected verdict ${answer.code}`);
          }
        }),
      );
      const seconds = (Date.now() - started) / 1000;
      const reached = (await postgresLookups(fleet)) - before;
      console.log(`verify: ${CALLS} calls on ${KEYS} warm keys over 3 instances in ${seconds.toFixed(1)} s; Postgres lookups: ${reached}`);

      const latencies: number[] = [];
      const revokeAccount = newAccountId();
      for (let i = 0; i < REVOKES; i++) {
        const { key, secret } = await fleet.at(i % 3).admin.newKey(revokeAccount);
        for (const instance of fleet.instances) await instance.verifier.verify({ key: secret });
        const t0 = process.hrtime.bigint();
        await fleet.at(i % 3).admin.revokeKey({ accountId: revokeAccount, keyId: key?.id });
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      latencies.sort((x, y) => x - y);
      console.log(
        `revoke with 3 instances (${REVOKES} revokes, caches warm): p50 ${percentile(latencies, 50).toFixed(2)} ms, ` +
          `p99 ${percentile(latencies, 99).toFixed(2)} ms, max ${(latencies[latencies.length - 1] as number).toFixed(2)} ms`,
      );
    } finally {
      await fleet.stop();
    }
  });
}

void main();
