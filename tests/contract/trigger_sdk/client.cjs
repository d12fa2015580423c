// Runs the official Trigger.dev SDK against the URL in TRIGGER_API_URL and prints what
// it read, so tests/contract/test_trigger_sdk.py can check every field.
//
//   node client.cjs current|legacy < operations.json
//
// `current` loads @trigger.dev/sdk 4.x (sends x-trigger-api-version: 2025-07-16),
// `legacy` 3.x (sends no version header: the legacy status set). Both validate every
// response with @trigger.dev/core's zod schemas; a rejection is reported, not hidden.
// Operations: {"op": "retrieve", "id": "run_..."},
//             {"op": "list", "query": {...runs.list options...}, "max": 500},
//             {"op": "subscribe_run", "id": "run_...", "options": {...}} (the realtime API:
//               every update the SDK yields until the run completes),
//             {"op": "subscribe_tag", "tag": "t", "options": {...}, "done": ["run_a", ...]}
//               (until every run named in `done` completed),
//             {"op": "shape", "path": "/realtime/v1/runs", "params": {...}}
//               (@electric-sql/client's ShapeStream, as the SDK configures it: the rows
//               once the shape is up to date, as the client parsed them).
"use strict";

const which = process.argv[2];
const sdk = which === "legacy" ? require("trigger-sdk-v3/v3") : require("@trigger.dev/sdk");

// What a realtime update shows, dates as ISO text (the SDK makes Date objects of them).
function update(run) {
  return {
    id: run.id,
    status: run.status,
    taskIdentifier: run.taskIdentifier,
    tags: run.tags,
    isCompleted: run.isCompleted,
    isFailed: run.isFailed,
    error: run.error,
    updatedAt: run.updatedAt && run.updatedAt.toISOString(),
    finishedAt: run.finishedAt ? run.finishedAt.toISOString() : null,
    payload: run.payload,
    output: run.output,
  };
}

async function shape(operation) {
  const { ShapeStream, Shape } = require("@electric-sql/client");
  const url = new URL(operation.path, process.env.TRIGGER_API_URL);
  const abort = new AbortController();
  const stream = new ShapeStream({
    signal: abort.signal,
    url: url.toString(),
    params: operation.params || {},
    headers: {
      authorization: `Bearer ${process.env.TRIGGER_SECRET_KEY}`,
      "x-trigger-electric-version": "1.0.0-beta.1",
      "x-trigger-api-version": "2025-07-16",
    },
  });
  const view = new Shape(stream);
  // Resolves once the shape is up to date: every row, as the client parsed it.
  const rows = await view.rows;
  abort.abort(); // the live long poll would otherwise keep the process alive
  return rows.map((row) => JSON.parse(JSON.stringify(row, (k, v) => (typeof v === "bigint" ? String(v) : v))));
}

async function perform(operation) {
  switch (operation.op) {
    case "retrieve":
      return await sdk.runs.retrieve(operation.id);
    case "list": {
      const runs = [];
      // for await pages through `pagination.next` as the SDK does for its users.
      for await (const run of sdk.runs.list(operation.query || {})) {
        runs.push(run);
        if (runs.length >= (operation.max || 1000)) break;
      }
      return runs;
    }
    case "subscribe_run": {
      const updates = [];
      for await (const run of sdk.runs.subscribeToRun(operation.id, operation.options || {})) {
        updates.push(update(run));
      }
      return updates;
    }
    case "subscribe_tag": {
      const updates = [];
      const open = new Set(operation.done);
      for await (const run of sdk.runs.subscribeToRunsWithTag(operation.tag, operation.options || {})) {
        updates.push(update(run));
        if (run.isCompleted) open.delete(run.id);
        if (open.size === 0) break;
      }
      return updates;
    }
    case "shape":
      return await shape(operation);
    default:
      throw new Error(`unknown operation ${JSON.stringify(operation.op)}`);
  }
}

async function main() {
  if (which !== "current" && which !== "legacy") {
    throw new Error("usage: node client.cjs current|legacy < operations.json");
  }
  let input = "";
  for await (const chunk of process.stdin) input += chunk;
  const results = [];
  for (const operation of JSON.parse(input)) {
    try {
      results.push({ ok: true, value: await perform(operation) });
    } catch (error) {
      results.push({ ok: false, error: error.name, message: String(error.message) });
    }
  }
  process.stdout.write(JSON.stringify(results));
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(2);
});
