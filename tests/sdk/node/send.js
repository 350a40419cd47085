#!/usr/bin/env node
// Sends real errors through the official @sentry/node SDK so stacksift is
// tested against what users actually run, not against hand-written envelopes.
//
// Usage: node send.js <dsn> <repeat> [--ca-certs PATH]
// Prints one JSON line:
//   {"sent": {"TypeError": n, "PaymentError": n, "RangeError": n},
//    "event_ids": [...], "status_codes": {"200": k, ...}, "accepted": k}
// Exit code: 0 when every event got a 2xx, 1 when flush timed out, 2 on bad
// usage, 4 when some event got a non-2xx answer or a network error (the JSON
// line is printed in every case but 2, so rate-limit tests can still read it).
// SENTRY_ENVIRONMENT / SENTRY_RELEASE are honoured by the SDK itself.
"use strict";

const fs = require("node:fs");
const Sentry = require("@sentry/node");

class PaymentError extends Error {
  constructor(message) {
    super(message);
    this.name = "PaymentError";
  }
}

// Each error kind is thrown from its own named function so each one gets its
// own stack trace and therefore its own issue on the server.
function submitOrder(form) {
  // Calling a missing callback: the classic "x is not a function" TypeError.
  return form.onSubmit();
}

function chargeCard(amountCents) {
  throw new PaymentError(`card declined for amount ${amountCents}`);
}

function allocateBuffer(size) {
  // new Array(-1) throws RangeError: Invalid array length.
  return new Array(size);
}

const KINDS = [
  ["TypeError", () => submitOrder({})],
  ["PaymentError", () => chargeCard(4999)],
  ["RangeError", () => allocateBuffer(-1)],
];

function usage(message) {
  process.stderr.write(`${message}\nusage: node send.js <dsn> <repeat> [--ca-certs PATH]\n`);
  process.exit(2);
}

async function main() {
  const [dsn, repeatArg, ...rest] = process.argv.slice(2);
  if (!dsn || repeatArg === undefined) usage("missing arguments");
  let caCerts;
  if (rest.length === 2 && rest[0] === "--ca-certs") caCerts = fs.readFileSync(rest[1]);
  else if (rest.length !== 0) usage(`unexpected arguments: ${rest.join(" ")}`);
  const repeat = Number(repeatArg);
  if (!Number.isInteger(repeat) || repeat < 0) usage(`repeat must be an integer >= 0, got ${repeatArg}`);

  const statusCodes = {};
  Sentry.init({
    dsn,
    sampleRate: 1,
    // Dedupe may drop an event that looks like the previous one (same message
    // and stack), which is what this loop produces; the server must see every one.
    integrations: (defaults) => defaults.filter((i) => i.name !== "Dedupe"),
    // The default transport buffer (64 in flight) silently drops the rest.
    transportOptions: { bufferSize: Math.max(64, KINDS.length * repeat + 16), caCerts },
  });

  const client = Sentry.getClient();
  client.on("afterSendEvent", (_event, response) => {
    const key = response && response.statusCode ? String(response.statusCode) : "network_error";
    statusCodes[key] = (statusCodes[key] || 0) + 1;
  });

  const sent = {};
  const eventIds = [];
  for (const [name, throwIt] of KINDS) {
    sent[name] = 0;
    for (let i = 0; i < repeat; i++) {
      try {
        throwIt();
        throw new Error(`${name} thrower did not throw`);
      } catch (err) {
        if (err.name !== name) throw err;
        eventIds.push(Sentry.captureException(err));
        sent[name] += 1;
      }
    }
  }

  const flushed = await Sentry.flush(10000);
  const accepted = Object.entries(statusCodes)
    .filter(([code]) => Number(code) >= 200 && Number(code) < 300)
    .reduce((n, [, c]) => n + c, 0);
  process.stdout.write(
    `${JSON.stringify({ sent, event_ids: eventIds, status_codes: statusCodes, accepted })}\n`,
  );
  if (!flushed) process.stderr.write("Sentry.flush timed out: some events were not delivered\n");
  await Sentry.close(2000);
  // OpenTelemetry instrumentation can keep handles open; do not hang a test.
  const total = eventIds.length;
  process.exit(!flushed ? 1 : accepted === total ? 0 : 4);
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(3);
});
