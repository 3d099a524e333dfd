import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { waitUntil } from './waitUntil';

const run = promisify(execFile);

/** Whether `port` can be listened on now. */
function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

const taken = new Set<number>();

/**
 * A free port P whose cluster bus port (P + 10000, fixed by Redis) is free
 * too. Both are below Linux's ephemeral range (32768 up), so that neither a
 * listen(0) elsewhere in the run nor an outgoing connection takes them
 * between this check and redis-server's start.
 */
async function freeClusterPort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 16_000 + Math.floor(Math.random() * 6_000);
    if (taken.has(port) || taken.has(port + 10_000)) continue;
    if ((await isFree(port)) && (await isFree(port + 10_000))) {
      taken.add(port);
      return port;
    }
  }
  throw new Error('no free port pair (P, P + 10000) for a Redis Cluster node between 16000 and 32000');
}

/** Fails with how to install them when redis-server or redis-cli is missing. */
function requireRedisBinaries(): void {
  for (const binary of ['redis-server', 'redis-cli']) {
    const found = spawnSync(binary, ['--version'], { stdio: 'ignore' });
    if (found.error !== undefined || found.status !== 0) {
      throw new Error(`${binary} not found on PATH: the Redis Cluster tests start a cluster of their own (install it with \`apt-get install redis-server\`, which brings redis-cli too)`);
    }
  }
}

/** One redis-server of the cluster. */
export interface ClusterNode {
  readonly port: number;
  readonly child: ChildProcess;
}

/**
 * A Redis Cluster of a test's own: `masters` redis-server processes on free
 * loopback ports (and `replicas` replicas of each), no persistence, joined
 * with `redis-cli --cluster create`, started once cluster_state:ok holds on
 * every node and every replica is in sync. Stop it in `after`.
 */
export class RedisCluster {
  private constructor(
    readonly nodes: ClusterNode[],
    private readonly dir: string,
  ) {}

  static async start(masters = 3, replicas = 0): Promise<RedisCluster> {
    requireRedisBinaries();
    const dir = mkdtempSync(path.join(tmpdir(), 'keyward-cluster-'));
    const nodes: ClusterNode[] = [];
    const cluster = new RedisCluster(nodes, dir);
    try {
      for (let i = 0; i < masters * (1 + replicas); i++) {
        const port = await freeClusterPort();
        const child = spawn(
          'redis-server',
          [
            '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
            '--cluster-config-file', path.join(dir, `nodes-${port}.conf`), '--save', '', '--appendonly', 'no',
            '--loglevel', 'warning', '--dir', dir,
          ],
          { stdio: 'ignore' },
        );
        nodes.push({ port, child });
      }
      for (const node of nodes) await waitUntil(`redis-server on port ${node.port} answering`, () => cluster.answers(node), { timeoutMs: 10_000 });
      await run('redis-cli', ['--cluster', 'create', ...nodes.map((node) => `127.0.0.1:${node.port}`), '--cluster-replicas', String(replicas), '--cluster-yes'], { timeout: 20_000 });
      await waitUntil('cluster_state:ok on every node, every replica in sync', () => cluster.allOk(), { timeoutMs: 20_000, intervalMs: 50 });
      return cluster;
    } catch (error) {
      await cluster.stop();
      throw error;
    }
  }

  /** REDIS_CLUSTER_NODES for keyward: every node (keyward needs only one to discover the rest). */
  get nodesEnv(): string {
    return this.nodes.map((node) => `127.0.0.1:${node.port}`).join(',');
  }

  /** A plain client of one node, for the test itself (close it). */
  client(node: ClusterNode): Redis {
    return new Redis({ host: '127.0.0.1', port: node.port, maxRetriesPerRequest: 1 });
  }

  /** Kills every node and removes the folder. */
  async stop(): Promise<void> {
    await Promise.all(
      this.nodes.map(async ({ child }) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        await exited;
      }),
    );
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async answers(node: ClusterNode): Promise<boolean> {
    if (node.child.exitCode !== null) throw new Error(`redis-server on port ${node.port} exited with ${node.child.exitCode}`);
    return (await this.ask(node, 'PING')).startsWith('+PONG');
  }

  /** The replica of the master on `port` (the first one INFO replication lists). */
  async replicaOf(port: number): Promise<ClusterNode> {
    const master = this.nodes.find((node) => node.port === port) as ClusterNode;
    const replica = Number(/^slave0:.*port=(\d+)/m.exec(await this.ask(master, 'INFO replication'))?.[1]);
    const node = this.nodes.find((candidate) => candidate.port === replica);
    if (node === undefined) throw new Error(`no replica of the master on port ${port}`);
    return node;
  }

  /**
   * A manual failover (CLUSTER FAILOVER on `replica`: no write lost, a new
   * server and run_id for its slots); resolves once it is a master and the
   * cluster is ok everywhere again.
   */
  async failover(replica: ClusterNode): Promise<void> {
    const answer = await this.ask(replica, 'CLUSTER FAILOVER');
    if (!answer.startsWith('+OK')) throw new Error(`CLUSTER FAILOVER on port ${replica.port} answered ${answer}`);
    await waitUntil(`port ${replica.port} promoted`, async () => (await this.ask(replica, 'INFO replication')).includes('role:master'), { timeoutMs: 15_000, intervalMs: 50 });
    await waitUntil('cluster_state:ok on every node after the failover', () => this.allOk(), { timeoutMs: 15_000, intervalMs: 50 });
  }

  private async allOk(): Promise<boolean> {
    const [infos, replications] = await Promise.all([
      Promise.all(this.nodes.map((node) => this.ask(node, 'CLUSTER INFO'))),
      Promise.all(this.nodes.map((node) => this.ask(node, 'INFO replication'))),
    ]);
    return infos.every((info) => info.includes('cluster_state:ok')) && replications.every((info) => info.includes('role:master') || info.includes('master_link_status:up'));
  }

  /** One inline command over a fresh socket; answers '' when the node cannot be reached. */
  private ask(node: ClusterNode, command: string): Promise<string> {
    return new Promise((resolve) => {
      const socket = net.connect(node.port, '127.0.0.1');
      let reply = '';
      socket.setTimeout(2_000, () => {
        socket.destroy();
        resolve(reply);
      });
      socket.once('connect', () => socket.write(`${command}\r\n`));
      socket.on('data', (data) => {
        reply += data.toString();
        // A bulk string (CLUSTER INFO) ends with its payload and CRLF; a simple string with its line.
        const bulk = /^\$(\d+)\r\n/.exec(reply);
        if (bulk === null ? reply.endsWith('\r\n') : reply.length >= bulk[0].length + Number(bulk[1]) + 2) {
          socket.destroy();
          resolve(reply);
        }
      });
      socket.once('error', () => resolve(''));
    });
  }
}
