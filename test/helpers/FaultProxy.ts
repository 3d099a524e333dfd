import net from 'node:net';
import { testDatabaseUrl } from './env';

export type ProxyMode = 'pass' | 'stall' | 'refuse';

/**
 * A TCP proxy of a test's own between keyward and a dependency, which can
 * refuse new connections, cut the open ones, or stall traffic both ways
 * (bytes are held, not lost, until `pass` again). It never touches the
 * shared server behind it, so parallel tests are unaffected.
 */
export class FaultProxy {
  private readonly server: net.Server;
  private readonly pairs = new Set<{ client: net.Socket; upstream: net.Socket; held: Array<[net.Socket, Buffer]> }>();
  private mode: ProxyMode = 'pass';
  /** Milliseconds by which bytes from the dependency back to keyward are held. */
  private responseDelayMs = 0;
  /** When set, only connections whose first bytes (PostgreSQL's startup message) hold this text are delayed. */
  private delayOnly: string | undefined;
  /** Delayed deliveries not made yet (cleared by close). */
  private readonly delayedWrites = new Set<NodeJS.Timeout>();
  port = 0;

  private constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {
    this.server = net.createServer((client) => this.accept(client));
  }

  static async start(targetHost: string, targetPort: number): Promise<FaultProxy> {
    const proxy = new FaultProxy(targetHost, targetPort);
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    proxy.port = (proxy.server.address() as net.AddressInfo).port;
    return proxy;
  }

  /** A proxy in front of the run's test database (see `databaseUrl`). */
  static toTestDatabase(): Promise<FaultProxy> {
    const target = new URL(testDatabaseUrl());
    return FaultProxy.start(target.hostname, Number(target.port || 5432));
  }

  /** The run's test database, reached through this proxy. */
  databaseUrl(): string {
    const url = new URL(testDatabaseUrl());
    url.hostname = '127.0.0.1';
    url.port = String(this.port);
    return url.toString();
  }

  get connections(): number {
    return this.pairs.size;
  }

  /** Lets traffic through again, delivering what a stall held. */
  pass(): void {
    this.mode = 'pass';
    for (const pair of this.pairs) {
      for (const [to, data] of pair.held.splice(0)) to.write(data);
    }
  }

  /**
   * Delays what the dependency sends back by `ms` (order kept): a query runs
   * at once, its answer arrives late, as from a slow network.
   */
  delayResponses(ms: number, onlyConnectionsMentioning?: string): void {
    this.responseDelayMs = ms;
    this.delayOnly = onlyConnectionsMentioning;
  }

  /** Chunks delivered late by delayResponses so far. */
  delayedDelivered = 0;
  private readonly delayedWaiters = new Set<() => void>();

  /** Resolves once `count` more chunks than now have been delivered late (the delay is in effect). */
  waitDelayed(count = 1, timeoutMs = 15_000): Promise<void> {
    const target = this.delayedDelivered + count;
    return new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (this.delayedDelivered < target) return;
        clearTimeout(timer);
        this.delayedWaiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.delayedWaiters.delete(check);
        reject(new Error(`fewer than ${count} delayed deliveries within ${timeoutMs} ms`));
      }, timeoutMs);
      this.delayedWaiters.add(check);
    });
  }

  /** Holds every byte in both directions; connections stay open. */
  stall(): void {
    this.mode = 'stall';
  }

  /** Closes new connections at once (existing ones are left alone; see cut). */
  refuse(): void {
    this.mode = 'refuse';
  }

  /** Resets every open connection. */
  cut(): void {
    for (const pair of this.pairs) {
      for (const socket of [pair.client, pair.upstream]) {
        // resetAndDestroy on a socket still connecting waits for the connection, which on a
        // loaded machine may take long or never come: destroy such a socket at once.
        if (socket.connecting) socket.destroy();
        else socket.resetAndDestroy();
      }
    }
    this.pairs.clear();
  }

  async close(): Promise<void> {
    for (const timer of this.delayedWrites) clearTimeout(timer);
    this.delayedWrites.clear();
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /**
   * Resolves once the proxy holds (stalled or delayed, not yet delivered) the
   * whole answer, up to ReadyForQuery, to a request whose bytes contained
   * `text`: PostgreSQL ran that statement to its end (outside a transaction:
   * committed it) and its client does not know yet.
   */
  heldAnswerTo(text: string, timeoutMs = 15_000): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        text,
        resolve: () => {
          clearTimeout(timer);
          this.answerWaiters.delete(waiter);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.answerWaiters.delete(waiter);
        reject(new Error(`no answer to a request with ${JSON.stringify(text)} was held within ${timeoutMs} ms`));
      }, timeoutMs);
      this.answerWaiters.add(waiter);
    });
  }

  /** While set, answers to requests whose bytes contain this text are held (see holdAnswersTo). */
  private holdText: string | undefined;
  /** Connections with answers held by holdAnswersTo, with what is held (in order). */
  private readonly holding = new Map<object, { to: net.Socket; chunks: Buffer[] }>();

  /**
   * Holds what the dependency sends back to a request whose bytes contain
   * `text` (e.g. a key's hash in a lookup's parameters), and everything after
   * it on that connection, until `releaseAnswers`; other requests and other
   * connections (a new connection's start-up too) flow as usual. With
   * heldAnswerTo(text): the statement ran and its client has not heard back.
   */
  holdAnswersTo(text: string): void {
    this.holdText = text;
  }

  /** Stops holding (holdAnswersTo) and delivers what was held, in order. */
  releaseAnswers(): void {
    this.holdText = undefined;
    for (const { to, chunks } of this.holding.values()) for (const data of chunks) if (to.writable) to.write(data);
    this.holding.clear();
  }

  /** Client bytes since the last complete answer, per connection, while someone waits in heldAnswerTo or holdAnswersTo holds. */
  private readonly requests = new WeakMap<object, string>();
  private readonly answerWaiters = new Set<{ text: string; resolve: () => void }>();

  /** Whether this chunk from the dependency is held by holdAnswersTo (decided before watchAnswers ends the request). */
  private holdsAnswer(pair: object): boolean {
    if (this.holding.has(pair)) return true;
    return this.holdText !== undefined && (this.requests.get(pair) ?? '').includes(this.holdText);
  }

  private watchAnswers(pair: object, data: Buffer, fromDependency: boolean, held: boolean): void {
    if (this.answerWaiters.size === 0 && this.holdText === undefined) {
      this.requests.delete(pair);
      return;
    }
    if (!fromDependency) {
      this.requests.set(pair, (this.requests.get(pair) ?? '') + data.toString('latin1'));
      return;
    }
    // ReadyForQuery ends every answer: 'Z', length 5, transaction status.
    if (data.length < 6 || data[data.length - 6] !== 0x5a || data.readInt32BE(data.length - 5) !== 5) return;
    const request = this.requests.get(pair) ?? '';
    this.requests.delete(pair);
    if (!held) return;
    for (const waiter of [...this.answerWaiters]) if (request.includes(waiter.text)) waiter.resolve();
  }

  private accept(client: net.Socket): void {
    if (this.mode === 'refuse') {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(this.targetPort, this.targetHost);
    const pair = { client, upstream, held: [] as Array<[net.Socket, Buffer]>, startup: undefined as string | undefined, lastDelayedAt: 0 };
    this.pairs.add(pair);
    const forward = (to: net.Socket, delayed: boolean) => (data: Buffer) => {
      if (!delayed) pair.startup ??= data.toString('latin1');
      const wanted = delayed && (this.delayOnly === undefined || pair.startup?.includes(this.delayOnly) === true) ? this.responseDelayMs : 0;
      // Never ahead of a chunk still waiting out an earlier (longer) delay in this direction: no network reorders a connection's bytes.
      const delay = delayed ? Math.max(wanted, pair.lastDelayedAt - performance.now()) : 0;
      if (delayed && delay > 0) pair.lastDelayedAt = performance.now() + delay;
      const holdAnswer = delayed && this.holdsAnswer(pair);
      this.watchAnswers(pair, data, delayed, this.mode === 'stall' || delay > 0 || holdAnswer);
      if (holdAnswer) {
        const holding = this.holding.get(pair) ?? { to, chunks: [] };
        holding.chunks.push(data);
        this.holding.set(pair, holding);
      }
      else if (this.mode === 'stall') pair.held.push([to, data]);
      else if (delay > 0) {
        const timer = setTimeout(() => {
          this.delayedWrites.delete(timer);
          if (to.writable) to.write(data);
          this.delayedDelivered++;
          for (const waiter of [...this.delayedWaiters]) waiter();
        }, delay);
        this.delayedWrites.add(timer);
      }
      else to.write(data);
    };
    client.on('data', forward(upstream, false));
    upstream.on('data', forward(client, true));
    const end = () => {
      this.pairs.delete(pair);
      this.holding.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on('error', end);
      socket.on('close', end);
    }
  }
}
