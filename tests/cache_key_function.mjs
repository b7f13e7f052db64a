// Runs the CloudFront Function of cloudformation/fleetpack.yaml (CacheKeyFunction)
// against tests/cache_key_vectors.json, the cases the resolver's canonical form is
// checked against too (resolver/src/cache_key.rs). The function is taken from the
// template itself, so what is tested is what is deployed.
//
//   node tests/cache_key_function.mjs cloudformation/fleetpack.yaml tests/cache_key_vectors.json

import { readFileSync } from 'node:fs';
import { runInNewContext } from 'node:vm';
import { deepStrictEqual } from 'node:assert';

// CloudFront's limit on a function's code.
const MAX_FUNCTION_BYTES = 10240;

const [templatePath, vectorsPath] = process.argv.slice(2);
const code = functionCode(readFileSync(templatePath, 'utf8'));
const vectors = JSON.parse(readFileSync(vectorsPath, 'utf8'));
const failures = [];
let checked = 0;

// The literal block under the one `FunctionCode: |` line, with its indentation removed.
function functionCode(template) {
  const lines = template.split('\n');
  const starts = lines.flatMap((line, at) => (/^\s*FunctionCode: \|\s*$/.test(line) ? [at] : []));
  if (starts.length !== 1) {
    throw new Error(`${templatePath}: expected one 'FunctionCode: |' block, found ${starts.length}`);
  }
  const keyIndent = lines[starts[0]].search(/\S/);
  const body = [];
  for (const line of lines.slice(starts[0] + 1)) {
    if (line.trim() !== '' && line.search(/\S/) <= keyIndent) {
      break;
    }
    body.push(line);
  }
  const indent = Math.min(...body.filter((line) => line.trim() !== '').map((line) => line.search(/\S/)));
  return body.map((line) => line.slice(indent)).join('\n');
}

// A fresh copy of the function per event, as CloudFront runs it: no state between requests.
function run(event) {
  const context = { event };
  runInNewContext(`${code}\nresult = handler(event);`, context);
  return context.result;
}

// The querystring object CloudFront hands a function: names as sent, values not
// decoded, a repeated name as multiValue. Object.fromEntries makes a name such as
// __proto__ an ordinary key, as it is in CloudFront's event.
function querystringOf(raw) {
  const byName = new Map();
  for (const part of raw.split('&').filter((part) => part !== '')) {
    const at = part.indexOf('=');
    const [name, value] = at < 0 ? [part, ''] : [part.slice(0, at), part.slice(at + 1)];
    byName.set(name, [...(byName.get(name) ?? []), { value }]);
  }
  const entries = [...byName].map(([name, values]) =>
    [name, values.length === 1 ? values[0] : { value: values[0].value, multiValue: values }]);
  return Object.fromEntries(entries);
}

function shown(value) {
  const text = JSON.stringify(value);
  return text.length > 120 ? `${text.slice(0, 120)}...` : text;
}

function event(uri, querystring, headers) {
  return { version: '1.0', context: { eventType: 'viewer-request' }, viewer: { ip: '192.0.2.1' },
    request: { method: 'GET', uri, querystring, headers, cookies: {} } };
}

function check(what, actual, expected) {
  checked += 1;
  try {
    deepStrictEqual(actual, expected);
  } catch {
    failures.push(`${what}: expected ${shown(expected)}, got ${shown(actual)}`);
  }
}

for (const vector of vectors.query) {
  const querystring = querystringOf(vector.input);
  const request = run(event('/package', querystring, {}));
  // A string is the rewritten query; the object CloudFront passed in means "as sent".
  const canonical = typeof request.querystring === 'string' ? request.querystring : null;
  check(`query: ${vector.why}`, canonical, vector.canonical);
  if (canonical === null) {
    check(`query left as sent: ${vector.why}`, request.querystring === querystring, true);
  }
}

for (const vector of vectors.ifNoneMatch) {
  const sent = { value: vector.input };
  const request = run(event('/package', querystringOf('cpuArch=armv8'), { 'if-none-match': sent }));
  const header = request.headers['if-none-match'];
  const canonical = header === undefined ? '' : header === sent ? null : header.value;
  check(`If-None-Match: ${vector.why}`, canonical, vector.canonical);
}

// Header lines that CloudFront merged into multiValue are one list.
const merged = run(event('/package', querystringOf('cpuArch=armv8'), {
  'if-none-match': { value: '"B"', multiValue: [{ value: '"B"' }, { value: 'a, b' }] },
}));
check('If-None-Match in two lines', merged.headers['if-none-match'].value, 'a,b');

for (const uri of ['/healthz', '/readyz', '/metrics', '/', '/package/']) {
  check(`${uri} is not served through the CDN`, run(event(uri, {}, {})).statusCode, 404);
}

const size = Buffer.byteLength(code);
check(`the function's code fits CloudFront's limit (${size} bytes)`, size <= MAX_FUNCTION_BYTES, true);

for (const failure of failures) {
  console.error(`FAIL ${failure}`);
}
console.log(`cache key function: ${checked - failures.length} of ${checked} checks passed`);
process.exitCode = failures.length === 0 ? 0 : 1;
