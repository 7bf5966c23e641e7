/**
 * The server process: the command line that starts `python -m lsp_server`, and the language client around it
 * (start, restart, stop). Settings reach the server validated, through all three LSP paths.
 */
import * as os from 'os';
import * as vscode from 'vscode';
import {
    DidChangeConfigurationNotification,
    Executable,
    LanguageClient,
    LanguageClientOptions,
    State,
} from 'vscode-languageclient/node';
import { ClientSettings, SECTION, ServerSettings } from './settings';

export const CLIENT_ID = 'codila';
export const STATUS_NOTIFICATION = 'codila/status';

/** Expand `${workspaceFolder}` and `${env:NAME}`; `~` at the start becomes the home folder. */
export function expandVariables(value: string, workspaceFolder: string | undefined, env: NodeJS.ProcessEnv, home: string): string {
    let out = value.replace(/\$\{env:([^}]+)\}/g, (_match, name: string) => env[name] ?? '');
    if (workspaceFolder !== undefined) {
        out = out.replace(/\$\{workspaceFolder\}/g, workspaceFolder);
    }
    if (out === '~' || out.startsWith('~/')) {
        out = home + out.slice(1);
    }
    return out;
}

/** The command that starts the server: `<python> -m lsp_server <serverArgs...>` with serverEnv added. */
export function serverExecutable(
    settings: ClientSettings,
    context: { platform: NodeJS.Platform; workspaceFolder?: string; env: NodeJS.ProcessEnv; home: string },
): Executable {
    const expand = (value: string) => expandVariables(value, context.workspaceFolder, context.env, context.home);
    const python = settings.pythonPath.trim() === '' ? (context.platform === 'win32' ? 'python' : 'python3') : expand(settings.pythonPath);
    const env: NodeJS.ProcessEnv = { ...context.env };
    for (const [name, value] of Object.entries(settings.serverEnv)) {
        env[name] = expand(value);
    }
    return {
        command: python,
        args: ['-m', 'lsp_server', ...settings.serverArgs.map(expand)],
        options: { env, cwd: context.workspaceFolder },
    };
}

/** file and untitled documents of the configured languages. */
export function documentSelector(languages: string[]): { scheme: string; language: string }[] {
    return languages.flatMap((language) => [
        { scheme: 'file', language },
        { scheme: 'untitled', language },
    ]);
}

export interface ServerHooks {
    log: vscode.LogOutputChannel;
    /** Read and validate the settings now (problems already reported). */
    clientSettings(): ClientSettings;
    serverSettings(): ServerSettings;
    onStatus(params: unknown): void;
    onStateChange(running: boolean, reason?: string): void;
}

/** Notifications go out through `send`, i.e. the running client. */
export function clientOptions(
    hooks: ServerHooks,
    languages: string[],
    send: (method: typeof DidChangeConfigurationNotification.type, params: { settings: unknown }) => Promise<void>,
): LanguageClientOptions {
    return {
        documentSelector: documentSelector(languages),
        outputChannel: hooks.log,
        initializationOptions: () => hooks.serverSettings(),
        synchronize: { configurationSection: SECTION },
        middleware: {
            workspace: {
                // Push: send the validated server settings, not the raw section (which holds client keys).
                didChangeConfiguration: async (_sections, _next) => {
                    await send(DidChangeConfigurationNotification.type, { settings: { [SECTION]: hooks.serverSettings() } });
                },
                // Pull: answer workspace/configuration for "codila" the same way.
                configuration: async (params, token, next) => {
                    const answers = await next(params, token);
                    if (!Array.isArray(answers)) {
                        return answers;
                    }
                    return params.items.map((item, index) => (item.section === SECTION ? hooks.serverSettings() : answers[index]));
                },
            },
        },
    };
}

/** Start, restart and stop the one language client of this extension. */
export class Server implements vscode.Disposable {
    private client: LanguageClient | undefined;
    private readonly listeners: vscode.Disposable[] = [];

    constructor(private readonly hooks: ServerHooks) {}

    get languageClient(): LanguageClient | undefined {
        return this.client;
    }

    async start(): Promise<void> {
        const settings = this.hooks.clientSettings();
        const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
        const executable = serverExecutable(settings, {
            platform: process.platform,
            workspaceFolder: folder,
            env: process.env,
            home: os.homedir(),
        });
        this.hooks.log.info(`Starting ${executable.command} ${(executable.args ?? []).join(' ')}`);
        const options = clientOptions(this.hooks, settings.languages, (type, params) => client.sendNotification(type, params));
        const client = new LanguageClient(CLIENT_ID, 'CoDiLA', { run: executable, debug: executable }, options);
        this.client = client;
        this.listeners.push(
            client.onNotification(STATUS_NOTIFICATION, (params) => this.hooks.onStatus(params)),
            client.onDidChangeState((event) => {
                if (event.newState === State.Stopped) {
                    this.hooks.onStateChange(false);
                } else if (event.newState === State.Running) {
                    this.hooks.onStateChange(true);
                }
            }),
        );
        try {
            await client.start();
        } catch (error) {
            const reason = error instanceof Error ? error.message : String(error);
            this.hooks.log.error(`Server failed to start: ${reason}`);
            this.hooks.onStateChange(false, reason);
            void vscode.window.showErrorMessage(
                `CoDiLA: the server did not start (${reason}). Check codila.pythonPath: that interpreter needs the project installed.`,
            );
        }
    }

    async stop(): Promise<void> {
        const client = this.client;
        this.client = undefined;
        for (const listener of this.listeners.splice(0)) {
            listener.dispose();
        }
        if (client && client.isRunning()) {
            await client.stop();
        }
    }

    async restart(): Promise<void> {
        await this.stop();
        await this.start();
    }

    async executeCommand(command: string, args: unknown[]): Promise<unknown> {
        if (!this.client || !this.client.isRunning()) {
            throw new Error('the server is not running');
        }
        return this.client.sendRequest('workspace/executeCommand', { command, arguments: args });
    }

    dispose(): void {
        void this.stop();
    }
}
