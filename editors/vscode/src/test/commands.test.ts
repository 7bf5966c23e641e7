import { recorded, resetRecorded, vscodeStub } from './vscodeStub';
import * as assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';
import { COMMANDS, CommandHost, SERVER_COMMANDS, infillArguments, notAppliedReason, registerCommands, trainArguments } from '../commands';

beforeEach(resetRecorded);

const window = vscodeStub.window as { activeTextEditor: unknown };
const workspace = vscodeStub.workspace as { workspaceFolders: unknown };

function fakeHost(answer: () => Promise<unknown> = async () => null) {
    const calls: { command: string; args: unknown[] }[] = [];
    const busy: string[] = [];
    const host: CommandHost = {
        executeServerCommand: (command, args) => {
            calls.push({ command, args });
            return answer();
        },
        whileBusy: async (label, work) => {
            busy.push(label);
            return work();
        },
        restartServer: async () => undefined,
        showLog: () => undefined,
    };
    return { host, calls, busy };
}

function editorWithSelection(uri: string, start: [number, number], end: [number, number]) {
    return {
        document: { uri: { toString: () => uri } },
        selection: {
            start: { line: start[0], character: start[1] },
            end: { line: end[0], character: end[1] },
            isEmpty: start[0] === end[0] && start[1] === end[1],
        },
    };
}

test('infill arguments are [uri, LSP range] of the selection', () => {
    const built = infillArguments('file:///w/a.py', {
        start: { line: 2, character: 4 },
        end: { line: 5, character: 0 },
        isEmpty: false,
    });
    assert.deepEqual(built, {
        args: ['file:///w/a.py', { start: { line: 2, character: 4 }, end: { line: 5, character: 0 } }],
    });
    const empty = infillArguments('file:///w/a.py', { start: { line: 1, character: 1 }, end: { line: 1, character: 1 }, isEmpty: true });
    assert.ok('error' in empty);
});

test('client command ids never collide with the server commands vscode-languageclient registers', () => {
    const { host } = fakeHost();
    const context = { subscriptions: [] as { dispose(): void }[] };
    registerCommands(context as any, host);
    assert.deepEqual([...recorded.commands.keys()].sort(), Object.values(COMMANDS).sort());
    for (const serverCommand of Object.values(SERVER_COMMANDS)) {
        assert.ok(!recorded.commands.has(serverCommand));
    }
    assert.equal(context.subscriptions.length, 4, 'every command disposable goes into context.subscriptions');
    context.subscriptions.forEach((d) => d.dispose());
    assert.equal(recorded.commands.size, 0);
});

test('infill selection sends codila.infillSelection with the active document and selection', async () => {
    const { host, calls, busy } = fakeHost();
    registerCommands({ subscriptions: [] } as any, host);
    window.activeTextEditor = editorWithSelection('file:///w/%F0%9F%98%80.py', [3, 2], [4, 7]);
    await recorded.commands.get(COMMANDS.infillSelection)!();
    assert.deepEqual(calls, [
        {
            command: 'codila.infillSelection',
            args: ['file:///w/%F0%9F%98%80.py', { start: { line: 3, character: 2 }, end: { line: 4, character: 7 } }],
        },
    ]);
    assert.deepEqual(busy, ['infilling']);
    assert.deepEqual(recorded.errors, []);
});

test('infill without a selection or editor warns and sends nothing', async () => {
    const { host, calls } = fakeHost();
    registerCommands({ subscriptions: [] } as any, host);
    window.activeTextEditor = editorWithSelection('file:///w/a.py', [3, 2], [3, 2]);
    await recorded.commands.get(COMMANDS.infillSelection)!();
    window.activeTextEditor = undefined;
    await recorded.commands.get(COMMANDS.infillSelection)!();
    assert.deepEqual(calls, []);
    assert.equal(recorded.warnings.length, 2);
    assert.match(recorded.warnings[0], /^CoDiLA: Select the code to infill/);
});

test('a failing server command is reported to the user', async () => {
    const { host } = fakeHost(async () => {
        throw new Error('the server is not running');
    });
    registerCommands({ subscriptions: [] } as any, host);
    window.activeTextEditor = editorWithSelection('file:///w/a.py', [0, 0], [1, 0]);
    await recorded.commands.get(COMMANDS.infillSelection)!();
    assert.deepEqual(recorded.errors, ['CoDiLA: codila.infillSelection failed: the server is not running']);
});

test('an infill the server did not apply is explained to the user', async () => {
    const { host } = fakeHost(async () => ({ applied: false, reason: 'the document changed while infilling' }));
    registerCommands({ subscriptions: [] } as any, host);
    window.activeTextEditor = editorWithSelection('file:///w/a.py', [0, 0], [1, 0]);
    await recorded.commands.get(COMMANDS.infillSelection)!();
    assert.deepEqual(recorded.warnings, ['CoDiLA: the infill was not applied: the document changed while infilling']);
    assert.equal(notAppliedReason({ applied: true, text: 'x' }), undefined);
    assert.equal(notAppliedReason(null), undefined);
});

test('train on workspace sends every workspace folder', async () => {
    assert.deepEqual(trainArguments(undefined), []);
    const { host, calls, busy } = fakeHost();
    registerCommands({ subscriptions: [] } as any, host);
    workspace.workspaceFolders = [{ uri: { toString: () => 'file:///w/one' } }, { uri: { toString: () => 'file:///w/two' } }];
    await recorded.commands.get(COMMANDS.trainOnWorkspace)!();
    workspace.workspaceFolders = undefined;
    assert.deepEqual(calls, [{ command: 'codila.trainOnWorkspace', args: ['file:///w/one', 'file:///w/two'] }]);
    assert.deepEqual(busy, ['training']);
});
