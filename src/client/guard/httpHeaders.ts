/**
 * Request headers as Node (`IncomingMessage.headers`), Express and Fastify
 * give them, or any plain object of them: names in any case, a value or a
 * list of values per name.
 */
export type HttpHeaders = Readonly<Record<string, string | readonly string[] | undefined>>;

/**
 * Every value of header `name` (matched in any case), in order. Node already
 * lower-cases names; a plain object from elsewhere may not, and may hold the
 * same header under two spellings.
 */
export function headerValues(headers: HttpHeaders, name: string): string[] {
  const wanted = name.toLowerCase();
  const values: string[] = [];
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() !== wanted || value === undefined) continue;
    if (typeof value === 'string') values.push(value);
    else values.push(...value);
  }
  return values;
}

/**
 * The presented API key: the `X-API-Key` value, trimmed, or '' when there is
 * none. Two values are joined as Node joins them (`a, b`), which no key
 * matches: a request is never judged on one of two keys it sent.
 */
export function apiKeyOf(headers: HttpHeaders): string {
  return headerValues(headers, 'x-api-key').join(', ').trim();
}

/** The `X-Forwarded-For` text, all its headers joined in order, or undefined when absent. */
export function forwardedForOf(headers: HttpHeaders): string | undefined {
  const values = headerValues(headers, 'x-forwarded-for');
  return values.length === 0 ? undefined : values.join(',');
}
