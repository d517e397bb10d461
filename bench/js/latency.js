#!/usr/bin/env node
// A case system written in Node, as bench/latency.py drives it: one
// connection, calls one after another, each timed from the call to its
// answer. The contract is read from the .proto at run time (no generated
// code), the way a new user of @grpc/grpc-js would start.
//
//   node latency.js '{"address": "127.0.0.1:50051", "proto": ".../enforcement.proto",
//                     "mode": "apply", "count": 300, "warmup": 20, "ips": ["10.0.0.1"]}'
//
// Prints one JSON object on stdout: milliseconds per call ({"list": [...]}
// or {"apply": [...], "lift": [...]}), the failures, and the versions used.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const DEADLINE_MS = 30000;

function load(protoPath) {
  const definition = protoLoader.loadSync(protoPath, {
    keepCase: true, longs: String, enums: String, defaults: false, oneofs: true,
    includeDirs: [path.dirname(path.dirname(path.dirname(protoPath)))],
  });
  return grpc.loadPackageDefinition(definition).enforcement.v1.EnforcementService;
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + DEADLINE_MS);
    client[method](request, { deadline }, (error, answer) => {
      if (error) reject(error); else resolve(answer);
    });
  });
}

async function timed(client, method, request) {
  const started = process.hrtime.bigint();
  const answer = await unary(client, method, request);
  return [Number(process.hrtime.bigint() - started) / 1e6, answer];
}

let serial = 0;

function portBlock(ip) {
  // A requested action (block TCP 25), so that repeats never climb the
  // policy's escalation ladder and every decision costs the same.
  serial += 1;
  return {
    request_id: `js-${process.pid}-${Date.now()}-${serial}`,
    case_id: 'BENCH',
    subscriber: { ip },
    violation: 'VIOLATION_SPAM',
    reason: 'bench (grpc-js)',
    action: { kind: 'ACTION_KIND_BLOCK', protocol: 'tcp', ports: [25] },
  };
}

async function run(options) {
  const Service = load(options.proto);
  const client = new Service(options.address, grpc.credentials.createInsecure());
  await new Promise((resolve, reject) => client.waitForReady(
    new Date(Date.now() + DEADLINE_MS), (error) => (error ? reject(error) : resolve())));
  const result = { failures: [], grpc_js: require('@grpc/grpc-js/package.json').version,
                   node: process.version };
  const ips = options.ips || [];
  const rounds = options.warmup + options.count;
  if (options.mode === 'list') {
    result.list = [];
    for (let n = 0; n < rounds; n += 1) {
      try {
        const [ms] = await timed(client, 'List', { page_size: 1 });
        if (n >= options.warmup) result.list.push(ms);
      } catch (error) {
        result.failures.push(String(error.message));
      }
    }
  } else if (options.mode === 'apply') {
    result.apply = [];
    result.lift = [];
    for (let n = 0; n < rounds; n += 1) {
      try {
        const [applyMs, record] = await timed(client, 'Apply', portBlock(ips[n % ips.length]));
        if (record.state !== 'STATE_ACTIVE') {
          throw new Error(`not active: ${record.state} ${record.state_reason}`);
        }
        const [liftMs] = await timed(client, 'Lift', { id: record.id, reason: 'bench' });
        if (n >= options.warmup) {
          result.apply.push(applyMs);
          result.lift.push(liftMs);
        }
      } catch (error) {
        result.failures.push(String(error.message));
      }
    }
  } else {
    throw new Error(`unknown mode ${options.mode}`);
  }
  client.close();
  return result;
}

run(JSON.parse(process.argv[2]))
  .then((result) => { process.stdout.write(`${JSON.stringify(result)}\n`); })
  .catch((error) => { process.stderr.write(`${error.stack || error}\n`); process.exit(1); });
