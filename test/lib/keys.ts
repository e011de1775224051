/** Fixed keys for the packet tests and benchmarks, so that their runs repeat: a Keyed policy's current and previous key. */
export const KEYED_KEY = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
export const KEYED_KEY_PREVIOUS = Buffer.from('f0e0d0c0b0a090807060504030201000', 'hex');
