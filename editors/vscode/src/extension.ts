/**
 * Entry point: wires the modules together and does nothing else. Every disposable goes into
 * context.subscriptions.
 */
import * as vscode from 'vscode';
import { COMMANDS, registerCommands } from './commands';
import { createLogChannel } from './log';
import { LazyStart, Server } from './server';
import { RESTART_KEYS, SECTION, resolveClientSettings, resolveServerSettings, schemaFromPackageJson } from './settings';
import { StatusBar } from './statusBar';

let server: Server | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
    const log = createLogChannel();
    const statusBar = new StatusBar(COMMANDS.showLog);
    const schema = schemaFromPackageJson(context.extension.packageJSON);
    const reported = new Set<string>();
    const report = (problems: string[]) => {
        for (const problem of problems) {
            log.warn(problem);
            if (!reported.has(problem)) {
                reported.add(problem);
                void vscode.window.showWarningMessage(`CoDiLA: ${problem}`);
            }
        }
    };
    const config = () => vscode.workspace.getConfiguration(SECTION);
    const languages = () => resolveClientSettings(config(), schema).value.languages;

    server = new Server({
        log,
        clientSettings: () => {
            const { value, problems } = resolveClientSettings(config(), schema);
            report(problems);
            return value;
        },
        serverSettings: () => {
            const { value, problems } = resolveServerSettings(config(), schema);
            report(problems);
            return value;
        },
        onStatus: (params) => statusBar.onServerStatus(params),
        onStateChange: (running, reason) => statusBar.set(running ? { kind: 'starting' } : { kind: 'stopped', reason }),
    });
    const running = server;
    const lazyStart = new LazyStart(running, languages, vscode.workspace);
    context.subscriptions.push(log, statusBar, running, lazyStart);

    registerCommands(context, {
        executeServerCommand: (command, args) => running.executeCommand(command, args),
        whileBusy: (label, work) => statusBar.whileBusy(label, work),
        restartServer: () => running.restart(),
        showLog: () => log.show(),
    });
    context.subscriptions.push(
        vscode.workspace.onDidChangeConfiguration((event) => {
            if (event.affectsConfiguration(SECTION)) {
                reported.clear();
            }
            if (RESTART_KEYS.some((key) => event.affectsConfiguration(`${SECTION}.${key}`))) {
                if (running.requested) {
                    void running.restart();
                } else {
                    // codila.languages may now name a language of an open document.
                    lazyStart.check();
                }
            }
        }),
    );
}

export async function deactivate(): Promise<void> {
    await server?.stop();
    server = undefined;
}
