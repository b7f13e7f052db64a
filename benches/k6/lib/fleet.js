// Shared code of the k6 scripts in benches/k6: the demo fleet's queries, the origin's
// address, settings read from the environment, request helpers and response checks.
// k6 runs this file as an ES module; tsc type-checks it through the JSDoc annotations.

import http from 'k6/http';
import { check, fail } from 'k6';

/** @import { Params, RefinedResponse, ResponseType } from 'k6/http' */
/** @import { Options, Stage, Threshold } from 'k6/options' */

// ---------------------------------------------------------------------------
// Settings from the environment (`k6 run -e NAME=value`)
// ---------------------------------------------------------------------------

/**
 * Raw value of an environment variable, or undefined when unset or empty.
 * @param {string} name
 * @returns {string | undefined}
 */
export function envRaw(name) {
  const value = __ENV[name];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

/**
 * A string setting.
 * @param {string} name
 * @param {string} fallback
 * @returns {string}
 */
export function envString(name, fallback) {
  return envRaw(name) ?? fallback;
}

/**
 * A number setting; a value that is not a finite number stops the test.
 * @param {string} name
 * @param {number} fallback
 * @param {{ min?: number, max?: number, integer?: boolean }} [limits]
 * @returns {number}
 */
export function envNumber(name, fallback, limits = {}) {
  const raw = envRaw(name);
  const value = raw === undefined ? fallback : Number(raw);
  if (!Number.isFinite(value)) {
    throw new Error(`${name} must be a number, got ${JSON.stringify(raw)}`);
  }
  if (limits.integer && !Number.isInteger(value)) {
    throw new Error(`${name} must be a whole number, got ${value}`);
  }
  if (limits.min !== undefined && value < limits.min) {
    throw new Error(`${name} must be at least ${limits.min}, got ${value}`);
  }
  if (limits.max !== undefined && value > limits.max) {
    throw new Error(`${name} must be at most ${limits.max}, got ${value}`);
  }
  return value;
}

/**
 * A yes/no setting: true, 1, yes or on; false, 0, no or off.
 * @param {string} name
 * @param {boolean} fallback
 * @returns {boolean}
 */
export function envBool(name, fallback) {
  const raw = envRaw(name);
  if (raw === undefined) return fallback;
  const lower = raw.toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(lower)) return true;
  if (['false', '0', 'no', 'off'].includes(lower)) return false;
  throw new Error(`${name} must be true or false, got ${JSON.stringify(raw)}`);
}

const DURATION = /^(\d+(\.\d+)?(ms|s|m|h))+$/;

/**
 * A duration in k6's notation (`30s`, `2m`, `1m30s`, `500ms`).
 * @param {string} name
 * @param {string} fallback
 * @returns {string}
 */
export function envDuration(name, fallback) {
  const value = envString(name, fallback);
  if (!DURATION.test(value)) {
    throw new Error(`${name} must be a duration such as 30s, 2m or 1m30s, got ${JSON.stringify(value)}`);
  }
  return value;
}

/**
 * Stages of a ramping executor, written `duration:target` and separated by commas,
 * for example `30s:10,1m:50,30s:0`.
 * @param {string} name
 * @param {string} fallback
 * @returns {Stage[]}
 */
export function envStages(name, fallback) {
  const spec = envString(name, fallback);
  return spec.split(',').map((part) => {
    const [duration = '', target = '', ...rest] = part.trim().split(':');
    const value = Number(target);
    if (rest.length > 0 || !DURATION.test(duration) || target === '' || !Number.isInteger(value) || value < 0) {
      throw new Error(`${name}: a stage is written duration:target, such as 30s:10, got ${JSON.stringify(part)}`);
    }
    return { duration, target: value };
  });
}

/**
 * Relative weights of named kinds of requests, written `name=weight` and separated by
 * commas, for example `metadata=4,full=1`. Kinds left out of the value get weight 0;
 * unknown names stop the test.
 * @template {string} K
 * @param {string} name
 * @param {readonly K[]} kinds
 * @param {string} fallback
 * @returns {Record<K, number>}
 */
export function envWeights(name, kinds, fallback) {
  const spec = envString(name, fallback);
  const weights = /** @type {Record<K, number>} */ ({});
  for (const kind of kinds) weights[kind] = 0;
  for (const part of spec.split(',')) {
    const [key = '', weight = '', ...rest] = part.trim().split('=');
    const value = Number(weight);
    const kind = kinds.find((k) => k === key.trim());
    if (kind === undefined || rest.length > 0 || weight.trim() === '' || !Number.isFinite(value) || value < 0) {
      throw new Error(`${name}: expected name=weight with a name of ${kinds.join(', ')}, got ${JSON.stringify(part)}`);
    }
    weights[kind] = value;
  }
  if (kinds.every((kind) => weights[kind] === 0)) {
    throw new Error(`${name}: at least one weight must be above 0`);
  }
  return weights;
}

/**
 * Picks a kind at random in proportion to its weight.
 * @template {string} K
 * @param {Record<K, number>} weights
 * @returns {K}
 */
export function pickWeighted(weights) {
  const kinds = /** @type {K[]} */ (Object.keys(weights));
  const total = kinds.reduce((sum, kind) => sum + weights[kind], 0);
  let point = Math.random() * total;
  for (const kind of kinds) {
    point -= weights[kind];
    if (point < 0) return kind;
  }
  // Rounding can leave the point at the very end: the last kind with a weight takes it.
  const last = kinds.filter((kind) => weights[kind] > 0).pop();
  if (last === undefined) throw new Error('no kind has a weight above 0');
  return last;
}

/**
 * One element of a list, chosen uniformly at random.
 * @template T
 * @param {readonly T[]} items
 * @returns {T}
 */
export function pickOne(items) {
  const item = items[Math.floor(Math.random() * items.length)];
  if (item === undefined) throw new Error('cannot pick from an empty list');
  return item;
}

// ---------------------------------------------------------------------------
// The origin and the fleet
// ---------------------------------------------------------------------------

/** Address of the origin, without a trailing slash. */
export const BASE_URL = envString('BASE_URL', 'http://127.0.0.1:8080').replace(/\/+$/, '');

/**
 * A device's query string and the OS app it always selects (`os_<cpuArch>`).
 * @typedef {{ query: string, osApp: string }} FleetQuery
 */

/** The AWS sample's four requests against the demo fleet. */
export const DEFAULT_QUERIES = [
  'cpuArch=armv8',
  'cpuArch=armv8&os=beta',
  'cpuArch=armv8&attrGamer=prod',
  'cpuArch=armv8&attrGamer=prod&attrCellular=prod',
];

/**
 * Turns a query string into a FleetQuery; a query without `cpuArch` stops the test.
 * @param {string} query
 * @returns {FleetQuery}
 */
export function fleetQuery(query) {
  const trimmed = query.trim().replace(/^\?/, '');
  for (const pair of trimmed.split('&')) {
    const [name = '', value = ''] = pair.split('=');
    if (name.toLowerCase() === 'cpuarch' && value !== '') {
      return { query: trimmed, osApp: `os_${value}` };
    }
  }
  throw new Error(`query ${JSON.stringify(query)} has no cpuArch`);
}

/**
 * The queries the scripts spread their requests over: QUERIES (queries separated by `;`
 * or new lines, without payloadType) or the AWS sample's four.
 * @type {FleetQuery[]}
 */
export const QUERIES = (() => {
  const raw = envRaw('QUERIES');
  const list = raw === undefined ? DEFAULT_QUERIES : raw.split(/[;\n]/).filter((q) => q.trim() !== '');
  return list.map(fleetQuery);
})();

/** @typedef {'metadata' | 'full'} Payload */

/**
 * URL of a package request.
 * @param {FleetQuery} q
 * @param {Payload} payload
 * @returns {string}
 */
export function packageUrl(q, payload) {
  const suffix = payload === 'metadata' ? '&payloadType=metadataOnly' : '';
  return `${BASE_URL}/package?${q.query}${suffix}`;
}

/**
 * An If-None-Match value listing entity tags or digests.
 * @param {readonly string[]} tags
 * @returns {string}
 */
export function ifNoneMatch(tags) {
  return tags.join(', ');
}

/**
 * Request options for a package request: tags `payload` and `query` on every metric
 * sample (the thresholds select on `payload`), and If-None-Match when given.
 * @template {ResponseType | undefined} RT
 * @param {FleetQuery} q
 * @param {Payload} payload
 * @param {{ ifNoneMatch?: string, responseType?: RT, tags?: Record<string, string> }} [extra]
 * @returns {Params & { responseType?: RT }}
 */
export function packageParams(q, payload, extra = {}) {
  /** @type {Record<string, string>} */
  const headers = {};
  if (extra.ifNoneMatch !== undefined && extra.ifNoneMatch !== '') {
    headers['If-None-Match'] = extra.ifNoneMatch;
  }
  /** @type {Params & { responseType?: RT }} */
  const params = {
    headers,
    tags: { payload, query: q.query, ...extra.tags },
  };
  if (extra.responseType !== undefined) params.responseType = extra.responseType;
  return params;
}

/**
 * GET of a package's metadata (`payloadType=metadataOnly`); the body is text.
 * @param {FleetQuery} q
 * @param {{ ifNoneMatch?: string, tags?: Record<string, string> }} [extra]
 * @returns {RefinedResponse<'text'>}
 */
export function getMetadata(q, extra = {}) {
  return http.get(packageUrl(q, 'metadata'), packageParams(q, 'metadata', { ...extra, responseType: 'text' }));
}

/**
 * GET of a full package (the gzip tar), its body kept as bytes or discarded.
 * @template {'binary' | 'none'} RT
 * @param {FleetQuery} q
 * @param {RT} responseType
 * @param {{ ifNoneMatch?: string, tags?: Record<string, string> }} [extra]
 * @returns {RefinedResponse<RT>}
 */
export function getFull(q, responseType, extra = {}) {
  return http.get(packageUrl(q, 'full'), packageParams(q, 'full', { ...extra, responseType }));
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/**
 * A response header by name, ignoring letter case (k6 reports names in Go's canonical
 * form, `Etag` for ETag).
 * @param {{ headers: { [name: string]: string } }} res
 * @param {string} name
 * @returns {string | undefined}
 */
export function header(res, name) {
  const wanted = name.toLowerCase();
  for (const key of Object.keys(res.headers)) {
    if (key.toLowerCase() === wanted) return res.headers[key];
  }
  return undefined;
}

/**
 * Whether the media type of Content-Type (parameters left aside) is `type`.
 * @param {{ headers: { [name: string]: string } }} res
 * @param {string} type
 * @returns {boolean}
 */
export function hasContentType(res, type) {
  const value = header(res, 'Content-Type');
  return value !== undefined && (value.split(';')[0] ?? '').trim().toLowerCase() === type;
}

/**
 * One app's entry in package_details.json.
 * @typedef {{
 *   latestVersion: string,
 *   url: string,
 *   status_code: number,
 *   channel?: string,
 *   md5?: string,
 *   sha256?: string,
 *   size?: number,
 *   mandatory?: boolean,
 * }} AppDetails
 */

/** @typedef {{ [app: string]: AppDetails }} PackageDetails */

/**
 * package_details.json parsed from a metadata body, or null when the body is not a JSON
 * object whose values are objects with `latestVersion` and `status_code`.
 * @param {string | ArrayBuffer | null} body
 * @returns {PackageDetails | null}
 */
export function parseDetails(body) {
  if (typeof body !== 'string') return null;
  /** @type {unknown} */
  let value;
  try {
    value = JSON.parse(body);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return null;
  for (const entry of Object.values(value)) {
    if (typeof entry !== 'object' || entry === null) return null;
    if (typeof entry.latestVersion !== 'string' || typeof entry.status_code !== 'number') return null;
  }
  return /** @type {PackageDetails} */ (value);
}

/**
 * The details of one app, looked up ignoring letter case as the origin does.
 * @param {PackageDetails} details
 * @param {string} app
 * @returns {AppDetails | undefined}
 */
export function appDetails(details, app) {
  const wanted = app.toLowerCase();
  const key = Object.keys(details).find((name) => name.toLowerCase() === wanted);
  return key === undefined ? undefined : details[key];
}

/**
 * Checks a 200 metadata response: status, JSON content type, a body that parses as
 * package_details.json and lists the query's OS app. Returns the parsed details when
 * every check passed.
 * @param {RefinedResponse<'text'>} res
 * @param {FleetQuery} q
 * @param {Record<string, string>} [tags]
 * @returns {PackageDetails | null}
 */
export function checkMetadata(res, q, tags) {
  const details = res.status === 200 ? parseDetails(res.body) : null;
  const ok = check(
    res,
    {
      'metadata: status 200': (r) => r.status === 200,
      'metadata: content-type application/json': (r) => hasContentType(r, 'application/json'),
      'metadata: body is package_details.json': () => details !== null,
      'metadata: lists the OS app': () => details !== null && appDetails(details, q.osApp) !== undefined,
    },
    tags,
  );
  return ok ? details : null;
}

/** Whether Content-Length checks expect the header (EXPECT_LENGTH, default true). */
const EXPECT_LENGTH = envBool('EXPECT_LENGTH', true);

/**
 * Checks a 200 full-payload response: status, gzip content type, an ETag and, when the
 * body was kept, the gzip magic bytes and a Content-Length equal to the body's length.
 * With EXPECT_LENGTH=false a response without Content-Length (streamed, chunked) passes.
 * @param {RefinedResponse<'binary' | 'none'>} res
 * @param {Record<string, string>} [tags]
 * @returns {boolean}
 */
export function checkFull(res, tags) {
  const body = res.body;
  /** @type {import('k6').Checkers<RefinedResponse<'binary' | 'none'>>} */
  const checks = {
    'full: status 200': (r) => r.status === 200,
    'full: content-type application/gzip': (r) => hasContentType(r, 'application/gzip'),
    'full: ETag present': (r) => (header(r, 'ETag') ?? '') !== '',
  };
  if (body instanceof ArrayBuffer) {
    checks['full: Content-Length equals body length'] = (r) => {
      const length = header(r, 'Content-Length');
      return length === undefined ? !EXPECT_LENGTH : Number(length) === body.byteLength;
    };
    checks['full: gzip magic bytes'] = () => {
      const head = new Uint8Array(body, 0, Math.min(2, body.byteLength));
      return head.length === 2 && head[0] === 0x1f && head[1] === 0x8b;
    };
  } else if (EXPECT_LENGTH) {
    checks['full: Content-Length present'] = (r) => header(r, 'Content-Length') !== undefined;
  }
  return check(res, checks, tags);
}

/**
 * Checks a 304 Not Modified response: status, no body, an ETag.
 * @param {RefinedResponse<ResponseType | undefined>} res
 * @param {Record<string, string>} [tags]
 * @returns {boolean}
 */
export function checkNotModified(res, tags) {
  return check(
    res,
    {
      'not modified: status 304': (r) => r.status === 304,
      'not modified: no body': (r) => r.body === null || r.body === '' || (r.body instanceof ArrayBuffer && r.body.byteLength === 0),
      'not modified: ETag present': (r) => (header(r, 'ETag') ?? '') !== '',
    },
    tags,
  );
}

// ---------------------------------------------------------------------------
// Options shared by every script
// ---------------------------------------------------------------------------

/** Largest share of failed requests (http_req_failed) a run may have: MAX_FAILED_RATE. */
export const MAX_FAILED_RATE = envNumber('MAX_FAILED_RATE', 0.001, { min: 0, max: 1 });

/** Smallest share of passed checks a run may have: MIN_CHECKS_RATE. */
export const MIN_CHECKS_RATE = envNumber('MIN_CHECKS_RATE', 0.999, { min: 0, max: 1 });

/**
 * Thresholds every script has: the failed-request rate and the passed-check rate.
 * @returns {{ [metric: string]: Threshold[] }}
 */
export function baseThresholds() {
  return {
    http_req_failed: [`rate<${MAX_FAILED_RATE}`],
    checks: [`rate>=${MIN_CHECKS_RATE}`],
  };
}

/**
 * Options every script shares: p(99) in the end-of-test summary, the base thresholds
 * and a setup timeout. A script adds its scenarios and its own thresholds.
 * @param {Options} own
 * @returns {Options}
 */
export function withCommonOptions(own) {
  return {
    summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
    setupTimeout: '60s',
    ...own,
    thresholds: { ...baseThresholds(), ...own.thresholds },
  };
}

/**
 * Fails the test unless the origin answers /readyz with 200 (rules loaded).
 * Call it first in setup().
 */
export function requireReady() {
  const res = http.get(`${BASE_URL}/readyz`, { tags: { payload: 'setup' } });
  if (res.status !== 200) {
    fail(`${BASE_URL}/readyz answered ${res.status || res.error}: the origin is not ready`);
  }
}

// ---------------------------------------------------------------------------
// What a device can learn about a package
// ---------------------------------------------------------------------------

/**
 * What setup() learns about one query's package: the MD5 of every binary (by app), the
 * ETag of the metadata response and of the full payload.
 * @typedef {{
 *   q: FleetQuery,
 *   digests: { app: string, md5: string }[],
 *   metadataEtag: string,
 *   fullEtag: string,
 * }} LearnedPackage
 */

/**
 * Learns a query's digests and ETags with one metadata GET and one HEAD of the full
 * payload (HEAD reads no binaries). Requests are tagged `payload: setup` so they stay
 * out of the thresholds' sub-metrics. A failure stops the test.
 * @param {FleetQuery} q
 * @returns {LearnedPackage}
 */
export function learnPackage(q) {
  const tags = { payload: 'setup', query: q.query };
  const meta = http.get(packageUrl(q, 'metadata'), { tags });
  const details = meta.status === 200 ? parseDetails(meta.body) : null;
  if (details === null) {
    fail(`setup: metadata of ${q.query} answered ${meta.status || meta.error}, not package_details.json`);
  }
  const digests = Object.entries(details).map(([app, d]) => {
    if (d.md5 === undefined) fail(`setup: ${app} in ${q.query} has no md5`);
    return { app, md5: d.md5 };
  });
  const head = http.head(packageUrl(q, 'full'), { tags });
  const metadataEtag = header(meta, 'ETag');
  const fullEtag = header(head, 'ETag');
  if (head.status !== 200 || metadataEtag === undefined || fullEtag === undefined) {
    fail(`setup: ${q.query} gave no ETag (HEAD answered ${head.status || head.error})`);
  }
  return { q, digests, metadataEtag, fullEtag };
}
