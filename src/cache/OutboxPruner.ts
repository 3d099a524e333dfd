import type { Logger } from 'pino';
import type { InvalidationOutbox } from '../store/InvalidationOutbox';

/**
 * Deletes outbox rows past their retention, at most once per interval, on
 * the pool (not on the connection whose reads decide trust). Failures are
 * logged at debug and tried again at the next interval: rows kept longer cost
 * nothing but space.
 */
export class OutboxPruner {
  private lastAt = Number.NEGATIVE_INFINITY;
  private running = false;

  constructor(
    private readonly outbox: InvalidationOutbox,
    private readonly options: { readonly retentionMs: number; readonly everyMs: number; readonly timeoutMs: number },
    private readonly logger: Logger,
  ) {}

  /** Prunes if the interval has passed since the last prune began (`now`: performance.now). */
  maybePrune(now: number): void {
    if (this.running || now - this.lastAt < this.options.everyMs) return;
    this.lastAt = now;
    this.running = true;
    this.outbox
      .prune(this.options.retentionMs, this.options.timeoutMs)
      .catch((error: unknown) => this.logger.debug({ err: error }, 'pruning the invalidation outbox failed'))
      .finally(() => {
        this.running = false;
      });
  }
}
