// Metadata-only requests (payloadType=metadataOnly) over the fleet's queries, from a
// constant number of virtual users.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 benches/k6/metadata.js
//
// Settings: VUS (10), DURATION (30s), P99_MS (50), SLEEP_MS (0), plus the shared ones
// in lib/fleet.js (BASE_URL, QUERIES, MAX_FAILED_RATE, MIN_CHECKS_RATE).

import { sleep } from 'k6';
import {
  QUERIES,
  checkMetadata,
  envDuration,
  envNumber,
  getMetadata,
  pickOne,
  requireReady,
  withCommonOptions,
} from './lib/fleet.js';

const VUS = envNumber('VUS', 10, { min: 1, integer: true });
const DURATION = envDuration('DURATION', '30s');
/** Limit of the 99th percentile of request duration, in milliseconds. */
const P99_MS = envNumber('P99_MS', 50, { min: 0 });
/** Pause of each virtual user between two requests, in milliseconds. */
const SLEEP_MS = envNumber('SLEEP_MS', 0, { min: 0 });

export const options = withCommonOptions({
  scenarios: {
    metadata: {
      executor: 'constant-vus',
      vus: VUS,
      duration: DURATION,
    },
  },
  thresholds: {
    'http_req_duration{payload:metadata}': [`p(99)<${P99_MS}`],
  },
});

export function setup() {
  requireReady();
}

export default function () {
  const q = pickOne(QUERIES);
  const res = getMetadata(q);
  checkMetadata(res, q);
  if (SLEEP_MS > 0) sleep(SLEEP_MS / 1000);
}
