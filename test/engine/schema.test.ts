// The editor schemas: generated from the recipes' zod schemas, shipped up to date in schemas/, printed by
// `meshvm schema`, and read by a real YAML language server (npm yaml-language-server over stdio, as VS Code, Neovim
// and Helix run it) through the `# yaml-language-server: $schema=` line of the examples and runlists.
import test from 'ava';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { jsonSchema, SCHEMA_FILES, SCHEMA_KINDS } from '../../engine/schema.ts';
import { builtins } from '../../recipes/index.ts';
import { until } from '../helpers/poll.ts';
import { meshvm, PROJECT } from '../helpers/scratch.ts';

const REGENERATE = 'node bin/meshvm.js schema node > schemas/node.schema.json && node bin/meshvm.js schema runlist > schemas/runlist.schema.json';

for (const kind of SCHEMA_KINDS) {
  test(`schemas/${kind}.schema.json is what the recipes' schemas generate, and meshvm schema ${kind} prints it`, async (t) => {
    const shipped = JSON.parse(await fs.readFile(path.join(PROJECT, SCHEMA_FILES[kind]), 'utf8'));
    t.deepEqual(shipped, jsonSchema(kind, builtins), `out of date: ${REGENERATE}`);
    const printed = await meshvm(['schema', kind]);
    t.is(printed.exitCode, 0, printed.stderr);
    t.deepEqual(JSON.parse(printed.stdout), shipped);
  });
}

test('meshvm schema without a kind names the kinds', async (t) => {
  const result = await meshvm(['schema', 'nodes']);
  t.is(result.exitCode, 1);
  t.regex(result.stderr, /schema takes one of: runlist, node/);
});

test('the node schema has every built-in recipe attribute and a block per recipe; nothing is required (layers merge)', (t) => {
  const node = jsonSchema('node', builtins) as { properties: { attributes: { properties: Record<string, unknown>; additionalProperties: boolean } } };
  const attrs = node.properties.attributes;
  t.false(attrs.additionalProperties);
  for (const recipe of builtins.values()) {
    t.truthy(attrs.properties[recipe.name], recipe.name);
    for (const key of Object.keys(recipe.attributes.shape)) t.truthy(attrs.properties[key], `${recipe.name}.${key}`);
  }
  t.false(JSON.stringify(node).includes('"required":["'), 'no required lists');
});

/** A language server client over stdio: JSON-RPC with Content-Length framing (the LSP base protocol). */
class LanguageServer {
  readonly diagnostics = new Map<string, { message: string; range: { start: { line: number } } }[]>();
  private readonly child: ChildProcess;
  private buffer = Buffer.alloc(0);
  private id = 0;
  private readonly pending = new Map<number, (result: unknown) => void>();
  stderr = '';

  constructor() {
    const bin = createRequire(import.meta.url).resolve('yaml-language-server/bin/yaml-language-server');
    this.child = spawn(process.execPath, [bin, '--stdio'], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr!.on('data', (chunk) => (this.stderr += chunk));
    this.child.stdout!.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      for (;;) {
        const end = this.buffer.indexOf('\r\n\r\n');
        if (end < 0) return;
        const length = Number(/Content-Length: (\d+)/i.exec(this.buffer.subarray(0, end).toString())?.[1]);
        if (this.buffer.length < end + 4 + length) return;
        const message = JSON.parse(this.buffer.subarray(end + 4, end + 4 + length).toString());
        this.buffer = this.buffer.subarray(end + 4 + length);
        this.receive(message);
      }
    });
  }

  private receive(message: { id?: number; method?: string; params?: unknown; result?: unknown }) {
    if (message.method === 'textDocument/publishDiagnostics') {
      const { uri, diagnostics } = message.params as { uri: string; diagnostics: [] };
      this.diagnostics.set(uri, diagnostics);
    } else if (message.method && message.id !== undefined) {
      // the server asks for its settings (workspace/configuration) and registers capabilities: answer each request
      const items = (message.params as { items?: unknown[] })?.items;
      this.send({ jsonrpc: '2.0', id: message.id, result: message.method === 'workspace/configuration' ? (items ?? []).map(() => settings.yaml) : null });
    } else if (message.id !== undefined) this.pending.get(message.id)?.(message.result);
  }

  private send(message: unknown) {
    const body = JSON.stringify(message);
    this.child.stdin!.write(`Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  }

  request(method: string, params: unknown): Promise<unknown> {
    const id = ++this.id;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.send({ jsonrpc: '2.0', id, method, params });
    });
  }

  notify(method: string, params: unknown) {
    this.send({ jsonrpc: '2.0', method, params });
  }

  async open(uri: string, text: string) {
    this.diagnostics.delete(uri);
    this.notify('textDocument/didOpen', { textDocument: { uri, languageId: 'yaml', version: 1, text } });
    await until(() => this.diagnostics.has(uri), { what: `the language server's diagnostics for ${uri}`, timeoutMs: 20_000 });
    return this.diagnostics.get(uri)!;
  }

  async stop() {
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    await Promise.race([this.request('shutdown', null), exited]);
    this.notify('exit', null);
    await exited;
  }
}

const settings = { yaml: { validate: true, hover: false, completion: false, schemaStore: { enable: false }, schemas: {} } };

async function withServer<T>(run: (server: LanguageServer) => Promise<T>): Promise<T> {
  const server = new LanguageServer();
  try {
    await server.request('initialize', { processId: process.pid, rootUri: pathToFileURL(PROJECT).href, capabilities: {}, workspaceFolders: null });
    server.notify('initialized', {});
    server.notify('workspace/didChangeConfiguration', { settings });
    return await run(server);
  } finally {
    await server.stop();
  }
}

const examples = async () => {
  const files = [
    ...(await fs.readdir(path.join(PROJECT, 'examples/nodes'))).map((f) => `examples/nodes/${f}`),
    ...(await fs.readdir(path.join(PROJECT, 'runlists'))).map((f) => `runlists/${f}`),
  ];
  return files.filter((f) => f.endsWith('.yaml')).sort();
};

test('the YAML language server finds no problem in the shipped runlists and node files, each naming its schema', async (t) => {
  const files = await examples();
  t.true(files.length >= 7);
  await withServer(async (server) => {
    for (const file of files) {
      const text = await fs.readFile(path.join(PROJECT, file), 'utf8');
      const kind = file.startsWith('runlists/') ? 'runlist' : 'node';
      t.regex(text, new RegExp(`^# yaml-language-server: \\$schema=(\\.\\./)+schemas/${kind}\\.schema\\.json$`, 'm'), file);
      t.deepEqual(await server.open(pathToFileURL(path.join(PROJECT, file)).href, text), [], file);
    }
  });
});

test('the YAML language server reports a misspelt attribute in a node file at its line, through the modeline', async (t) => {
  const original = await fs.readFile(path.join(PROJECT, 'examples/nodes/istio-vm.yaml'), 'utf8');
  const lines = original.split('\n');
  const at = lines.findIndex((l) => /^ {2}workload:/.test(l));
  t.true(at > 0);
  lines[at] = lines[at]!.replace('workload:', 'wrokload:');
  // opened beside the example (the server resolves the relative $schema against the document's URI); never written to disk
  const uri = pathToFileURL(path.join(PROJECT, 'examples/nodes/misspelt-by-test.yaml')).href;
  const nested = original.replace('serviceAccount: reviews', 'serviceAcount: reviews');
  const nestedLine = nested.split('\n').findIndex((l) => l.includes('serviceAcount'));
  await withServer(async (server) => {
    const diagnostics = await server.open(uri, lines.join('\n'));
    t.is(diagnostics.length, 1, JSON.stringify(diagnostics));
    t.is(diagnostics[0]!.range.start.line, at, 'the line of the misspelt key (0-based)');
    t.regex(diagnostics[0]!.message, /wrokload.*not allowed|not allowed.*wrokload/i);

    const nestedUri = uri.replace('misspelt-by-test', 'misspelt-nested-by-test');
    const inner = await server.open(nestedUri, nested);
    t.is(inner.length, 1, JSON.stringify(inner));
    t.is(inner[0]!.range.start.line, nestedLine);
    t.regex(inner[0]!.message, /serviceAcount.*not allowed|not allowed.*serviceAcount/i);
  });
  await t.throwsAsync(fs.access(new URL(uri)), undefined, 'the test wrote nothing into examples/');
});

test("the YAML language server checks a runlist entry's attributes against that recipe's schema (if/then on recipe)", async (t) => {
  const original = await fs.readFile(path.join(PROJECT, 'runlists/demo.yaml'), 'utf8');
  t.true(original.includes('serviceCidr: 10.63.240.0/20'));
  const text = original.replace('serviceCidr: 10.63.240.0/20', 'serviceCIDR: 10.63.240.0/20');
  const line = text.split('\n').findIndex((l) => l.includes('serviceCIDR'));
  // the same key under a recipe that does not take it is refused too: clusterDns belongs to dns, not to sidecar
  const wrongRecipe = original.replace('inboundPorts: [27017, 3306, 8080]', 'clusterDns: 10.150.0.7');
  await withServer(async (server) => {
    const diagnostics = await server.open(pathToFileURL(path.join(PROJECT, 'runlists/misspelt-by-test.yaml')).href, text);
    t.is(diagnostics.length, 1, JSON.stringify(diagnostics));
    t.is(diagnostics[0]!.range.start.line, line);
    t.regex(diagnostics[0]!.message, /serviceCIDR/);
    const wrong = await server.open(pathToFileURL(path.join(PROJECT, 'runlists/wrong-recipe-by-test.yaml')).href, wrongRecipe);
    const sidecarLine = wrongRecipe
      .split('\n')
      .findIndex((l, i) => i > wrongRecipe.split('\n').findIndex((x) => x.includes('recipe: sidecar')) && l.includes('clusterDns'));
    t.true(sidecarLine > 0);
    t.deepEqual(
      wrong.map((d) => d.range.start.line),
      [sidecarLine],
      JSON.stringify(wrong),
    );
  });
});
