import './vscodeStub';
import * as assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { LogLevel, logServerStderr, stderrLevel } from '../log';

test("the server's log records keep their level; Python's own complaints are errors", () => {
    assert.equal(stderrLevel('2026-12-07 08:31:05,203 INFO lsp_server.engine settings: {}', undefined), 'info');
    assert.equal(stderrLevel('2026-12-07 08:31:05,203 DEBUG pygls.protocol sent', 'info'), 'debug');
    assert.equal(stderrLevel('2026-12-07 08:31:05,203 WARNING lsp_server.engine setting refused: x', 'info'), 'warn');
    assert.equal(stderrLevel('2026-12-07 08:31:05,203 ERROR lsp_server.engine completion failed', 'info'), 'error');
    assert.equal(stderrLevel('2026-12-07 08:31:05,203 CRITICAL x y', 'info'), 'error');
    // Further lines continue their record: a progress bar after INFO, a traceback after ERROR.
    assert.equal(stderrLevel('Loading weights: 100%|██████████| 27/27', 'info'), 'info');
    assert.equal(stderrLevel('  File "x.py", line 1, in <module>', 'error'), 'error');
    assert.equal(stderrLevel('Traceback (most recent call last):', 'info'), 'error');
    // Before any record: the interpreter speaks (wrong codila.pythonPath).
    assert.equal(stderrLevel('/usr/bin/python3: No module named lsp_server', undefined), 'error');
});

test('logServerStderr writes each line to the channel method of its level', async () => {
    const written: [LogLevel, string][] = [];
    const channel = Object.fromEntries(
        (['debug', 'info', 'warn', 'error'] as LogLevel[]).map((level) => [level, (line: string) => written.push([level, line])]),
    ) as any;
    const input = new PassThrough();
    logServerStderr(input, channel);
    input.end('2026-12-07 08:31:05,203 INFO a b\nLoading 1/2\n2026-12-07 08:31:06,000 ERROR a failed\nTraceback line\n');
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(written, [
        ['info', '2026-12-07 08:31:05,203 INFO a b'],
        ['info', 'Loading 1/2'],
        ['error', '2026-12-07 08:31:06,000 ERROR a failed'],
        ['error', 'Traceback line'],
    ]);
});
