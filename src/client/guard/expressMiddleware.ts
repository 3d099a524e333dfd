// Types only: this adapter never loads express (`import type` is erased), so the client library does not depend on it.
import type { RequestHandler } from 'express';
import type { Guard } from './createGuard';
import type { VerifiedApiKey } from './guardOutcome';

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace -- how @types/express is augmented
  namespace Express {
    interface Request {
      /** The key the request was allowed with, set by the keyward guard's middleware. */
      apiKey?: VerifiedApiKey;
    }
  }
}

/**
 * The guard as Express (4 or 5) middleware: `requireApiKey('jobs:read')`
 * lets a request through with `req.apiKey` set, or answers it (401, 403,
 * 503 with a JSON body) without calling the route.
 *
 *     const requireApiKey = createExpressMiddleware(guard);
 *     app.get('/v1/jobs', requireApiKey('jobs:read'), (req, res) => ...);
 */
export function createExpressMiddleware(guard: Guard): (...requiredScopes: string[]) => RequestHandler {
  return (...requiredScopes) =>
    (req, res, next) => {
      guard
        .verifyHttpRequest(req.headers, req.socket.remoteAddress, requiredScopes)
        .then((outcome) => {
          if (outcome.allowed) {
            req.apiKey = outcome.apiKey;
            next();
            return;
          }
          res.status(outcome.status).set(outcome.headers).json(outcome.body);
        })
        // verifyHttpRequest never rejects; this hands Express what writing the answer might throw.
        .catch(next);
    };
}
