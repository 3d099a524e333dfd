// Types only: this adapter never loads fastify (`import type` is erased), so the client library does not depend on it.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Guard } from './createGuard';
import type { VerifiedApiKey } from './guardOutcome';

declare module 'fastify' {
  interface FastifyRequest {
    /** The key the request was allowed with, set by the keyward guard's preHandler. */
    apiKey?: VerifiedApiKey;
  }
}

/**
 * The guard as a Fastify (4 or 5) `preHandler` hook: `requireApiKey('jobs:read')`
 * lets a request through with `request.apiKey` set, or answers it (401, 403,
 * 503 with a JSON body) without calling the route. The client address is the
 * raw socket's peer, whatever Fastify's own `trustProxy` says: the guard's
 * `trustedProxies` alone decide whether `X-Forwarded-For` is read.
 *
 *     const requireApiKey = createFastifyPreHandler(guard);
 *     app.get('/v1/jobs', { preHandler: requireApiKey('jobs:read') }, async (request) => ...);
 */
export function createFastifyPreHandler(guard: Guard): (...requiredScopes: string[]) => (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
  return (...requiredScopes) =>
    async (request, reply) => {
      const outcome = await guard.verifyHttpRequest(request.headers, request.raw.socket.remoteAddress, requiredScopes);
      if (outcome.allowed) {
        request.apiKey = outcome.apiKey;
        return;
      }
      // Answered here, so Fastify calls no further hook nor the route.
      await reply.code(outcome.status).headers(outcome.headers).send(outcome.body);
    };
}
