import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assertNoLeaks } from './helpers/leaks';
import { FAULT_KINDS, formatReport, runSoak } from './soak/soak';

/**
 * The soak of `npm run soak` (test/soak/soak.ts), 30 seconds of load: three
 * instances under unary and streamed Verify load while keys are created,
 * narrowed, revoked and replaced, and each fault kind happens once (Redis
 * stopped and restarted, PostgreSQL unreachable, then slow, pub/sub
 * connections killed, one instance SIGKILLed and restarted).
 */
describe('soak (30 s)', () => {
  it('gives no wrong verdict, only UNAVAILABLE and only during faults, recovers from each fault without restarts, and counts uses exactly', async (t) => {
    const report = await runSoak({ durationMs: 30_000, log: (line) => t.diagnostic(line) });
    const summary = formatReport(report);
    for (const line of summary) t.diagnostic(line);
    const text = summary.join('\n');

    assert.deepEqual(report.problems, [], `the soak had problems:\n${text}`);
    assert.ok(report.calls.unary > 300 && report.calls.streamed > 300, `too little load:\n${text}`);
    assert.ok(report.admin.scopeChanges > 0 && report.admin.whitelistChanges > 0 && report.admin.revokes > 0, `too few changes:\n${text}`);
    assert.equal(report.wrongVerdicts.count, 0, `wrong verdicts:\n${text}`);
    assert.deepEqual(
      Object.keys(report.errors.verify).filter((code) => code !== 'UNAVAILABLE'),
      [],
      `Verify errors other than UNAVAILABLE:\n${text}`,
    );
    assert.equal(report.errors.disallowedCount, 0, `errors outside the fault windows or not UNAVAILABLE:\n${text}`);
    assert.deepEqual(
      report.faults.map((fault) => fault.kind),
      [...FAULT_KINDS],
      `every fault kind once:\n${text}`,
    );
    for (const fault of report.faults) assert.notEqual(fault.recoveryMs, null, `no recovery from ${fault.kind}:\n${text}`);
    assert.ok(report.usage.exactChecked > 0, `no key with exact usage counts:\n${text}`);
    assert.deepEqual(report.usage.mismatches, [], `usage counts:\n${text}`);
    assert.deepEqual(report.exitCodes, [0, 0, 0], `exit codes on SIGTERM:\n${text}`);
    assert.equal(report.passed, true);
    await assertNoLeaks();
  });
});
