/** The given percentiles (0–100) of `values` (sorted in place), nearest rank. */
export function percentiles(values: number[], ps: readonly number[]): number[] {
  values.sort((a, b) => a - b);
  return ps.map((p) => (values.length === 0 ? Number.NaN : (values[Math.min(values.length - 1, Math.ceil((p / 100) * values.length) - 1)] as number)));
}

export function mean(values: readonly number[]): number {
  return values.reduce((sum, v) => sum + v, 0) / values.length;
}

/** The middle value (the mean of the two middle ones for an even count): steadier than the mean on a noisy machine. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}
