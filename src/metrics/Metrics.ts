import { status as GrpcStatus } from '@grpc/grpc-js';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { VerifyCode, verifyCodeToJSON } from '../gen/keyward/v1/keyward';
import type { Verdict } from '../keys/verdict';

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
  }

  /** One Verify answered. */
  readonly countVerdict = (verdict: Verdict): void => {
    (this.verdictCounts[verdict.code] as number)++;
  };

  readonly observeAdminCall = (method: string, code: GrpcStatus, seconds: number): void => {
    this.adminCalls.inc({ method, code: STATUS_NAMES.get(code) ?? String(code) });
    this.adminSeconds.observe({ method }, seconds);
  };
}
