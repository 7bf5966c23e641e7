import { recorded, resetRecorded } from './vscodeStub';
import * as assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';
import { StatusBar, parseServerStatus, render } from '../statusBar';

beforeEach(resetRecorded);

const status = (state: string, message = '', lastLatencyMs: number | null = null) => ({ state, message, lastLatencyMs });

test('the item follows the server: starting -> loading model -> ready with latency -> error', () => {
    const bar = new StatusBar('codila.showLog');
    const item = recorded.statusItems[0];
    assert.equal(item.visible, true);
    assert.equal(item.command, 'codila.showLog');
    assert.equal(item.text, '$(loading~spin) CoDiLA: starting');

    bar.onServerStatus(status('loading', 'Loading dlm from /models/dlm'));
    assert.equal(item.text, '$(loading~spin) CoDiLA: loading model');
    assert.equal(item.tooltip, 'Loading dlm from /models/dlm');

    bar.onServerStatus(status('ready', 'Model ready', null));
    assert.equal(item.text, '$(check) CoDiLA');

    bar.onServerStatus(status('ready', 'Model ready', 123.6));
    assert.equal(item.text, '$(check) CoDiLA 124 ms');
    assert.equal(item.backgroundColor, undefined);

    bar.onServerStatus(status('error', 'CUDA out of memory'));
    assert.equal(item.text, '$(error) CoDiLA: error');
    assert.equal(item.tooltip, 'CUDA out of memory');
    assert.equal((item.backgroundColor as unknown as { id: string }).id, 'statusBarItem.errorBackground');

    bar.onServerStatus(status('training', 'epoch 1/3'));
    assert.equal(item.text, '$(sync~spin) CoDiLA: training');
    assert.equal(item.backgroundColor, undefined, 'the error colour goes away with the error');
});

test('malformed codila/status payloads are ignored', () => {
    assert.equal(parseServerStatus(null), undefined);
    assert.equal(parseServerStatus({ state: 'sleeping' }), undefined);
    assert.deepEqual(parseServerStatus({ state: 'ready', lastLatencyMs: 'fast' }), status('ready', '', null));
    const bar = new StatusBar('codila.showLog');
    bar.onServerStatus(status('ready', '', 50));
    bar.onServerStatus({ state: 42 });
    assert.equal(recorded.statusItems[0].text, '$(check) CoDiLA 50 ms');
});

test('a stopped server shows why', () => {
    assert.equal(render({ kind: 'stopped' }).error, false);
    const crashed = render({ kind: 'stopped', reason: 'spawn python3 ENOENT' });
    assert.equal(crashed.text, '$(circle-slash) CoDiLA: stopped');
    assert.equal(crashed.tooltip, 'Server stopped: spawn python3 ENOENT');
    assert.equal(crashed.error, true);
});

test('a busy label shows during an operation and the previous state comes back even when it fails', async () => {
    const bar = new StatusBar('codila.showLog');
    const item = recorded.statusItems[0];
    bar.onServerStatus(status('ready', '', 80));
    let during = '';
    await bar.whileBusy('infilling', async () => {
        during = item.text;
    });
    assert.equal(during, '$(loading~spin) CoDiLA: infilling');
    assert.equal(item.text, '$(check) CoDiLA 80 ms');

    await assert.rejects(bar.whileBusy('infilling', async () => {
        throw new Error('boom');
    }));
    assert.equal(item.text, '$(check) CoDiLA 80 ms');
});

test('a status that arrives while busy is shown once the operation ends', async () => {
    const bar = new StatusBar('codila.showLog');
    const item = recorded.statusItems[0];
    bar.onServerStatus(status('ready', '', 80));
    await bar.whileBusy('infilling', async () => {
        bar.onServerStatus(status('ready', '', 95));
        assert.equal(item.text, '$(loading~spin) CoDiLA: infilling');
    });
    assert.equal(item.text, '$(check) CoDiLA 95 ms');
});
