/*
 * Goal: the POSIX suite (posix-suite.ts) through the kernel transport, our
 * own FUSE protocol over /dev/fuse, which `scoutfs mount` uses by default.
 */
import { posixSuite } from './posix-suite.js';

posixSuite('kernel');
