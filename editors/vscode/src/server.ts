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
import { logServerStderr, logServerStdout } from './log';
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
        stdioOptions: { stdout: logServerStdout, stderr: logServerStderr },
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

/** Makes the language client; tests pass a fake. */
export type ClientFactory = (executable: Executable, options: LanguageClientOptions) => LanguageClient;

const newLanguageClient: ClientFactory = (executable, options) =>
    new LanguageClient(CLIENT_ID, 'CoDiLA', { run: executable, debug: executable }, options);

/**
 * Start, restart and stop the one language client of this extension. The three run one after another, in
 * the order asked (each waits for the previous to finish), so two quick setting changes cannot leave two
 * clients running; a restart asked for while another is still waiting to run is that same restart.
 */
export class Server implements vscode.Disposable {
    private client: LanguageClient | undefined;
    private readonly listeners: vscode.Disposable[] = [];
    private queue: Promise<void> = Promise.resolve();
    private queuedRestart: Promise<void> | undefined;
    private wanted = false;

    constructor(
        private readonly hooks: ServerHooks,
        private readonly createClient: ClientFactory = newLanguageClient,
    ) {}

    get languageClient(): LanguageClient | undefined {
        return this.client;
    }

    /** Whether a start was asked for (and no stop since). */
    get requested(): boolean {
        return this.wanted;
    }

    start(): Promise<void> {
        this.wanted = true;
        return this.enqueue(() => this.startNow());
    }

    stop(): Promise<void> {
        this.wanted = false;
        return this.enqueue(() => this.stopNow());
    }

    restart(): Promise<void> {
        this.wanted = true;
        if (this.queuedRestart === undefined) {
            this.queuedRestart = this.enqueue(async () => {
                // From here on a new request is a new restart: it may carry settings this one did not read.
                this.queuedRestart = undefined;
                await this.stopNow();
                await this.startNow();
            });
        }
        return this.queuedRestart;
    }

    /** Run `step` after every step asked for before it, whether those failed or not. */
    private enqueue(step: () => Promise<void>): Promise<void> {
        const done = this.queue.then(step, step);
        this.queue = done.catch(() => undefined);
        return done;
    }

    private async startNow(): Promise<void> {
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
        const client = this.createClient(executable, options);
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

    private async stopNow(): Promise<void> {
        const client = this.client;
        this.client = undefined;
        for (const listener of this.listeners.splice(0)) {
            listener.dispose();
        }
        if (client && client.isRunning()) {
            await client.stop();
        }
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

/** The part of `vscode.workspace` that LazyStart watches. */
export interface OpenDocuments {
    readonly textDocuments: readonly { languageId: string }[];
    onDidOpenTextDocument(listener: (document: { languageId: string }) => unknown): vscode.Disposable;
}

/**
 * Starts the server once a document of one of `languages()` is open, now or later. The extension activates
 * on the first document of any language (`onLanguage`), so a language added to codila.languages needs no
 * activation event of its own, and opening other files starts no server (the models take memory).
 */
export class LazyStart implements vscode.Disposable {
    private readonly watch: vscode.Disposable;

    constructor(
        private readonly server: Pick<Server, 'start' | 'requested'>,
        private readonly languages: () => string[],
        private readonly workspace: OpenDocuments,
    ) {
        this.watch = workspace.onDidOpenTextDocument((document) => this.startFor([document]));
        this.check();
    }

    /** Start now if an open document needs the server (after codila.languages changed, say). */
    check(): void {
        this.startFor(this.workspace.textDocuments);
    }

    private startFor(documents: readonly { languageId: string }[]): void {
        const wanted = this.languages();
        if (!this.server.requested && documents.some((document) => wanted.includes(document.languageId))) {
            void this.server.start();
        }
    }

    dispose(): void {
        this.watch.dispose();
    }
}
