import './vscodeStub';
import * as assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ClientFactory, LazyStart, Server, clientOptions, documentSelector, expandVariables, serverExecutable } from '../server';
import { ClientSettings } from '../settings';

const settings = (overrides: Partial<ClientSettings> = {}): ClientSettings => ({
    pythonPath: '',
    serverArgs: [],
    serverEnv: {},
    languages: ['python'],
    ...overrides,
});
const linux = { platform: 'linux' as NodeJS.Platform, workspaceFolder: '/w', env: { PATH: '/usr/bin', HOME: '/home/u' }, home: '/home/u' };

test('the server starts as `<python> -m lsp_server` with python3 on POSIX and python on Windows', () => {
    const posix = serverExecutable(settings(), linux);
    assert.equal(posix.command, 'python3');
    assert.deepEqual(posix.args, ['-m', 'lsp_server']);
    assert.equal(posix.options?.cwd, '/w');
    assert.equal(posix.options?.env?.PATH, '/usr/bin');
    assert.equal(serverExecutable(settings(), { ...linux, platform: 'win32' }).command, 'python');
});

test('pythonPath, serverArgs and serverEnv expand ${workspaceFolder}, ${env:X} and ~', () => {
    const executable = serverExecutable(
        settings({
            pythonPath: '${workspaceFolder}/.venv/bin/python',
            serverArgs: ['--log-file', '~/codila.log'],
            serverEnv: { CUDA_VISIBLE_DEVICES: '1', HF_HOME: '${env:HOME}/hf' },
        }),
        linux,
    );
    assert.equal(executable.command, '/w/.venv/bin/python');
    assert.deepEqual(executable.args, ['-m', 'lsp_server', '--log-file', '/home/u/codila.log']);
    assert.equal(executable.options?.env?.CUDA_VISIBLE_DEVICES, '1');
    assert.equal(executable.options?.env?.HF_HOME, '/home/u/hf');
    assert.equal(expandVariables('${workspaceFolder}/x', undefined, {}, '/h'), '${workspaceFolder}/x', 'no folder: left as typed');
});

test('the client attaches to file and untitled documents of the configured languages', () => {
    assert.deepEqual(documentSelector(['python', 'go']), [
        { scheme: 'file', language: 'python' },
        { scheme: 'untitled', language: 'python' },
        { scheme: 'file', language: 'go' },
        { scheme: 'untitled', language: 'go' },
    ]);
});

function hooksWith(serverSettings: Record<string, unknown>) {
    return {
        log: {} as any,
        clientSettings: () => settings(),
        serverSettings: () => serverSettings,
        onStatus: () => undefined,
        onStateChange: () => undefined,
    };
}

test('initializationOptions, didChangeConfiguration and workspace/configuration all carry the validated settings', async () => {
    const validated = { preset: 'fast', blockSize: null };
    const sent: unknown[] = [];
    const options = clientOptions(hooksWith(validated), ['python'], async (type, params) => {
        sent.push({ method: type.method, params });
    });
    assert.equal(options.synchronize?.configurationSection, 'codila');
    assert.deepEqual((options.initializationOptions as () => unknown)(), validated);

    let nextCalled = false;
    await options.middleware!.workspace!.didChangeConfiguration!(['codila'], async () => {
        nextCalled = true;
    });
    assert.equal(nextCalled, false, 'the raw section (with client-only keys) is never sent');
    assert.deepEqual(sent, [{ method: 'workspace/didChangeConfiguration', params: { settings: { codila: validated } } }]);

    const raw = { pythonPath: '/venv/bin/python', preset: 'fast', blockSize: 99 };
    const answer = await options.middleware!.workspace!.configuration!(
        { items: [{ section: 'codila' }, { section: 'editor' }] },
        {} as any,
        async () => [raw, { tabSize: 4 }],
    );
    assert.deepEqual(answer, [validated, { tabSize: 4 }]);
});

/** A language client whose start and stop take a while, as a real one's do (a process, a handshake). */
class FakeClient {
    static made: FakeClient[] = [];
    running = false;
    constructor() {
        FakeClient.made.push(this);
    }
    async start(): Promise<void> {
        await later();
        this.running = true;
    }
    async stop(): Promise<void> {
        await later();
        this.running = false;
    }
    isRunning(): boolean {
        return this.running;
    }
    onNotification() {
        return { dispose: () => undefined };
    }
    onDidChangeState() {
        return { dispose: () => undefined };
    }
    async sendNotification(): Promise<void> {}
}
const later = () => new Promise<void>((resolve) => setTimeout(resolve, 5));
const fakeFactory = (() => new FakeClient()) as unknown as ClientFactory;
const quietHooks = () => ({
    ...hooksWith({}),
    log: { info: () => undefined, warn: () => undefined, error: () => undefined } as any,
});
const running = () => FakeClient.made.filter((client) => client.running);

test('two quick restarts (two setting changes) leave exactly one client running', async () => {
    FakeClient.made = [];
    const server = new Server(quietHooks(), fakeFactory);
    await server.start();
    await Promise.all([server.restart(), server.restart()]);
    assert.equal(running().length, 1);
    assert.equal(server.languageClient, running()[0] as unknown);
    // The second asked while the first still waited to run: one restart, so one new process.
    assert.equal(FakeClient.made.length, 2);
});

test('a restart asked for while one runs runs after it, and a stop after both wins', async () => {
    FakeClient.made = [];
    const server = new Server(quietHooks(), fakeFactory);
    await server.start();
    const first = server.restart();
    await later(); // the first restart is now stopping the old client
    const second = server.restart();
    await Promise.all([first, second]);
    assert.equal(FakeClient.made.length, 3, 'the second restart may carry settings the first did not read');
    assert.equal(running().length, 1);
    const restart = server.restart();
    const stop = server.stop();
    await Promise.all([restart, stop]);
    assert.equal(running().length, 0);
    assert.equal(server.requested, false);
});

test('the server starts once a document of one of codila.languages is open, not before', () => {
    const listeners: ((document: { languageId: string }) => unknown)[] = [];
    const workspace = {
        textDocuments: [{ languageId: 'markdown' }],
        onDidOpenTextDocument: (listener: (document: { languageId: string }) => unknown) => {
            listeners.push(listener);
            return { dispose: () => listeners.splice(listeners.indexOf(listener), 1) };
        },
    };
    let languages = ['python'];
    const server = { requested: false, starts: 0, start: async () => undefined };
    server.start = async () => {
        server.starts += 1;
        server.requested = true;
    };
    const lazy = new LazyStart(server, () => languages, workspace);
    assert.equal(server.starts, 0, 'a Markdown file needs no server');
    // A language added through codila.languages (not among the package's defaults) starts it too.
    languages = ['python', 'lua'];
    listeners.forEach((listener) => listener({ languageId: 'lua' }));
    assert.equal(server.starts, 1);
    listeners.forEach((listener) => listener({ languageId: 'python' }));
    assert.equal(server.starts, 1, 'started once');
    lazy.dispose();
    assert.equal(listeners.length, 0);
});

test("the settings change that adds an open document's language starts the server", () => {
    const workspace = { textDocuments: [{ languageId: 'lua' }], onDidOpenTextDocument: () => ({ dispose: () => undefined }) };
    let languages = ['python'];
    let starts = 0;
    const server = { requested: false, start: async () => void (starts += 1) };
    const lazy = new LazyStart(server, () => languages, workspace);
    assert.equal(starts, 0);
    languages = ['lua'];
    lazy.check();
    assert.equal(starts, 1);
});

test('the extension activates for documents of any language, so codila.languages decides', () => {
    const packageJson = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8'));
    assert.deepEqual(packageJson.activationEvents, ['onLanguage']);
});
