/**
 * A revoke's time broken down by hop (issue 14): three instances on one
 * PostgreSQL and one Redis, `--revokes` keys (default 1,000) each warm in
 * every instance's caches, revoked one after another, in turn on each
 * instance. The instances run at debug level, where each change logs its
 * milestones (epoch milliseconds, microsecond resolution, one clock: all
 * processes run on this machine):
 *
 *   admin-call        the announcer: gRPC call in, answer out (src/grpc/adminService.ts)
 *   change-announced  the announcer: commit returned, Redis script answered, each ack received (src/cache/ChangePropagator.ts)
 *   change-heard      every other instance: its copy dropped, its ack sent (src/cache/InvalidationBus.ts)
 *
 * Prints p50/p99 of each hop and writes bench/results/revoke.md and .json.
 *
 *   npm run bench:revoke [-- --revokes 1000]
 *
 * Needs PostgreSQL and Redis as `npm test` does; makes and drops its own database.
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Fleet } from '../test/helpers/Fleet';
import { newAccountId } from '../test/helpers/env';
import { withScratchDatabase } from '../test/helpers/scratchDatabase';
import type { LogLine } from '../test/helpers/serverProcess';
import { waitUntil } from '../test/helpers/waitUntil';
import { percentiles } from './stats';

const { values } = parseArgs({ options: { revokes: { type: 'string', default: '1000' }, instances: { type: 'string', default: '3' } } });
const REVOKES = Number(values.revokes);
/** 3 for the figure; 1 shows the hops without the fan-out (no other instance to evict or acknowledge). */
const INSTANCES = Number(values.instances);
/** Keys every instance holds in its caches besides the one revoked. */
const BALLAST_KEYS = 1_000;
const RESULTS = path.join(__dirname, '..', '..', 'bench', 'results');

/** One hop: its name, what it spans, and its durations in ms (one per revoke, or per revoke and instance). */
interface Hop {
  readonly name: string;
  readonly spans: string;
  readonly ms: number[];
}

interface Announced {
  readonly keyId: string;
  readonly changeId: string;
  readonly startedAt: number;
  readonly scriptDoneAt: number;
  readonly acks: Record<string, number>;
  readonly doneAt: number;
  readonly confirmed: boolean;
}

function lines(fleet: Fleet, event: string): LogLine[] {
  return fleet.instances.flatMap((instance) => instance.server.logLines().filter((line) => line.event === event));
}

function breakdown(fleet: Fleet, keyIds: ReadonlySet<string>, clientMs: ReadonlyMap<string, number>): Hop[] {
  const calls = new Map(
    lines(fleet, 'admin-call')
      .filter((line) => line.method === 'RevokeKey' && keyIds.has(line.keyId as string))
      .map((line) => [line.keyId as string, line as unknown as { receivedAt: number; answeredAt: number }]),
  );
  const heard = new Map<string, Array<{ instance: string; evictedAt: number; ackSentAt: number }>>();
  for (const line of lines(fleet, 'change-heard')) {
    const list = heard.get(line.changeId as string) ?? [];
    list.push(line as unknown as { instance: string; evictedAt: number; ackSentAt: number });
    heard.set(line.changeId as string, list);
  }
  const hops: Hop[] = [
    { name: 'gRPC in → PostgreSQL commit', spans: 'validation, the revoke statement (one round trip, autocommit)', ms: [] },
    { name: 'commit → Redis script answered', spans: 'write-through, PUBLISH and member list (one round trip)', ms: [] },
    { name: 'commit → eviction on another instance', spans: 'PUBLISH delivered, message parsed, copy dropped (each other instance)', ms: [] },
    { name: 'eviction → its ack received', spans: 'ack PUBLISH from that instance, delivered to the announcer', ms: [] },
    { name: 'last ack → answer out', spans: 'acks judged, response encoded and written', ms: [] },
    { name: 'gRPC in → answer out', spans: 'the whole call inside keyward', ms: [] },
    { name: 'client round trip', spans: 'the caller’s view: request written to answer read', ms: [] },
  ];
  const [inToCommit, commitToScript, commitToEviction, evictionToAck, ackToOut, inToOut, client] = hops as [Hop, Hop, Hop, Hop, Hop, Hop, Hop];
  let unconfirmed = 0;
  for (const line of lines(fleet, 'change-announced')) {
    const announced = line as unknown as Announced;
    const call = calls.get(announced.keyId);
    if (call === undefined) continue;
    if (!announced.confirmed) unconfirmed++;
    inToCommit.ms.push(announced.startedAt - call.receivedAt);
    commitToScript.ms.push(announced.scriptDoneAt - announced.startedAt);
    let lastAck = announced.scriptDoneAt;
    for (const receipt of heard.get(announced.changeId) ?? []) {
      commitToEviction.ms.push(receipt.evictedAt - announced.startedAt);
      const acked = announced.acks[receipt.instance];
      if (acked !== undefined) evictionToAck.ms.push(acked - receipt.evictedAt);
    }
    for (const at of Object.values(announced.acks)) lastAck = Math.max(lastAck, at);
    ackToOut.ms.push(call.answeredAt - lastAck);
    inToOut.ms.push(call.answeredAt - call.receivedAt);
    client.ms.push(clientMs.get(announced.keyId) as number);
  }
  if (inToOut.ms.length !== keyIds.size) throw new Error(`found the milestones of ${inToOut.ms.length} of ${keyIds.size} revokes: are the trace lines logged?`);
  if (unconfirmed > 0) throw new Error(`${unconfirmed} revokes were not confirmed by every instance (they waited out the lease): the breakdown would not be of the normal path`);
  return hops;
}

function table(hops: readonly Hop[]): string {
  const rows = hops.map((hop) => {
    const [p50, p99, max] = percentiles([...hop.ms], [50, 99, 100]) as [number, number, number];
    return `| ${hop.name} | ${hop.spans} | ${hop.ms.length} | ${p50.toFixed(2)} | ${p99.toFixed(2)} | ${max.toFixed(2)} |`;
  });
  return ['| hop | what it spans | samples | p50 ms | p99 ms | max ms |', '|---|---|---:|---:|---:|---:|', ...rows].join('\n');
}

async function main(): Promise<void> {
  await withScratchDatabase('keyward_bench_revoke', async (databaseUrl) => {
    const fleet = await Fleet.start(INSTANCES, { DATABASE_URL: databaseUrl, KEYWARD_LOG_LEVEL: 'debug', KEYWARD_USAGE_TRACKING: 'false' });
    try {
      const accountId = newAccountId();
      // Caches as a fleet's are, holding other keys: lru-cache empties its whole store (arrays the size of
      // KEYWARD_CACHE_MAX_ENTRIES) when its last entry is deleted, 1.4 ms here, which a cache of one key
      // would pay on every revoke and a real one never does.
      const ballast = await Promise.all(Array.from({ length: BALLAST_KEYS }, () => fleet.at(0).admin.newKey(accountId)));
      for (const instance of fleet.instances) {
        for (let i = 0; i < ballast.length; i += 50) await Promise.all(ballast.slice(i, i + 50).map(({ secret }) => instance.verifier.verify({ key: secret })));
      }
      const keyIds = new Set<string>();
      const clientMs = new Map<string, number>();
      for (let i = 0; i < REVOKES; i++) {
        const announcer = fleet.at(i % INSTANCES);
        const { key, secret } = await announcer.admin.newKey(accountId);
        for (const instance of fleet.instances) await instance.verifier.verify({ key: secret });
        const keyId = key?.id as string;
        const started = process.hrtime.bigint();
        await announcer.admin.revokeKey({ accountId, keyId });
        clientMs.set(keyId, Number(process.hrtime.bigint() - started) / 1e6);
        keyIds.add(keyId);
      }
      // The last lines may still be in the pipes.
      await waitUntil('every revoke logged', () => lines(fleet, 'change-announced').length >= REVOKES && lines(fleet, 'admin-call').filter((line) => line.method === 'RevokeKey').length >= REVOKES, { timeoutMs: 10_000 });
      const hops = breakdown(fleet, keyIds, clientMs);
      const text = table(hops);
      console.log(`revoke by hop, ${INSTANCES} instances, ${REVOKES} revokes (caches warm with ${BALLAST_KEYS} other keys, one revoke at a time, each instance in turn):\n${text}`);
      const header = `# Revoke latency by hop\n\n${new Date().toISOString()}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown'}), Node ${process.version}; \`npm run bench:revoke\` (bench/revokeLatency.ts): ${INSTANCES} instances, ${REVOKES} revokes, caches warm (the key and ${BALLAST_KEYS} others), one revoke at a time, each instance announcing in turn.\n\n`;
      writeFileSync(path.join(RESULTS, 'revoke.md'), `${header}${text}\n`);
      writeFileSync(
        path.join(RESULTS, 'revoke.json'),
        `${JSON.stringify({ at: new Date().toISOString(), revokes: REVOKES, hops: hops.map((hop) => ({ name: hop.name, ms: percentiles([...hop.ms], [50, 99, 100]) })) }, null, 2)}\n`,
      );
    } finally {
      await fleet.stop();
    }
  });
}

void main();
