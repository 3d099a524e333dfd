/**
 * The HTTP guard: protects REST routes with keyward's Verify, framework
 * neutral (`createGuard`) and with adapters for Express, Fastify and
 * node:http, none of which loads its framework. It keeps no cache, so a
 * revoked key is refused from the moment RevokeKey returns.
 */
export * from './clientAddress';
export * from './createGuard';
export * from './expressMiddleware';
export * from './fastifyPreHandler';
export * from './guardOutcome';
export * from './httpHeaders';
export * from './nodeHttpGuard';
