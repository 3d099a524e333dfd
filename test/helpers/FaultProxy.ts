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
  delayResponses(ms: number): void {
    this.responseDelayMs = ms;
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
      pair.client.resetAndDestroy();
      pair.upstream.resetAndDestroy();
    }
    this.pairs.clear();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    if (this.mode === 'refuse') {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(this.targetPort, this.targetHost);
    const pair = { client, upstream, held: [] as Array<[net.Socket, Buffer]> };
    this.pairs.add(pair);
    const forward = (to: net.Socket, delayed: boolean) => (data: Buffer) => {
      if (this.mode === 'stall') pair.held.push([to, data]);
      else if (delayed && this.responseDelayMs > 0) setTimeout(() => to.writable && to.write(data), this.responseDelayMs);
      else to.write(data);
    };
    client.on('data', forward(upstream, false));
    upstream.on('data', forward(client, true));
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on('error', end);
      socket.on('close', end);
    }
  }
}
