import { status as GrpcStatus } from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { CacheCounts } from '../cache/CacheTrust';
import type { PropagationCounts } from '../cache/ChangePropagator';
import type { TierCounts } from '../cache/TieredLookup';
import type { UsageCounts } from '../usage/UsageRecorder';
import { VerifyCode, verifyCodeToJSON } from '../gen/keyward/v1/keyward';
import type { Verdict } from '../keys/verdict';
import { ADMIN_AUTH_FAILURES, type AdminAuthFailure } from '../grpc/auth';

const VERIFY_CODES = Object.values(VerifyCode).filter((v): v is VerifyCode => typeof v === 'number' && v > 0);
const STATUS_NAMES = new Map(Object.entries(GrpcStatus).filter(([, v]) => typeof v === 'number').map(([k, v]) => [v as number, k]));

/**
 * keyward's Prometheus metrics, in a registry of their own. Hot-path counts
 * (one per Verify) are plain numbers read at scrape time, so that a Verify
 * pays an array increment, not a label lookup. Labels are codes, tiers and
 * method names only: never a key, a hash or an account.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly verdictCounts = new Array<number>(VERIFY_CODES.length + 1).fill(0);
  private readonly adminCalls: Counter<'method' | 'code'>;
  private readonly adminSeconds: Histogram<'method'>;
  private readonly adminAuthFailures: Counter<'reason'>;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'keyward_' });
    const counts = this.verdictCounts;
    new Counter({
      name: 'keyward_verify_total',
      help: 'Verify answers by verdict code (INVALID_KEY counts malformed and unknown keys alike)',
      labelNames: ['code'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const code of VERIFY_CODES) this.inc({ code: verifyCodeToJSON(code) }, counts[code] as number);
      },
    });
    this.adminCalls = new Counter({
      name: 'keyward_admin_calls_total',
      help: 'Admin RPCs by method and gRPC status',
      labelNames: ['method', 'code'],
      registers: [this.registry],
    });
    this.adminSeconds = new Histogram({
      name: 'keyward_admin_call_duration_seconds',
      help: 'Admin RPC latency, including the wait for every instance to drop its cached copy',
      labelNames: ['method'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [this.registry],
    });
    this.adminAuthFailures = new Counter({
      name: 'keyward_admin_auth_failures_total',
      help: 'Admin calls refused as UNAUTHENTICATED, by reason: missing (no authorization metadata), malformed (not one "Bearer <token>"), unknown_token (no configured admin token)',
      labelNames: ['reason'],
      registers: [this.registry],
    });
    // Every reason is exported from the start, at 0, so that a rate or an alert on it needs no first failure.
    for (const reason of ADMIN_AUTH_FAILURES) this.adminAuthFailures.inc({ reason }, 0);
  }

  /** Exposes which tier answered each lookup (Postgres alone, without Redis). */
  trackTiers(tiers: TierCounts): void {
    new Counter({
      name: 'keyward_verify_lookups_total',
      help: 'Key lookups of Verify by the tier that answered: local (in-process), redis, postgres, negative (a cached "no such key")',
      labelNames: ['tier'],
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc({ tier: 'local' }, tiers.local);
        this.inc({ tier: 'redis' }, tiers.redis);
        this.inc({ tier: 'postgres' }, tiers.postgres);
        this.inc({ tier: 'negative' }, tiers.negative);
      },
    });
    this.counter('keyward_cache_fills_refused_total', 'Cache fills dropped because a change went by while the lookup ran', () => tiers.refusedFills);
    this.counter('keyward_verify_redis_errors_total', 'Redis errors and timeouts on the Verify path', () => tiers.redisErrors);
    new Counter({
      name: 'keyward_redis_entries_rejected_total',
      help: 'Redis entries keyward did not trust (no or bad MAC, unknown schema, version not the sealed one, past the sealed expiry, not a hash): read as misses and deleted',
      labelNames: ['reason'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [reason, count] of Object.entries(tiers.rejectedEntries)) this.inc({ reason }, count);
      },
    });
    new Counter({
      name: 'keyward_cache_drops_total',
      help: 'Changes applied to the caches (entries dropped, version floors left), by source: self (this instance changed the key), bus (an announcement), outbox (an outbox read), relay (an overdue outbox row written into Redis), repair (the repair after a loss of trust)',
      labelNames: ['source'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [source, count] of Object.entries(tiers.drops)) this.inc({ source }, count);
      },
    });
    this.counter('keyward_cache_clears_total', 'Times the in-process cache was emptied (trust lost, a repair begun or done)', () => tiers.clears);
  }

  /** Exposes the coherence machinery of an instance with Redis. */
  trackCache(cache: CacheCounts, propagation: PropagationCounts, state: { trusted(): boolean; localEntries(): number }): void {
    this.gauge('keyward_cache_trusted', '1 while this instance may use its caches (subscription live, outbox read), else 0', () => (state.trusted() ? 1 : 0));
    this.gauge('keyward_cache_local_entries', 'Keys in the in-process cache', state.localEntries);
    this.counter('keyward_cache_trust_lost_total', 'Times the caches stopped being trusted (subscription lost, lease expired)', () => cache.trustLost);
    this.counter('keyward_cache_recoveries_total', 'Times the caches were trusted again after recovery', () => cache.recoveries);
    this.counter('keyward_outbox_relayed_total', 'Outbox rows this instance wrote into Redis for an instance that could not', () => cache.outbox.relayed);
    this.counter('keyward_outbox_polls_total', 'Invalidation outbox reads completed (with their relay into Redis)', () => cache.outbox.polls);
    this.counter('keyward_outbox_polled_rows_total', 'Outbox rows those reads returned (changes new to the reader, and overdue ones relayed)', () => cache.outbox.polledRows);
    this.gauge('keyward_outbox_poll_max_seconds', 'The longest outbox read (with its relay) since the start', () => cache.outbox.pollMaxMs / 1000);
    this.counter(
      'keyward_redis_lost_writes_total',
      'Times Redis was found to have lost writes without dropping the connection (run_id changed, write witness gone or older): handled as a loss of trust with the repair',
      () => cache.server.resets,
    );
    this.gauge('keyward_redis_noeviction', "1 while Redis's maxmemory-policy is noeviction, 0 when it is not (keyward entries can be evicted), -1 until known", () => cache.server.noEviction);
    this.counter(
      'keyward_cache_outbox_lapses_total',
      'Times the caches went untrusted because no outbox read completed within the lease (not counted in keyward_cache_trust_lost_total)',
      () => cache.outboxLapses,
    );
    this.counter('keyward_invalidations_confirmed_total', 'Admin changes every live instance confirmed within the ack timeout', () => propagation.confirmed);
    this.counter(
      'keyward_invalidation_acks_missing_total',
      'Admin changes that waited out the lease because an acknowledgement was missing or Redis was unreachable',
      () => propagation.waitedOutLease,
    );
  }

  /** Exposes usage counting: what is recorded, pending, written, lost. */
  trackUsage(usage: UsageCounts, pendingKeys: () => number): void {
    this.counter('keyward_usage_uses_total', 'Uses of stored keys counted (every Verify that identified a key)', () => usage.recorded);
    this.gauge('keyward_usage_pending_keys', 'Keys with uses not yet written to Postgres', pendingKeys);
    this.counter('keyward_usage_dropped_total', 'Uses lost because KEYWARD_USAGE_MAX_PENDING_KEYS was reached', () => usage.dropped);
    this.counter('keyward_usage_statements_total', 'Postgres statements issued by usage counting (one per batch attempt)', () => usage.statements);
    this.counter('keyward_usage_batches_written_total', 'Usage batches written (each part of a split batch counts)', () => usage.flushed);
    this.counter(
      'keyward_usage_batches_failed_total',
      'Usage batch attempts that failed: transient failures (kept, retried after a backoff) and refusals (see keyward_usage_batches_refused_total)',
      () => usage.failed,
    );
    this.counter(
      'keyward_usage_batches_deduplicated_total',
      'Retried usage batches that Postgres had already applied (an earlier attempt committed, its answer was lost): not counted twice',
      () => usage.deduplicated,
    );
    this.counter(
      'keyward_usage_batches_refused_total',
      'Usage batch attempts Postgres refused for their content (a permanent error): split in halves, or dropped when of one key',
      () => usage.refused,
    );
    this.counter(
      'keyward_usage_entries_rejected_total',
      'Entries (one key of one batch) dropped because Postgres refused them on their own; each is logged as usage-rejected',
      () => usage.rejectedEntries,
    );
    this.counter('keyward_usage_rejected_total', 'Uses lost in entries Postgres refused (see keyward_usage_entries_rejected_total)', () => usage.rejectedUses);
  }

  /** A counter whose value is read from keyward's own count at scrape time. */
  private counter(name: string, help: string, read: () => number): void {
    new Counter({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  }

  private gauge(name: string, help: string, read: () => number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  /** One Verify answered. */
  readonly countVerdict = (verdict: Verdict): void => {
    (this.verdictCounts[verdict.code] as number)++;
  };

  /** One admin call refused as UNAUTHENTICATED. */
  readonly countAdminAuthFailure = (reason: AdminAuthFailure): void => {
    this.adminAuthFailures.inc({ reason });
  };

  readonly observeAdminCall = (method: string, code: GrpcStatus, seconds: number): void => {
    this.adminCalls.inc({ method, code: STATUS_NAMES.get(code) ?? String(code) });
    this.adminSeconds.observe({ method }, seconds);
  };
}
