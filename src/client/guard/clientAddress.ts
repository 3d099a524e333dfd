import ipaddr from 'ipaddr.js';

type Address = ipaddr.IPv4 | ipaddr.IPv6;

/** The parsed `trustedProxies` of a guard: the networks whose `X-Forwarded-For` is believed. */
export interface TrustedProxies {
  readonly ranges: ReadonlyArray<readonly [Address, number]>;
}

/** `::a.b.c.d`, the deprecated IPv4-compatible form, which ipaddr.js would read as IPv4-mapped. */
const IPV4_COMPATIBLE = /^::(\d{1,3}(?:\.\d{1,3}){3})$/;
/** `[2001:db8::1]:443`, as some proxies write a hop. */
const BRACKETED = /^\[([^\]]+)\](?::\d{1,5})?$/;
/** `203.0.113.7:51234`, as some proxies write a hop. */
const IPV4_WITH_PORT = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/;

/**
 * Parses one address as a guard reads it from a socket or an
 * `X-Forwarded-For` hop, or undefined when it is no address. IPv4 only as
 * four decimal parts (`010.0.0.1` and `127.1` are refused, being read
 * differently by different parsers); IPv6 without a zone id; an
 * IPv4-mapped IPv6 address (`::ffff:127.0.0.1`, what a dual-stack socket
 * reports for an IPv4 peer) becomes the IPv4 address it means. A port, and
 * the brackets around an IPv6 address with a port, are dropped.
 */
export function parseAddress(raw: string): Address | undefined {
  let text = raw.trim();
  text = BRACKETED.exec(text)?.[1] ?? IPV4_WITH_PORT.exec(text)?.[1] ?? text;
  if (text.length === 0 || text.length > 64 || text.includes('%')) return undefined;
  if (!text.includes(':')) return ipaddr.IPv4.isValidFourPartDecimal(text) ? ipaddr.IPv4.parse(text) : undefined;
  if (!ipaddr.IPv6.isValid(text)) return undefined;
  const compatible = IPV4_COMPATIBLE.exec(text)?.[1];
  if (compatible !== undefined) {
    if (!ipaddr.IPv4.isValidFourPartDecimal(compatible)) return undefined;
    const [a, b, c, d] = ipaddr.IPv4.parse(compatible).octets as [number, number, number, number];
    return new ipaddr.IPv6([0, 0, 0, 0, 0, 0, (a << 8) | b, (c << 8) | d]);
  }
  const address = ipaddr.IPv6.parse(text);
  return address.isIPv4MappedAddress() ? address.toIPv4Address() : address;
}

/**
 * Parses a guard's `trustedProxies`: addresses (`10.0.0.7`, `::1`) and CIDR
 * ranges (`10.0.0.0/8`, `fd00::/8`). Throws naming the first entry that is
 * neither: a typo here must stop the service, not trust nobody (or everybody)
 * in silence.
 */
export function parseTrustedProxies(entries: readonly string[]): TrustedProxies {
  const ranges = entries.map((entry): readonly [Address, number] => {
    const text = entry.trim();
    const slash = text.indexOf('/');
    const address = parseAddress(slash === -1 ? text : text.slice(0, slash));
    const width = address?.kind() === 'ipv6' ? 128 : 32;
    // `::ffff:10.0.0.0/104` is written as IPv6 but parsed as the IPv4 it maps: its length counts 96 more bits.
    const mappedBits = address?.kind() === 'ipv4' && text.includes(':') ? 96 : 0;
    const bitsText = slash === -1 ? String(width + mappedBits) : text.slice(slash + 1);
    const bits = (/^\d{1,3}$/.test(bitsText) ? Number(bitsText) : -1) - mappedBits;
    if (address === undefined || bits < 0 || bits > width) {
      throw new Error(`trustedProxies: ${JSON.stringify(entry)} is not an IP address or CIDR range (e.g. 10.0.0.0/8, fd00::/8)`);
    }
    return [address, bits];
  });
  return { ranges };
}

/** Whether `address` lies in one of the trusted networks. */
export function isTrusted(address: Address, trusted: TrustedProxies): boolean {
  return trusted.ranges.some(([network, bits]) => network.kind() === address.kind() && address.match(network, bits));
}

/** The `X-Forwarded-For` hops, left (client side) to right (nearest proxy). */
export function splitForwardedFor(header: string | undefined): string[] {
  if (header === undefined) return [];
  return header
    .split(',')
    .map((hop) => hop.trim())
    .filter((hop) => hop.length > 0);
}

/**
 * The address keyward should judge: the socket's peer, unless that peer is a
 * trusted proxy, in which case `X-Forwarded-For` is walked from the right
 * past every trusted hop and the first untrusted hop is the client. Only
 * hops appended by trusted proxies are ever read, so whatever a client
 * writes into the header itself (the left part) is never chosen over what
 * the nearest trusted proxy saw. When every hop is trusted, the leftmost
 * is the client. A hop that is no address stops the walk with no address
 * (''), which a key's non-empty whitelist refuses.
 *
 * Returns the canonical text (`203.0.113.7`, `2001:db8::1`; IPv4-mapped as
 * IPv4), or '' when there is no address.
 */
export function resolveClientAddress(remoteAddress: string | undefined, forwardedFor: readonly string[], trusted: TrustedProxies): string {
  let client = parseAddress(remoteAddress ?? '');
  if (client === undefined) return '';
  for (let i = forwardedFor.length - 1; i >= 0 && isTrusted(client, trusted); i--) {
    client = parseAddress(forwardedFor[i] as string);
    if (client === undefined) return '';
  }
  return client.toString();
}
