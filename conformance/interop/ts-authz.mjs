// An MCP client built with the TypeScript SDK that lists what a server
// offers its caller through the gateway and calls tools, then prints as
// JSON what it saw: the tools listed, and for each call given, its outcome
// or everything the SDK's error exposes.
//
// Usage: node ts-authz.mjs URL TOOL[=ARGUMENTS_JSON]...
// The bearer token is read from TOOLGATE_TOKEN and sent with every request.
// The SDK is resolved from ./node_modules beside this file.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [url, ...calls] = process.argv.slice(2);
if (!url) {
  console.error('usage: node ts-authz.mjs URL TOOL[=ARGUMENTS_JSON]...');
  process.exit(2);
}
const token = process.env.TOOLGATE_TOKEN ?? '';
const report = { tools: [], calls: [] };

function describe(err) {
  return { class: err?.constructor?.name ?? typeof err, code: err?.code, message: err?.message ?? String(err) };
}

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: 'toolgate-interop-ts-authz', version: '1.0.0' });
try {
  await client.connect(transport);
  report.protocolVersion = transport.protocolVersion ?? null;
  report.tools = (await client.listTools()).tools.map((t) => t.name);
  for (const call of calls) {
    const [name, args] = call.split(/=(.*)/s);
    try {
      const result = await client.callTool({ name, arguments: args ? JSON.parse(args) : {} });
      const text = (result.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('');
      report.calls.push({ name, ok: true, isError: result.isError ?? false, text });
    } catch (err) {
      report.calls.push({ name, ok: false, error: describe(err) });
    }
  }
} catch (err) {
  report.fatal = describe(err);
} finally {
  await client.close().catch(() => {});
}
process.stdout.write(JSON.stringify(report, null, 2) + '\n');
