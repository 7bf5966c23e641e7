import './vscodeStub';
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { clientOptions, documentSelector, expandVariables, serverExecutable } from '../server';
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
