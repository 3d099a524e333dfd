import ipaddr from 'ipaddr.js';
import { LIMITS } from './fields';
import { ipv4Compatible, parseDottedQuad } from './ipWhitelist';

/**
 * The one form in which keyward keeps or compares a caller's `client_ip`:
 * the canonical text of the address (IPv4 as four decimal parts,
 * IPv4-mapped IPv6 as the IPv4 address it means, other IPv6 compressed and
 * lower-case, RFC 5952), or '' when it is not an address. Never the caller's
 * string: what is recorded as `last_used_ip` and shown to a dashboard is
 * only ever this.
 *
 * Refused as unparseable (''): IPv4 with leading zeros or fewer than four
 * parts (ambiguous: `010.0.0.1` is 8.0.0.1 to some parsers), IPv6 zone ids
 * (`fe80::1%eth0`: a zone names an interface of the caller's host, not an
 * address). The IPv4-compatible `::1.2.3.4` is the IPv6 address `::102:304`
 * (RFC 4291), not 1.2.3.4, and anything over LIMITS.clientIpLength characters (Verify
 * refuses that as INVALID_ARGUMENT before it gets here).
 *
 * A dotted-quad IPv4 address, the common case, is returned as it came, with
 * no allocation.
 */
export function canonicalClientIp(raw: string): string {
  if (parseDottedQuad(raw) >= 0) return raw;
  if (raw.length === 0 || raw.length > LIMITS.clientIpLength || !raw.includes(':') || raw.includes('%')) return '';
  if (!ipaddr.IPv6.isValid(raw)) return '';
  const compatible = ipv4Compatible(raw);
  if (compatible !== undefined) return compatible?.toString() ?? '';
  const address = ipaddr.IPv6.parse(raw);
  return address.isIPv4MappedAddress() ? address.toIPv4Address().toString() : address.toString();
}
