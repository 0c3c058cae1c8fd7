/*
 * Human-readable sizes as scoutfs utilities print them: binary units with
 * two decimals ("2.00 GB"), and parsing of size arguments with K/M/G/T/P
 * suffixes (binary) for -m/-d.
 */
const UNITS = ['B', 'KB', 'MB', 'GB', 'TB', 'PB', 'EB'];

export function formatSize(bytes: bigint, sep = ' '): string {
  let v = Number(bytes);
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) { v /= 1024; u++; }
  return `${v.toFixed(2)}${sep}${UNITS[u]}`;
}

const SUFFIX: Record<string, bigint> = { '': 1n, K: 1n << 10n, M: 1n << 20n, G: 1n << 30n, T: 1n << 40n, P: 1n << 50n };

/** Parse "123", "64G", "2T", "1.5G" (binary units); null if invalid. */
export function parseSize(s: string): bigint | null {
  const m = /^(\d+)(?:\.(\d+))?\s*([KMGTP]?)(?:i?B)?$/i.exec(s.trim());
  if (!m) return null;
  const mult = SUFFIX[m[3]!.toUpperCase()]!;
  const whole = BigInt(m[1]!) * mult;
  if (!m[2]) return whole;
  const frac = (BigInt(m[2]) * mult) / 10n ** BigInt(m[2].length);
  return whole + frac;
}
