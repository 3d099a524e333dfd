/**
 * `npm run soak`: the bounded soak (test/soak/soak.ts) on a scratch database
 * of its own. SOAK_SECONDS sets how long the load runs (default 180; a fault
 * without recovery adds up to its recovery limit, 10 to 30 s). Prints the
 * summary and exits 1 when a verdict was wrong or a usage count did not
 * match, and also when an error broke the rules, a fault was not recovered
 * from, or the run could not complete (SoakReport.passed).
 */
import { withScratchDatabase } from '../helpers/scratchDatabase';
import { formatReport, runSoak } from './soak';

const seconds = Number(process.env.SOAK_SECONDS ?? '180');
if (!Number.isFinite(seconds) || seconds < 20 || seconds > 3_600) {
  console.error(`SOAK_SECONDS "${process.env.SOAK_SECONDS}": must be a number of seconds from 20 to 3600`);
  process.exit(2);
}

withScratchDatabase('keyward_soak', (databaseUrl) =>
  runSoak({ durationMs: seconds * 1000, databaseUrl, log: (line) => console.log(line) }),
).then(
  (report) => {
    console.log('');
    for (const line of formatReport(report)) console.log(line);
    process.exit(report.passed ? 0 : 1);
  },
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
