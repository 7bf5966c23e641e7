/**
 * Logging: one output channel ("CoDiLA") shared by the extension and the language client, which writes the
 * server's stderr and the LSP trace into it. The server's stderr lines keep the level the server logged them
 * at (vscode-languageclient would log every one of them as an error).
 */
import * as readline from 'readline';
import type { Readable } from 'stream';
import * as vscode from 'vscode';

export const CHANNEL_NAME = 'CoDiLA';

export function createLogChannel(): vscode.LogOutputChannel {
    return vscode.window.createOutputChannel(CHANNEL_NAME, { log: true });
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const PYTHON_LEVELS: Record<string, LogLevel> = { DEBUG: 'debug', INFO: 'info', WARNING: 'warn', ERROR: 'error', CRITICAL: 'error' };
// lsp_server's LOG_FORMAT, "%(asctime)s %(levelname)s %(name)s %(message)s":
// "2026-12-07 08:31:05,203 INFO lsp_server.engine settings: {...}"
const RECORD = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) /;

/**
 * The level of one line of the server's stderr. A log record says its own; a line that is not one continues
 * the record before it (a traceback after "ERROR ...", a progress bar after "INFO ..."); `previous` is
 * undefined before the first record, and a line there is Python's own complaint ("No module named
 * lsp_server", an uncaught traceback): an error.
 */
export function stderrLevel(line: string, previous: LogLevel | undefined): LogLevel {
    const record = RECORD.exec(line);
    if (record) {
        return PYTHON_LEVELS[record[1]];
    }
    if (line.startsWith('Traceback (most recent call last)')) {
        return 'error';
    }
    return previous ?? 'error';
}

/** vscode-languageclient's `stdioOptions.stderr`: each line of the server's stderr at its own level. */
export function logServerStderr(input: Readable, channel: vscode.LogOutputChannel): void {
    let level: LogLevel | undefined;
    lines(input, (line) => {
        level = stderrLevel(line, level);
        channel[level](line);
    });
}

/** vscode-languageclient's `stdioOptions.stdout` (stdout is the protocol over stdio; other transports): info. */
export function logServerStdout(input: Readable, channel: vscode.LogOutputChannel): void {
    lines(input, (line) => channel.info(line));
}

function lines(input: Readable, onLine: (line: string) => void): void {
    readline.createInterface({ input, crlfDelay: Infinity, terminal: false, historySize: 0 }).on('line', onLine);
}
