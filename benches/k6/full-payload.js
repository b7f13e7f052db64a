// Full package downloads (the gzip tar) over the fleet's queries, from a constant number
// of virtual users, without If-None-Match: every binary is sent.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 benches/k6/full-payload.js
//
// Settings: VUS (4), DURATION (30s), DISCARD (false), MIN_RECEIVE_MIB_S (10),
// P99_MS (5000), SLEEP_MS (0), EXPECT_LENGTH (true), plus the shared ones in
// lib/fleet.js (BASE_URL, QUERIES, MAX_FAILED_RATE, MIN_CHECKS_RATE).

import { sleep } from 'k6';
import {
  QUERIES,
  checkFull,
  envBool,
  envDuration,
  envNumber,
  getFull,
  pickOne,
  requireReady,
  withCommonOptions,
} from './lib/fleet.js';

const VUS = envNumber('VUS', 4, { min: 1, integer: true });
const DURATION = envDuration('DURATION', '30s');
/**
 * Discard bodies as they arrive (responseType 'none') instead of keeping them as bytes:
 * lighter on k6, but the Content-Length and gzip-magic checks are skipped.
 */
const DISCARD = envBool('DISCARD', false);
/** Lowest acceptable average receive rate over the run, in MiB per second. */
const MIN_RECEIVE_MIB_S = envNumber('MIN_RECEIVE_MIB_S', 10, { min: 0 });
/** Limit of the 99th percentile of a whole download's duration, in milliseconds. */
const P99_MS = envNumber('P99_MS', 5000, { min: 0 });
const SLEEP_MS = envNumber('SLEEP_MS', 0, { min: 0 });

export const options = withCommonOptions({
  scenarios: {
    full: {
      executor: 'constant-vus',
      vus: VUS,
      duration: DURATION,
    },
  },
  thresholds: {
    data_received: [`rate>${Math.round(MIN_RECEIVE_MIB_S * 1024 * 1024)}`],
    'http_req_duration{payload:full}': [`p(99)<${P99_MS}`],
  },
});

export function setup() {
  requireReady();
}

export default function () {
  const q = pickOne(QUERIES);
  const res = getFull(q, DISCARD ? 'none' : 'binary');
  checkFull(res);
  if (SLEEP_MS > 0) sleep(SLEEP_MS / 1000);
}
