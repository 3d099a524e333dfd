import { canonicalClientIp } from '../keys/clientIp';

/**
 * The caller's address from a grpc-js peer string, in the canonical form of
 * `canonicalClientIp` (IPv4-mapped IPv6 as IPv4), or null when the peer is
 * no IP address (a Unix socket, `unknown`).
 *
 * grpc-js's server writes `${remoteAddress}:${remotePort}` without brackets
 * (`127.0.0.1:5000`, `::ffff:127.0.0.1:5000`, `2001:db8::1:5000`), so the
 * port is the part after the last colon; bracketed (`[::1]:5000`) and
 * `ipv4:`/`ipv6:`-prefixed forms are read too, and a peer without a port
 * (the whole string an address) is taken as it is.
 */
export function peerAddress(peer: string): string | null {
  const rest = peer.replace(/^ipv[46]:/i, '');
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(rest);
  if (bracketed !== null) return canonicalClientIp(bracketed[1] as string) || null;
  const withoutPort = /^(.+):\d+$/.exec(rest)?.[1];
  const address = (withoutPort === undefined ? '' : canonicalClientIp(withoutPort)) || canonicalClientIp(rest);
  return address === '' ? null : address;
}
