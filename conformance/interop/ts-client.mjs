// An MCP client built with the TypeScript SDK (Client and
// StreamableHTTPClientTransport) that calls one tool until it is refused,
// then prints as JSON what it saw: the tools listed, each call's outcome
// and, for the refusal, everything the SDK's error exposes. Beside that it
// records, under "wire", the HTTP responses that were not 2xx as the
// transport received them, so the report shows what the gateway sent next
// to what the SDK surfaced.
//
// Usage: node ts-client.mjs URL TOOL OTHER_TOOL MAX_CALLS
// The bearer token is read from TOOLGATE_TOKEN and sent with every request
// (requestInit headers). The SDK is resolved from ./node_modules beside this
// file: the tests copy the script next to a link to the installed packages.
import { readFileSync } from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [url, tool, otherTool, maxCallsArg] = process.argv.slice(2);
const maxCalls = Number(maxCallsArg);
if (!url || !tool || !otherTool || !(maxCalls > 0)) {
  console.error('usage: node ts-client.mjs URL TOOL OTHER_TOOL MAX_CALLS');
  process.exit(2);
}
const token = process.env.TOOLGATE_TOKEN ?? '';

const sdk = JSON.parse(
  readFileSync(new URL('./node_modules/@modelcontextprotocol/sdk/package.json', import.meta.url), 'utf8'),
);
const report = { sdkVersion: sdk.version, node: process.version, tools: [], calls: [], wire: [] };

// fetch as the transport uses it, keeping a copy of every response that is
// not a success.
async function recordingFetch(input, init) {
  const response = await fetch(input, init);
  if (!response.ok) {
    report.wire.push({
      method: init?.method ?? 'GET',
      status: response.status,
      retryAfter: response.headers.get('retry-after'),
      contentType: response.headers.get('content-type'),
      body: await response.clone().text(),
    });
  }
  return response;
}

// describe says everything an error thrown by the SDK carries.
function describe(err) {
  const d = {
    class: err?.constructor?.name ?? typeof err,
    name: err?.name,
    code: err?.code,
    message: err?.message ?? String(err),
    ownFields: err && typeof err === 'object' ? Object.keys(err) : [],
  };
  if (err?.data !== undefined) d.data = err.data;
  if (err?.cause !== undefined) d.cause = String(err.cause);
  return d;
}

function outcome(result) {
  return {
    ok: true,
    isError: result.isError ?? false,
    text: (result.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join(''),
  };
}

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
  fetch: recordingFetch,
});
const client = new Client({ name: 'toolgate-interop-ts-client', version: '1.0.0' });

try {
  await client.connect(transport);
  report.connected = true;
  report.protocolVersion = transport.protocolVersion ?? null;
  report.session = transport.sessionId !== undefined;
  report.server = client.getServerVersion() ?? null;
  report.tools = (await client.listTools()).tools.map((t) => t.name);
  for (let i = 0; i < maxCalls; i++) {
    try {
      report.calls.push(outcome(await client.callTool({ name: tool, arguments: {} })));
    } catch (err) {
      report.calls.push({ ok: false, error: describe(err) });
      break;
    }
  }
  // The refusal is for one tool: another one, in the same session, works.
  try {
    report.afterRefusal = outcome(await client.callTool({ name: otherTool, arguments: {} }));
  } catch (err) {
    report.afterRefusal = { ok: false, error: describe(err) };
  }
} catch (err) {
  report.connected = report.connected ?? false;
  report.fatal = describe(err);
} finally {
  await client.close().catch(() => {});
}
process.stdout.write(JSON.stringify(report, null, 2) + '\n');
