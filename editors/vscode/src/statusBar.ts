/**
 * The status-bar item: what the server is doing (from `codila/status`) and how long the last completion took.
 * `render` is a pure function of the state, so every transition is unit-tested without VS Code.
 */
import * as vscode from 'vscode';

/** Params of the server's `codila/status` notification. */
export interface ServerStatus {
    state: 'loading' | 'ready' | 'error' | 'training';
    message: string;
    lastLatencyMs: number | null;
}

/** What the item shows: the server's own states, plus the client's before the server reports any. */
export type StatusState =
    | { kind: 'starting' }
    | { kind: 'stopped'; reason?: string }
    | { kind: 'server'; status: ServerStatus }
    | { kind: 'busy'; label: string; previous: StatusState };

export interface Rendered {
    text: string;
    tooltip: string;
    error: boolean;
}

export function render(state: StatusState): Rendered {
    switch (state.kind) {
        case 'starting':
            return { text: '$(loading~spin) CoDiLA: starting', tooltip: 'Starting the CoDiLA language server', error: false };
        case 'stopped':
            return {
                text: '$(circle-slash) CoDiLA: stopped',
                tooltip: state.reason ? `Server stopped: ${state.reason}` : 'Server stopped',
                error: state.reason !== undefined,
            };
        case 'busy':
            return { text: `$(loading~spin) CoDiLA: ${state.label}`, tooltip: render(state.previous).tooltip, error: false };
        case 'server':
            return renderServer(state.status);
    }
}

function renderServer(status: ServerStatus): Rendered {
    const tooltip = status.message ? status.message : `Server ${status.state}`;
    switch (status.state) {
        case 'loading':
            return { text: '$(loading~spin) CoDiLA: loading model', tooltip, error: false };
        case 'training':
            return { text: '$(sync~spin) CoDiLA: training', tooltip, error: false };
        case 'error':
            return { text: '$(error) CoDiLA: error', tooltip, error: true };
        case 'ready': {
            const latency = status.lastLatencyMs === null ? '' : ` ${Math.round(status.lastLatencyMs)} ms`;
            return { text: `$(check) CoDiLA${latency}`, tooltip, error: false };
        }
    }
}

/** A `codila/status` payload, or undefined when the server sent something else. */
export function parseServerStatus(params: unknown): ServerStatus | undefined {
    const p = params as Partial<ServerStatus> | null;
    if (!p || !['loading', 'ready', 'error', 'training'].includes(p.state as string)) {
        return undefined;
    }
    const latency = typeof p.lastLatencyMs === 'number' ? p.lastLatencyMs : null;
    return { state: p.state!, message: typeof p.message === 'string' ? p.message : '', lastLatencyMs: latency };
}

export class StatusBar implements vscode.Disposable {
    private readonly item: vscode.StatusBarItem;
    private state: StatusState = { kind: 'starting' };

    constructor(showLogCommand: string) {
        this.item = vscode.window.createStatusBarItem('codila.status', vscode.StatusBarAlignment.Right, 100);
        this.item.name = 'CoDiLA';
        this.item.command = showLogCommand;
        this.set(this.state);
        this.item.show();
    }

    get current(): StatusState {
        return this.state;
    }

    set(state: StatusState): void {
        this.state = state;
        const { text, tooltip, error } = render(state);
        this.item.text = text;
        this.item.tooltip = tooltip;
        this.item.backgroundColor = error ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
    }

    /** Apply a `codila/status` notification; unknown payloads are ignored. */
    onServerStatus(params: unknown): void {
        const status = parseServerStatus(params);
        if (status === undefined) {
            return;
        }
        if (this.state.kind === 'busy') {
            // Keep the busy label; the server state shows again when the operation ends.
            this.state = { ...this.state, previous: { kind: 'server', status } };
            return;
        }
        this.set({ kind: 'server', status });
    }

    /** Show `label` while `work` runs; the previous state comes back however `work` ends. */
    async whileBusy<T>(label: string, work: () => Promise<T>): Promise<T> {
        this.set({ kind: 'busy', label, previous: this.state });
        try {
            return await work();
        } finally {
            if (this.state.kind === 'busy') {
                this.set(this.state.previous);
            }
        }
    }

    dispose(): void {
        this.item.dispose();
    }
}
