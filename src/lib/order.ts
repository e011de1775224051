/**
 * Orders strings by their UTF-16 code units, as Go's sort.Strings and `kubectl` do: the same
 * order on every host, whatever its locale, for names that are ASCII in all but rare cases.
 *
 * `String.prototype.localeCompare` orders by the host locale's collation instead (hyphens
 * ignored at first, case folded), is slow per comparison, and its first call makes V8 open the
 * collation data of every locale ICU carries to list the available ones: about 2 MiB of the
 * Node binary's ICU data brought into every process that sorts once.
 */
export function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Orders objects by a string key, in code-unit order (`compareText`). */
export function by<T>(key: (x: T) => string): (a: T, b: T) => number {
  return (a, b) => compareText(key(a), key(b));
}
