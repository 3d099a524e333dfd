// Types only: nothing of node:http is loaded here.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Guard } from './createGuard';
import type { VerifiedApiKey } from './guardOutcome';

/** A request the node:http guard allowed. */
export type GuardedIncomingMessage = IncomingMessage & { apiKey?: VerifiedApiKey };

/**
 * The guard for a plain `node:http` handler: resolves with the verified key
 * (also set as `req.apiKey`), or answers the request (401, 403, 503 with a
 * JSON body) and resolves with undefined, after which the handler must not
 * write to `res`.
 *
 *     const requireApiKey = createNodeHttpGuard(guard);
 *     http.createServer(async (req, res) => {
 *       const apiKey = await requireApiKey(req, res, 'jobs:read');
 *       if (apiKey === undefined) return;
 *       ...
 *     });
 */
export function createNodeHttpGuard(guard: Guard): (req: IncomingMessage, res: ServerResponse, ...requiredScopes: string[]) => Promise<VerifiedApiKey | undefined> {
  return async (req, res, ...requiredScopes) => {
    const outcome = await guard.verifyHttpRequest(req.headers, req.socket.remoteAddress, requiredScopes);
    if (outcome.allowed) {
      (req as GuardedIncomingMessage).apiKey = outcome.apiKey;
      return outcome.apiKey;
    }
    const body = JSON.stringify(outcome.body);
    res.writeHead(outcome.status, { ...outcome.headers, 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
    return undefined;
  };
}
