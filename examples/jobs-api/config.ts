/** The example's configuration, from the environment. */
export interface JobsApiConfig {
  /** `EXAMPLE_PORT`: the HTTP port; 0 picks a free one (logged). */
  readonly port: number;
  /** `KEYWARD_ADDR`: the keyward to ask, `host:port`. */
  readonly keywardAddress: string;
  /** `KEYWARD_VERIFIER_TOKEN`: sent with Verify when set. */
  readonly verifierToken: string | undefined;
  /** `EXAMPLE_TRUSTED_PROXIES`: comma-separated addresses and CIDR ranges whose X-Forwarded-For is believed. */
  readonly trustedProxies: readonly string[];
}

export const JOBS_API_DEFAULTS = {
  port: 8080,
  keywardAddress: '127.0.0.1:50051',
} as const satisfies Partial<JobsApiConfig>;

/**
 * Reads the configuration from `env` (pure, so tests pass literal objects).
 * A bad value throws naming the variable and the value; an unset one takes
 * its default. Trusted-proxy entries are checked by the guard itself.
 */
export function configureFromEnv(env: Readonly<Record<string, string | undefined>>): JobsApiConfig {
  const portText = env.EXAMPLE_PORT ?? '';
  const port = portText === '' ? JOBS_API_DEFAULTS.port : Number(portText);
  if ((portText !== '' && !/^\d{1,5}$/.test(portText)) || port > 65535) {
    throw new Error(`EXAMPLE_PORT: ${JSON.stringify(portText)} is not a port (0 to 65535)`);
  }
  const keywardAddress = env.KEYWARD_ADDR === undefined || env.KEYWARD_ADDR === '' ? JOBS_API_DEFAULTS.keywardAddress : env.KEYWARD_ADDR;
  if (!/^.+:\d{1,5}$/.test(keywardAddress)) throw new Error(`KEYWARD_ADDR: ${JSON.stringify(keywardAddress)} is not host:port`);
  const trustedProxies = (env.EXAMPLE_TRUSTED_PROXIES ?? '')
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry.length > 0);
  const verifierToken = env.KEYWARD_VERIFIER_TOKEN === '' ? undefined : env.KEYWARD_VERIFIER_TOKEN;
  return { port, keywardAddress, verifierToken, trustedProxies };
}
