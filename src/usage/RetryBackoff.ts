export interface BackoffPolicy {
  /** Ceiling of the first delay. */
  readonly baseMs: number;
  /** The ceiling never grows beyond this. */
  readonly capMs: number;
}

/**
 * The delay before retry number `attempt` (1 after the first failure):
 * "full jitter", uniform in [0, min(cap, base × 2^(attempt − 1))), so that
 * instances that failed together do not retry together. `random` returns a
 * number in [0, 1), as Math.random does.
 */
export function nextRetryDelay(attempt: number, policy: BackoffPolicy, random: () => number): number {
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(Math.max(attempt - 1, 0), 52));
  return Math.floor(random() * ceiling);
}

/**
 * When the next attempt of a failing operation may run. Pure: time is passed
 * in (monotonic milliseconds), randomness injected.
 */
export class RetryBackoff {
  private failures = 0;
  private retryAtMs = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly policy: BackoffPolicy,
    private readonly random: () => number = Math.random,
  ) {}

  /** Failures since the last success. */
  get attempts(): number {
    return this.failures;
  }

  /** Whether an attempt may run at `nowMs`. */
  ready(nowMs: number): boolean {
    return nowMs >= this.retryAtMs;
  }

  /** Records a failure at `nowMs`; returns the delay until the next attempt may run. */
  failed(nowMs: number): number {
    this.failures++;
    const delayMs = nextRetryDelay(this.failures, this.policy, this.random);
    this.retryAtMs = nowMs + delayMs;
    return delayMs;
  }

  /** Records a success: the next failure starts again from the base delay. */
  succeeded(): void {
    this.failures = 0;
    this.retryAtMs = Number.NEGATIVE_INFINITY;
  }
}
