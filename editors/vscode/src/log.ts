/**
 * Logging: one output channel ("CoDiLA") shared by the extension and the language client, which writes the
 * server's stderr and the LSP trace into it.
 */
import * as vscode from 'vscode';

export const CHANNEL_NAME = 'CoDiLA';

export function createLogChannel(): vscode.LogOutputChannel {
    return vscode.window.createOutputChannel(CHANNEL_NAME, { log: true });
}
