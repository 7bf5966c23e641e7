/**
 * Commands: each builds the arguments of a server command from the editor's state and sends
 * workspace/executeCommand. Argument construction is pure and unit-tested.
 *
 * The client's command ids differ from the server's (`codila.infillSelection`, `codila.trainOnWorkspace`)
 * because vscode-languageclient registers the server's executeCommand ids itself.
 */
import * as vscode from 'vscode';

export const COMMANDS = {
    infillSelection: 'codila.editor.infillSelection',
    trainOnWorkspace: 'codila.editor.trainOnWorkspace',
    restartServer: 'codila.restartServer',
    showLog: 'codila.showLog',
} as const;

export const SERVER_COMMANDS = {
    infillSelection: 'codila.infillSelection',
    trainOnWorkspace: 'codila.trainOnWorkspace',
} as const;

/** LSP positions and ranges: 0-based lines, UTF-16 code units (the same units as vscode.Position). */
export interface LspPosition {
    line: number;
    character: number;
}
export interface LspRange {
    start: LspPosition;
    end: LspPosition;
}

export interface SelectionLike {
    start: LspPosition;
    end: LspPosition;
    isEmpty: boolean;
}

/** `[uri, range]` for codila.infillSelection, or a message saying why there is nothing to infill. */
export function infillArguments(
    uri: string,
    selection: SelectionLike,
): { args: [string, LspRange] } | { error: string } {
    if (selection.isEmpty) {
        return { error: 'Select the code to infill first: the server rewrites the selected range.' };
    }
    const range: LspRange = {
        start: { line: selection.start.line, character: selection.start.character },
        end: { line: selection.end.line, character: selection.end.character },
    };
    return { args: [uri, range] };
}

/** `[folderUri, ...]` for codila.trainOnWorkspace: every open workspace folder. */
export function trainArguments(folders: readonly { uri: { toString(): string } }[] | undefined): string[] {
    return (folders ?? []).map((folder) => folder.uri.toString());
}

/** What the commands need from the rest of the extension. */
export interface CommandHost {
    executeServerCommand(command: string, args: unknown[]): Promise<unknown>;
    whileBusy<T>(label: string, work: () => Promise<T>): Promise<T>;
    restartServer(): Promise<void>;
    showLog(): void;
}

export function registerCommands(context: vscode.ExtensionContext, host: CommandHost): void {
    context.subscriptions.push(
        vscode.commands.registerCommand(COMMANDS.infillSelection, () => infillSelection(host)),
        vscode.commands.registerCommand(COMMANDS.trainOnWorkspace, () => trainOnWorkspace(host)),
        vscode.commands.registerCommand(COMMANDS.restartServer, () => host.restartServer()),
        vscode.commands.registerCommand(COMMANDS.showLog, () => host.showLog()),
    );
}

export async function infillSelection(host: CommandHost): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (!editor) {
        void vscode.window.showWarningMessage('CoDiLA: open a file and select the code to infill.');
        return;
    }
    const built = infillArguments(editor.document.uri.toString(), editor.selection);
    if ('error' in built) {
        void vscode.window.showWarningMessage(`CoDiLA: ${built.error}`);
        return;
    }
    // The server replaces the range through workspace/applyEdit; nothing to apply here.
    const result = await runServerCommand(host, 'infilling', SERVER_COMMANDS.infillSelection, built.args);
    const reason = notAppliedReason(result);
    if (reason !== undefined) {
        void vscode.window.showWarningMessage(`CoDiLA: the infill was not applied: ${reason}`);
    }
}

/** The server answers codila.infillSelection with `{ applied, reason?, text? }`. */
export function notAppliedReason(result: unknown): string | undefined {
    const answer = result as { applied?: unknown; reason?: unknown } | null | undefined;
    if (!answer || answer.applied !== false) {
        return undefined;
    }
    return typeof answer.reason === 'string' ? answer.reason : 'the editor refused the edit';
}

export async function trainOnWorkspace(host: CommandHost): Promise<void> {
    const folders = trainArguments(vscode.workspace.workspaceFolders);
    if (folders.length === 0) {
        void vscode.window.showWarningMessage('CoDiLA: open a folder to train on.');
        return;
    }
    await runServerCommand(host, 'training', SERVER_COMMANDS.trainOnWorkspace, folders);
}

async function runServerCommand(host: CommandHost, label: string, command: string, args: unknown[]): Promise<unknown> {
    try {
        return await host.whileBusy(label, () => host.executeServerCommand(command, args));
    } catch (error) {
        void vscode.window.showErrorMessage(`CoDiLA: ${command} failed: ${errorMessage(error)}`);
        return undefined;
    }
}

function errorMessage(error: unknown): string {
    return error instanceof Error ? error.message : String(error);
}
