// An open-model load: new requests start at a rate that follows STAGES, whether or not
// earlier ones have finished (ramping-arrival-rate). Each iteration is a metadata-only
// request or a full download, in the proportions of MIX, over the fleet's queries.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e STAGES=30s:20,1m:20,30s:0 benches/k6/ramping.js
//
// Settings: STAGES (20s:5,40s:20,20s:40,20s:0), START_RATE (1), TIME_UNIT (1s),
// PRE_VUS (10), MAX_VUS (50), MIX (metadata=4,full=1), DISCARD (true),
// MAX_DROPPED (0), METADATA_P99_MS (50), FULL_P99_MS (5000), plus the shared ones in
// lib/fleet.js (BASE_URL, QUERIES, MAX_FAILED_RATE, MIN_CHECKS_RATE, EXPECT_LENGTH).

import {
  QUERIES,
  checkFull,
  checkMetadata,
  envBool,
  envDuration,
  envNumber,
  envStages,
  envWeights,
  getFull,
  getMetadata,
  pickOne,
  pickWeighted,
  requireReady,
  withCommonOptions,
} from './lib/fleet.js';

/** @import { Payload } from './lib/fleet.js' */

/** @type {readonly Payload[]} */
const PAYLOADS = ['metadata', 'full'];

/** Stages as duration:target, the target being iterations started per TIME_UNIT. */
const STAGES = envStages('STAGES', '20s:5,40s:20,20s:40,20s:0');
const START_RATE = envNumber('START_RATE', 1, { min: 0, integer: true });
const TIME_UNIT = envDuration('TIME_UNIT', '1s');
const PRE_VUS = envNumber('PRE_VUS', 10, { min: 1, integer: true });
const MAX_VUS = envNumber('MAX_VUS', 50, { min: 1, integer: true });
const MIX = envWeights('MIX', PAYLOADS, 'metadata=4,full=1');
/** Discard full payloads' bodies as they arrive instead of keeping them as bytes. */
const DISCARD = envBool('DISCARD', true);
/** Iterations k6 may skip for want of a free virtual user before the run fails. */
const MAX_DROPPED = envNumber('MAX_DROPPED', 0, { min: 0, integer: true });
const METADATA_P99_MS = envNumber('METADATA_P99_MS', 50, { min: 0 });
const FULL_P99_MS = envNumber('FULL_P99_MS', 5000, { min: 0 });

if (MAX_VUS < PRE_VUS) {
  throw new Error(`MAX_VUS (${MAX_VUS}) must be at least PRE_VUS (${PRE_VUS})`);
}

/** @type {{ [metric: string]: string[] }} */
const durationThresholds = {};
if (MIX.metadata > 0) durationThresholds['http_req_duration{payload:metadata}'] = [`p(99)<${METADATA_P99_MS}`];
if (MIX.full > 0) durationThresholds['http_req_duration{payload:full}'] = [`p(99)<${FULL_P99_MS}`];

export const options = withCommonOptions({
  scenarios: {
    ramping: {
      executor: 'ramping-arrival-rate',
      startRate: START_RATE,
      timeUnit: TIME_UNIT,
      preAllocatedVUs: PRE_VUS,
      maxVUs: MAX_VUS,
      stages: STAGES,
    },
  },
  thresholds: {
    ...durationThresholds,
    dropped_iterations: [`count<=${MAX_DROPPED}`],
  },
});

export function setup() {
  requireReady();
}

export default function () {
  const q = pickOne(QUERIES);
  if (pickWeighted(MIX) === 'metadata') {
    checkMetadata(getMetadata(q), q);
  } else {
    checkFull(getFull(q, DISCARD ? 'none' : 'binary'));
  }
}
