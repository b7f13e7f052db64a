// A fleet of devices in different states, asking for their packages with and without
// If-None-Match. setup() fetches each query's metadata (and HEADs its full payload) to
// learn the binaries' MD5 digests and the responses' ETags; each iteration is then one
// device of one kind:
//
//   none     no If-None-Match                                   expects 200
//   partial  every digest but one, plus one of another package  expects 200, smaller
//   digests  every digest of the package                        expects 304
//   etag     the ETag of the response it would get              expects 304
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 benches/k6/etag-mix.js
//
// Settings: VUS (8), DURATION (30s), PAYLOAD (full or metadata; full), MIX
// (none=4,partial=3,digests=2,etag=1), MIN_EXPECTED_RATE (0.999), P99_MS (50 for
// metadata, 5000 for full), SLEEP_MS (0), plus the shared ones in lib/fleet.js.

import { check, sleep } from 'k6';
import { Counter, Rate } from 'k6/metrics';
import {
  QUERIES,
  appDetails,
  checkFull,
  checkMetadata,
  checkNotModified,
  envDuration,
  envNumber,
  envString,
  envWeights,
  getFull,
  getMetadata,
  header,
  ifNoneMatch,
  learnPackage,
  pickOne,
  pickWeighted,
  requireReady,
  withCommonOptions,
} from './lib/fleet.js';

/** @import { LearnedPackage, Payload } from './lib/fleet.js' */

/** @typedef {'none' | 'partial' | 'digests' | 'etag'} Kind */

/** @type {readonly Kind[]} */
const KINDS = ['none', 'partial', 'digests', 'etag'];

const PAYLOAD = /** @type {Payload} */ (envString('PAYLOAD', 'full'));
if (PAYLOAD !== 'full' && PAYLOAD !== 'metadata') {
  throw new Error(`PAYLOAD must be full or metadata, got ${JSON.stringify(PAYLOAD)}`);
}
const VUS = envNumber('VUS', 8, { min: 1, integer: true });
const DURATION = envDuration('DURATION', '30s');
const MIX = envWeights('MIX', KINDS, 'none=4,partial=3,digests=2,etag=1');
/** Smallest share of each kind's responses that must have the kind's status. */
const MIN_EXPECTED_RATE = envNumber('MIN_EXPECTED_RATE', 0.999, { min: 0, max: 1 });
const P99_MS = envNumber('P99_MS', PAYLOAD === 'metadata' ? 50 : 5000, { min: 0 });
const SLEEP_MS = envNumber('SLEEP_MS', 0, { min: 0 });

/** @type {Record<Kind, number>} */
const EXPECTED_STATUS = { none: 200, partial: 200, digests: 304, etag: 304 };

/**
 * Per kind: requests sent, whether each got the kind's status, and bytes of body
 * received (Content-Length; 0 for a 304).
 * @type {Record<Kind, { requests: Counter, expected: Rate, bytes: Counter }>}
 */
const METRICS = {
  none: kindMetrics('none'),
  partial: kindMetrics('partial'),
  digests: kindMetrics('digests'),
  etag: kindMetrics('etag'),
};

/**
 * @param {Kind} kind
 * @returns {{ requests: Counter, expected: Rate, bytes: Counter }}
 */
function kindMetrics(kind) {
  return {
    requests: new Counter(`devices_${kind}_requests`),
    expected: new Rate(`devices_${kind}_expected_status`),
    bytes: new Counter(`devices_${kind}_bytes`),
  };
}

/** @type {{ [metric: string]: string[] }} */
const kindThresholds = {};
for (const kind of KINDS) {
  // A Rate with no samples would fail its threshold: kinds left out of MIX get none.
  if (MIX[kind] > 0) kindThresholds[`devices_${kind}_expected_status`] = [`rate>=${MIN_EXPECTED_RATE}`];
}

export const options = withCommonOptions({
  scenarios: {
    devices: {
      executor: 'constant-vus',
      vus: VUS,
      duration: DURATION,
    },
  },
  thresholds: {
    ...kindThresholds,
    [`http_req_duration{payload:${PAYLOAD}}`]: [`p(99)<${P99_MS}`],
  },
});

/**
 * @typedef {{ packages: LearnedPackage[] }} SetupData
 */

/** @returns {SetupData} */
export function setup() {
  requireReady();
  return { packages: QUERIES.map(learnPackage) };
}

/**
 * The If-None-Match tags a device of this kind sends, and the app it lacks (partial).
 * @param {Kind} kind
 * @param {LearnedPackage} pkg
 * @param {readonly LearnedPackage[]} all
 * @returns {{ tags: string[], missingApp?: string }}
 */
function deviceTags(kind, pkg, all) {
  switch (kind) {
    case 'none':
      return { tags: [] };
    case 'digests':
      return { tags: pkg.digests.map((d) => d.md5) };
    case 'etag':
      return { tags: [PAYLOAD === 'metadata' ? pkg.metadataEtag : pkg.fullEtag] };
    case 'partial': {
      const missing = pickOne(pkg.digests);
      const own = new Set(pkg.digests.map((d) => d.md5));
      // A digest from another query's package stands for a binary the device has that
      // this package does not select (an older version, another channel): ignored.
      const outdated = all.flatMap((p) => p.digests.map((d) => d.md5)).filter((md5) => !own.has(md5));
      const tags = pkg.digests.filter((d) => d !== missing).map((d) => d.md5);
      if (outdated.length > 0) tags.push(pickOne(outdated));
      return { tags, missingApp: missing.app };
    }
  }
}

/** @param {SetupData} data */
export default function (data) {
  const pkg = pickOne(data.packages);
  const kind = pickWeighted(MIX);
  const { tags, missingApp } = deviceTags(kind, pkg, data.packages);
  const expected = EXPECTED_STATUS[kind];
  const extra = { ifNoneMatch: ifNoneMatch(tags), tags: { kind } };
  const checkTags = { kind };
  const metrics = METRICS[kind];

  if (PAYLOAD === 'metadata') {
    const res = getMetadata(pkg.q, extra);
    record(metrics, res, expected);
    if (expected === 304) {
      checkNotModified(res, checkTags);
    } else {
      const details = checkMetadata(res, pkg.q, checkTags);
      if (details !== null && missingApp !== undefined) {
        check(
          details,
          {
            'partial: the missing app has status_code 200': (d) => appDetails(d, missingApp)?.status_code === 200,
            'partial: every known app has status_code 304': (d) =>
              pkg.digests.every((x) => x.app === missingApp || appDetails(d, x.app)?.status_code === 304),
          },
          checkTags,
        );
      }
    }
  } else {
    const res = getFull(pkg.q, 'none', extra);
    record(metrics, res, expected);
    if (expected === 304) {
      checkNotModified(res, checkTags);
    } else {
      checkFull(res, checkTags);
      // With one binary, the device knows none of the package's own binaries: it gets
      // the whole package, with its ETag.
      if (missingApp !== undefined && pkg.digests.length > 1) {
        check(
          res,
          {
            'partial: ETag differs from the whole package': (r) => header(r, 'ETag') !== pkg.fullEtag,
          },
          checkTags,
        );
      }
    }
  }
  if (SLEEP_MS > 0) sleep(SLEEP_MS / 1000);
}

/**
 * Adds one response to its kind's metrics.
 * @param {{ requests: Counter, expected: Rate, bytes: Counter }} metrics
 * @param {{ status: number, headers: { [name: string]: string } }} res
 * @param {number} expected
 */
function record(metrics, res, expected) {
  metrics.requests.add(1);
  metrics.expected.add(res.status === expected);
  const length = Number(header(res, 'Content-Length') ?? 0);
  metrics.bytes.add(Number.isFinite(length) ? length : 0);
}
