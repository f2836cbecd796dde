// The Node SDK's default credential chain, fetching through the agent's loopback listener.
//
// Run by tests/e2e/tests/sdk.rs with exactly the environment `ecs-credential-agent env` prints
// (plus PATH and an empty HOME): no configuration in code. Usage: `node check.js`.
//
// Protocol (one line each way, so the test can read the agent's socket around every fetch):
// prints `ready <@alicloud/credentials version>`, then for each `fetch` line on stdin asks the
// one `Credential` it made for its credential and prints it as one JSON line (AccessKeyId,
// AccessKeySecret, SecurityToken, ProviderName); on an error prints `{"Error": "<message>"}`
// and keeps going. Ends at end of input.
//
// The same client answers every fetch, so a rotation is seen only if its cache lets it
// through: @alicloud/credentials 2.4.7 treats credentials with less than 15 minutes left as
// stale (`STALE_TIME = 15 * 60` and `refreshSession`, dist/src/providers/session.js) and
// fetches again on the next call, so with the test's short-lived credentials every fetch is a
// request to the listener.
'use strict';

const readline = require('node:readline');
const Credential = require('@alicloud/credentials').default;
const { version } = require('@alicloud/credentials/package.json');

function say(line) {
  process.stdout.write(line + '\n');
}

async function main() {
  // No config: the default credential chain, configured by the environment alone.
  const client = new Credential();
  say(`ready ${version}`);
  const input = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const command of input) {
    if (command.trim() !== 'fetch') {
      continue;
    }
    try {
      const c = await client.getCredential();
      say(JSON.stringify({
        AccessKeyId: c.accessKeyId,
        AccessKeySecret: c.accessKeySecret,
        SecurityToken: c.securityToken,
        ProviderName: c.providerName,
      }));
    } catch (err) {
      say(JSON.stringify({ Error: String(err && err.message ? err.message : err) }));
    }
  }
}

main().catch((err) => {
  process.stderr.write(`check.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
