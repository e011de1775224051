/**
 * The shape of errors thrown by the native addon. Every failing libbpf call or
 * syscall throws an Error carrying the errno and the call that failed; argument
 * mistakes (wrong type, a key of the wrong size) throw a TypeError/RangeError
 * with a Node-style `code` such as 'ERR_INVALID_ARG_VALUE' and no errno.
 */

/** An Error thrown by the addon when a libbpf call or syscall failed. */
export interface NativeError extends Error {
  /**
   * errno name: 'EPERM', 'ENOENT', 'EEXIST', 'EINVAL', 'ENODEV', ...; 'ENOTSUPP' for
   * the kernel-internal 524; 'LIBBPF_ERRNO__<NAME>' for libbpf's own codes (4000+).
   */
  code: string;
  /** positive errno */
  errno: number;
  /** the libbpf function or syscall that failed, e.g. 'bpf_tc_attach', 'bpf_object__load' */
  syscall: string;
  /**
   * For a failed bpf_object__open_file / bpf_object__load: the last ~4 KiB of
   * libbpf's log, which holds the verifier's explanation of a rejected program.
   */
  log?: string;
}

/** True for errors thrown by a failing libbpf call or syscall in the addon. */
export function isNativeError(err: unknown): err is NativeError {
  if (!(err instanceof Error)) return false;
  const e = err as Partial<Record<'code' | 'errno' | 'syscall', unknown>>;
  return typeof e.code === 'string' && typeof e.errno === 'number' && typeof e.syscall === 'string';
}

/** True when err is a NativeError with one of the given codes, e.g. `hasErrno(err, 'ENOENT')`. */
export function hasErrno(err: unknown, ...codes: string[]): err is NativeError {
  return isNativeError(err) && codes.includes(err.code);
}
