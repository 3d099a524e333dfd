import pino from 'pino';
import { FillGuard } from '../src/cache/FillGuard';
import { LocalCache } from '../src/cache/LocalCache';
import type { RedisTier } from '../src/cache/RedisTier';
import { TierCounts, TieredLookup } from '../src/cache/TieredLookup';
import { KeyFormat, hashSecret } from '../src/keys/KeyFormat';
import { DEFAULT_SCOPES, ScopeCatalog } from '../src/keys/scopes';
import { toVerifiableKey } from '../src/keys/VerifiableKey';
import type { KeyStore } from '../src/store/KeyStore';
import { Verifier } from '../src/verify/Verifier';

/**
 * What keyward's own Verify code costs per call, without gRPC: the real
 * Verifier, in-process cache and verdict, timed in this process. Steady on a
 * noisy machine (it measures nanoseconds of pure code), and the part of a
 * call that keyward adds to the floor's.
 */
export function measureVerifierCost(callsPerRound: number): Array<{ case: string; nsPerCall: number }> {
  const format = new KeyFormat('fsm_live_', 'fsm_test_');
  const local = new LocalCache({ maxEntries: 100_000, maxBytes: 1e9, ttlMs: 3_600_000, negativeTtlMs: 3_600_000 });
  const unused = {} as RedisTier & KeyStore;
  const lookup = new TieredLookup(local, new FillGuard(5_000), unused, unused, { until: Number.POSITIVE_INFINITY }, new TierCounts(), pino({ level: 'silent' }), 1_000);
  const secret = format.generate('live');
  const unknown = format.generate('live');
  local.set(
    hashSecret(secret),
    toVerifiableKey({
      id: '3f1e8a2c-1234-4abc-9def-0123456789ab',
      accountId: 'bench-account',
      name: 'bench key',
      environment: 'live',
      scopes: ['jobs:read', 'technicians:read'],
      ipWhitelist: ['203.0.113.0/24'],
      expiresAt: null,
      revokedAt: null,
      disabledAt: null,
      metadata: {},
      version: 1,
    }),
  );
  local.setUnknown(hashSecret(unknown));
  const uses = { recordUse: () => {} };
  const verifier = new Verifier(format, new ScopeCatalog(DEFAULT_SCOPES), lookup, uses, () => {});
  const base = { clientIp: '203.0.113.7', requiredScopes: ['jobs:read'] };
  const cases: Array<[string, { key: string; clientIp: string; requiredScopes: string[] }]> = [
    ['in-process hit (OK)', { ...base, key: secret }],
    ['in-process hit, scope refused', { ...base, key: secret, requiredScopes: ['jobs:write'] }],
    ['negative-cache hit', { ...base, key: unknown }],
    ['checksum reject', { ...base, key: `${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}` }],
  ];
  const results: Array<{ case: string; nsPerCall: number }> = [];
  for (const [name, request] of cases) {
    const runs: number[] = [];
    for (let round = 0; round < 5; round++) {
      const started = process.hrtime.bigint();
      for (let i = 0; i < callsPerRound; i++) verifier.verify(request);
      runs.push(Number(process.hrtime.bigint() - started) / callsPerRound);
    }
    results.push({ case: name, nsPerCall: Math.min(...runs) });
  }
  return results;
}
