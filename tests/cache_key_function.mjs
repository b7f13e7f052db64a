// Runs the CloudFront Function of cloudformation/fleetpack.yaml (CacheKeyFunction). The
// function is taken from the template itself, so what is tested is what is deployed;
// the rollout state the stack puts into it (`${RolloutState}`) is each case's own.
//
//   node tests/cache_key_function.mjs cloudformation/fleetpack.yaml tests/cache_key_vectors.json
//     checks the function against the shared vectors, the cases the resolver's canonical
//     form is checked against too (resolver/src/cache_key.rs), and that the RolloutState
//     parameter takes the vectors' states and nothing that is not such a state;
//   node tests/cache_key_function.mjs cloudformation/fleetpack.yaml --evaluate inputs.json
//     prints the function's rewrite of every input as JSON, for the differential test
//     against the resolver (resolver/tests/cdn_function.rs). inputs.json holds
//     [{"rollouts": [...], "queries": [...], "ifNoneMatch": [...]}, ...]; the output
//     holds [{"queries": [...], "ifNoneMatch": [...]}, ...], each rewrite as
//     rewrittenQuery and rewrittenHeader below describe it.

import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createContext, runInContext, runInNewContext } from 'node:vm';
import { deepStrictEqual } from 'node:assert';

// CloudFront's limit on a function's code.
const MAX_FUNCTION_BYTES = 10240;
// CloudFormation's limit on a parameter's value.
const MAX_PARAMETER_BYTES = 4096;
// Where CloudFormation's Fn::Sub puts the stack's RolloutState parameter.
const STATE_PLACEHOLDER = '${RolloutState}';
// Rollouts as a busy fleet has them in progress, for the size checks.
const TWENTY_ROLLOUTS = Array.from({ length: 20 }, (_, n) => ({
  id: crypto.createHash('sha256').update(`rollout ${n}`).digest('hex').slice(0, 8),
  percent: 10 + n,
  app: `fleet-app-${String(n).padStart(2, '0')}`,
  channel: 'early_access',
  attributes: ['cellular', 'camera-hd'],
}));
// States the parameter must refuse: the state becomes part of the function's code, so
// nothing but the strict JSON that fleetpack-seed cdn-state prints may pass.
const REFUSED_STATES = [
  '[{"id":"2d1a5982","percent":10}]',
  '[{"id":"2d1a5982","percent":100,"app":"os_armv8","channel":"prod","attributes":[]}]',
  '[{"id":"2d1a5982","percent":10,"app":"OS_armv8","channel":"prod","attributes":[]}]',
  '[{"id":"2d1a5982","percent":10,"app":"os_armv8","channel":"prod","attributes":[""]}]',
  '[{"id":"2d1a5982","percent":10,"app":"os_armv8","channel":"prod","attributes":[],"x":1}]',
  '[{"id":"2d1a5982","percent":10,"app":"a"+fetch()+"b","channel":"prod","attributes":[]}]',
  '[{"id":"2d1a5982","percent":10,"app":"a\\"+fetch()+\\"b","channel":"prod","attributes":[]}]',
  '[{"id":"2d1a5982","percent":10,"app":"os_armv8","channel":"prod","attributes":[]},]',
  '[];fetch()',
  '[]\n;fetch()',
];

const [templatePath, ...rest] = process.argv.slice(2);
const template = readFileSync(templatePath, 'utf8');
const code = functionCode(template);

// The literal block under the one `FunctionCode: !Sub |` line, with its indentation removed.
function functionCode(template) {
  const lines = template.split('\n');
  const starts = lines.flatMap((line, at) => (/^\s*FunctionCode: !Sub \|\s*$/.test(line) ? [at] : []));
  if (starts.length !== 1) {
    throw new Error(`${templatePath}: expected one 'FunctionCode: !Sub |' block, found ${starts.length}`);
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
  const text = body.map((line) => line.slice(indent)).join('\n');
  // Fn::Sub would replace any other `${...}` too.
  if (text.split('${').length !== 2 || !text.includes(STATE_PLACEHOLDER)) {
    throw new Error(`${templatePath}: the function code must hold '\${' once, in ${STATE_PLACEHOLDER}`);
  }
  return text;
}

// The RolloutState parameter's AllowedPattern, as CloudFormation applies it (to the whole
// value: Java's String.matches).
function statePattern() {
  const found = /^  RolloutState:\n(?:    .*\n)*?    AllowedPattern: '(.*)'$/m.exec(template);
  if (!found) {
    throw new Error(`${templatePath}: no AllowedPattern in the RolloutState parameter`);
  }
  return new RegExp(`^(?:${found[1]})$`);
}

// The code as the stack deploys it with this rollout state.
function deployed(rollouts) {
  return code.replace(STATE_PLACEHOLDER, () => JSON.stringify(rollouts));
}

// The globals the function uses: `require` of CloudFront's built-in crypto module.
function globals() {
  return {
    require(name) {
      if (name !== 'crypto') {
        throw new Error(`the function may require 'crypto' only, not '${name}'`);
      }
      return crypto;
    },
  };
}

// A fresh copy of the function per event, as CloudFront runs it: no state between requests.
function run(event, rollouts = []) {
  const context = { ...globals(), event };
  runInNewContext(`${deployed(rollouts)}\nresult = handler(event);`, context);
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

function event(uri, querystring, headers) {
  return { version: '1.0', context: { eventType: 'viewer-request' }, viewer: { ip: '192.0.2.1' },
    request: { method: 'GET', uri, querystring, headers, cookies: {} } };
}

// The query the function rewrites a request for `raw` into, or null when it leaves
// the querystring object CloudFront passed in as it was (forwarded as sent).
function rewrittenQuery(raw, handle) {
  const querystring = querystringOf(raw);
  const request = handle(event('/package', querystring, {}));
  if (typeof request.querystring === 'string') {
    return request.querystring;
  }
  if (request.querystring !== querystring) {
    throw new Error('the function replaced the querystring object');
  }
  return null;
}

// The installed= list the function moves If-None-Match `value` into (the header is then
// dropped), or null when it leaves the header as sent.
function rewrittenHeader(value, handle) {
  const sent = { value };
  const request = handle(event('/package', querystringOf('cpuArch=armv8'), { 'if-none-match': sent }));
  return movedList(request, sent);
}

function movedList(request, sent) {
  const header = request.headers['if-none-match'];
  if (header === sent) {
    return null;
  }
  if (header !== undefined) {
    throw new Error('the function changed If-None-Match instead of moving it');
  }
  const found = /(?:^|&)installed=([^&]*)/.exec(request.querystring);
  if (!found) {
    throw new Error('the function dropped If-None-Match without moving it into the query');
  }
  return found[1];
}

function checkVectors(vectorsPath) {
  const vectors = JSON.parse(readFileSync(vectorsPath, 'utf8'));
  const failures = [];
  let checked = 0;
  const check = (what, actual, expected) => {
    checked += 1;
    try {
      deepStrictEqual(actual, expected);
    } catch {
      failures.push(`${what}: expected ${shown(expected)}, got ${shown(actual)}`);
    }
  };
  for (const vector of [...vectors.query, ...vectors.queryWithRollouts]) {
    const canonical = rewrittenQuery(vector.input, (sent) => run(sent, vector.rollouts ?? []));
    check(`query: ${vector.why}`, canonical, vector.canonical);
  }
  for (const vector of vectors.ifNoneMatch) {
    check(`If-None-Match: ${vector.why}`, rewrittenHeader(vector.input, run), vector.canonical);
  }

  // Header lines that CloudFront merged into multiValue are one list.
  const merged = run(event('/package', querystringOf('cpuArch=armv8'), {
    'if-none-match': { value: '"B"', multiValue: [{ value: '"B"' }, { value: 'a, b' }] },
  }));
  check('If-None-Match in two lines', [merged.querystring, merged.headers['if-none-match']],
    ['cpuarch=armv8&installed=a,b', undefined]);
  // A device that lists installed= itself keeps its header, a validator for CloudFront.
  const validator = { value: '"abc"' };
  const listed = run(event('/package', querystringOf('installed=B,a&cpuArch=armv8'), {
    'if-none-match': validator,
  }));
  check('installed= in the query keeps If-None-Match', [listed.querystring, movedList(listed, validator)],
    ['cpuarch=armv8&installed=a,b', null]);

  for (const uri of ['/healthz', '/readyz', '/metrics', '/', '/package/']) {
    check(`${uri} is not served through the CDN`, run(event(uri, {}, {})).statusCode, 404);
  }

  const size = Buffer.byteLength(deployed(TWENTY_ROLLOUTS));
  check(`the function's code with 20 rollouts fits CloudFront's limit (${size} bytes)`,
    size <= MAX_FUNCTION_BYTES, true);

  const pattern = statePattern();
  const states = [...vectors.queryWithRollouts.map((vector) => vector.rollouts ?? []), TWENTY_ROLLOUTS];
  for (const state of states) {
    check(`the parameter accepts ${shown(state)}`, pattern.test(JSON.stringify(state)), true);
  }
  for (const state of REFUSED_STATES) {
    check(`the parameter refuses ${shown(state)}`, pattern.test(state), false);
  }
  const stateBytes = Buffer.byteLength(JSON.stringify(TWENTY_ROLLOUTS));
  check(`20 rollouts fit CloudFormation's limit (${stateBytes} bytes)`, stateBytes <= MAX_PARAMETER_BYTES, true);

  for (const failure of failures) {
    console.error(`FAIL ${failure}`);
  }
  console.log(`cache key function: ${checked - failures.length} of ${checked} checks passed`);
  return failures.length === 0;
}

function shown(value) {
  const text = JSON.stringify(value);
  return text.length > 120 ? `${text.slice(0, 120)}...` : text;
}

// One copy of the function per rollout state serves all of that state's inputs: the
// function never writes its top-level variables, so it keeps nothing between events,
// and a fresh copy per input (as the vectors get) would take most of a minute.
function evaluate(inputsPath) {
  const groups = JSON.parse(readFileSync(inputsPath, 'utf8'));
  const rewrites = groups.map((group) => {
    const context = createContext(globals());
    runInContext(deployed(group.rollouts), context);
    const handle = (sent) => context.handler(sent);
    return {
      queries: group.queries.map((raw) => rewrittenQuery(raw, handle)),
      ifNoneMatch: group.ifNoneMatch.map((value) => rewrittenHeader(value, handle)),
    };
  });
  process.stdout.write(JSON.stringify(rewrites));
  return true;
}

const passed = rest[0] === '--evaluate' ? evaluate(rest[1]) : checkVectors(rest[0]);
process.exitCode = passed ? 0 : 1;
