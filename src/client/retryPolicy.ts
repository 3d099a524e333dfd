import { status } from '@grpc/grpc-js';

/** Codes after which a safe call is tried again: the server may never have seen it, or its answer was lost. */
const RETRYABLE = new Set<number>([status.UNAVAILABLE, status.DEADLINE_EXCEEDED]);

/** First backoff before a retry; doubled on each further retry, up to MAX_BACKOFF_MS. */
const BASE_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 1_000;

/** Whether a failed attempt of a safe (read-only) call may be tried again. */
export function isRetryable(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'number' && RETRYABLE.has(code);
}

/**
 * The wait before retry number `retry` (1 for the first): exponential from
 * 50 ms, capped at 1 s, with jitter (half to all of it) so that many
 * clients failing together do not retry in step.
 */
export function backoffMs(retry: number, random: () => number = Math.random): number {
  const ceiling = Math.min(MAX_BACKOFF_MS, BASE_BACKOFF_MS * 2 ** (retry - 1));
  return Math.round(ceiling * (0.5 + random() / 2));
}

/**
 * Runs `attempt` once, and again up to `retries` times while it fails with
 * UNAVAILABLE or DEADLINE_EXCEEDED and the call's `deadline` (epoch ms,
 * shared by every attempt) leaves room for the wait and another try. Only
 * for calls that change nothing: a change whose answer was lost may have
 * been applied.
 */
export async function withRetries<T>(retries: number, deadline: number, attempt: () => Promise<T>): Promise<T> {
  for (let retry = 1; ; retry++) {
    try {
      return await attempt();
    } catch (error) {
      if (retry > retries || !isRetryable(error)) throw error;
      const wait = backoffMs(retry);
      if (Date.now() + wait >= deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}
