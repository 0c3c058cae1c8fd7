/*
 * Goal: the POSIX suite (posix-suite.ts) through the second transport,
 * fuse-native (`scoutfs mount -o ...,transport=fuse-native`).
 */
import { posixSuite } from './posix-suite.js';

posixSuite('fuse-native');
