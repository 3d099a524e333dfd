import { invalidArgument } from '../errors';
import { LIMITS } from './fields';

/** The product's scope catalog; KEYWARD_SCOPES replaces it. */
export const DEFAULT_SCOPES = [
  'jobs:read',
  'jobs:write',
  'customers:read',
  'customers:write',
  'assets:read',
  'assets:write',
  'assets:transfer',
  'assets:meter',
  'assets:service',
  'technicians:read',
  'webhooks:manage',
] as const;

/** The configured scopes, and the one place that says what a valid scope list is. */
export class ScopeCatalog {
  private readonly rank: ReadonlyMap<string, number>;

  constructor(readonly scopes: readonly string[]) {
    this.rank = new Map(scopes.map((scope, i) => [scope, i]));
  }

  has(scope: string): boolean {
    return this.rank.has(scope);
  }

  /**
   * Validates a key's scopes (one or more, each in the catalog) and returns
   * them without duplicates, in catalog order.
   */
  normalise(field: string, scopes: readonly string[]): string[] {
    if (scopes.length === 0) {
      throw invalidArgument(field, '', `at least one scope is required; known scopes: ${this.scopes.join(', ')}`);
    }
    this.checkKnown(field, scopes, LIMITS.scopes);
    return [...new Set(scopes)].sort((a, b) => (this.rank.get(a) as number) - (this.rank.get(b) as number));
  }

  /** Throws INVALID_ARGUMENT for a list over `max` entries, or for the first scope that is not in the catalog. */
  checkKnown(field: string, scopes: readonly string[], max: number): void {
    if (scopes.length > max) throw invalidArgument(field, `${scopes.length} entries`, `at most ${max} entries are allowed`);
    for (let i = 0; i < scopes.length; i++) {
      const scope = scopes[i] as string;
      if (!this.rank.has(scope)) {
        throw invalidArgument(`${field}[${i}]`, scope, `unknown scope; known scopes: ${this.scopes.join(', ')}`);
      }
    }
  }
}
