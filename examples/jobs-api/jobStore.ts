import { randomUUID } from 'node:crypto';

export interface Job {
  readonly id: string;
  readonly title: string;
  readonly status: 'open';
  readonly createdAt: string;
  /** The id of the API key that created it (never the key itself). */
  readonly createdByKeyId: string;
}

/** In-memory jobs, kept per account: an account never sees another's. */
export class JobStore {
  private readonly byAccount = new Map<string, Job[]>();

  list(accountId: string): readonly Job[] {
    return this.byAccount.get(accountId) ?? [];
  }

  add(accountId: string, title: string, keyId: string): Job {
    const job: Job = { id: randomUUID(), title, status: 'open', createdAt: new Date().toISOString(), createdByKeyId: keyId };
    const jobs = this.byAccount.get(accountId) ?? [];
    jobs.push(job);
    this.byAccount.set(accountId, jobs);
    return job;
  }
}
