import express, { type Express } from 'express';
import { type Guard, createExpressMiddleware } from '../../src/client';
import { JobStore } from './jobStore';

/**
 * The jobs API: `GET /v1/jobs` (scope `jobs:read`) lists the calling
 * account's jobs, `POST /v1/jobs` (scope `jobs:write`) adds one. Every
 * route is behind the keyward guard; the account is the verified key's,
 * never something the caller sends.
 */
export function createJobsApp(guard: Guard, jobs = new JobStore()): Express {
  const requireApiKey = createExpressMiddleware(guard);
  const app = express();
  app.use(express.json({ limit: '16kb' }));

  app.get('/v1/jobs', requireApiKey('jobs:read'), (req, res) => {
    const apiKey = req.apiKey!;
    res.json({ accountId: apiKey.accountId, jobs: jobs.list(apiKey.accountId) });
  });

  app.post('/v1/jobs', requireApiKey('jobs:write'), (req, res) => {
    const apiKey = req.apiKey!;
    const title: unknown = (req.body as { title?: unknown } | undefined)?.title;
    if (typeof title !== 'string' || title.trim().length === 0 || title.length > 200) {
      res.status(400).json({ error: { code: 'invalid_request', message: 'title must be a string of 1 to 200 characters' } });
      return;
    }
    res.status(201).json({ job: jobs.add(apiKey.accountId, title.trim(), apiKey.id) });
  });

  return app;
}
