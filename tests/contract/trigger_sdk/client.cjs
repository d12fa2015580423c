// Runs the official Trigger.dev SDK against the URL in TRIGGER_API_URL and prints what
// it read, so tests/contract/test_trigger_sdk.py can check every field.
//
//   node client.cjs current|legacy < operations.json
//
// `current` loads @trigger.dev/sdk 4.x (sends x-trigger-api-version: 2025-07-16),
// `legacy` 3.x (sends no version header: the legacy status set). Both validate every
// response with @trigger.dev/core's zod schemas; a rejection is reported, not hidden.
// Operations: {"op": "retrieve", "id": "run_..."} or
//             {"op": "list", "query": {...runs.list options...}, "max": 500}.
"use strict";

const which = process.argv[2];
const sdk = which === "legacy" ? require("trigger-sdk-v3/v3") : require("@trigger.dev/sdk");

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
