/** Reads a keyward instance's Prometheus text into `name{labels}` → value. */
export async function scrapeMetrics(port: number): Promise<Map<string, number>> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  const text = await response.text();
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const split = line.lastIndexOf(' ');
    values.set(line.slice(0, split), Number(line.slice(split + 1)));
  }
  return values;
}

/** Waits until `condition` holds of the instance's metrics. */
export async function waitForMetric(port: number, condition: (metrics: Map<string, number>) => boolean, timeoutMs = 15_000): Promise<Map<string, number>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const metrics = await scrapeMetrics(port);
    if (condition(metrics)) return metrics;
    if (Date.now() > deadline) throw new Error(`metrics condition not met in ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** One metric of a server (0 when it has not been exported yet). */
export async function metricOf(server: { readonly metricsPort?: number | undefined }, name: string): Promise<number> {
  return (await scrapeMetrics(server.metricsPort as number)).get(name) ?? 0;
}
