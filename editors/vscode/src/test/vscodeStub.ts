/**
 * A stand-in for the `vscode` module, installed into Node's module loader before the extension's modules
 * load. VS Code itself is not available here: the stub records what the extension does with the API
 * (status-bar text, messages, registered commands) so tests can assert on it. Names the stub does not define
 * resolve to inert classes, enough for vscode-languageclient to load and compute its capabilities.
 */
import Module = require('module');

export const recorded = {
    warnings: [] as string[],
    errors: [] as string[],
    commands: new Map<string, (...args: unknown[]) => unknown>(),
    statusItems: [] as FakeStatusBarItem[],
};

export function resetRecorded(): void {
    recorded.warnings.length = 0;
    recorded.errors.length = 0;
    recorded.commands.clear();
    recorded.statusItems.length = 0;
}

export class FakeStatusBarItem {
    text = '';
    tooltip: string | undefined;
    name: string | undefined;
    command: string | undefined;
    backgroundColor: unknown;
    visible = false;
    disposed = false;
    show(): void {
        this.visible = true;
    }
    hide(): void {
        this.visible = false;
    }
    dispose(): void {
        this.disposed = true;
    }
}

class Disposable {
    constructor(private readonly onDispose: () => void = () => undefined) {}
    static from(...items: { dispose(): unknown }[]): Disposable {
        return new Disposable(() => items.forEach((item) => item.dispose()));
    }
    dispose(): void {
        this.onDispose();
    }
}

class EventEmitter<T> {
    private listeners: ((value: T) => void)[] = [];
    event = (listener: (value: T) => void) => {
        this.listeners.push(listener);
        return new Disposable(() => (this.listeners = this.listeners.filter((l) => l !== listener)));
    };
    fire(value: T): void {
        this.listeners.forEach((listener) => listener(value));
    }
    dispose(): void {
        this.listeners = [];
    }
}

class ThemeColor {
    constructor(readonly id: string) {}
}

class Uri {
    private constructor(readonly scheme: string, readonly fsPath: string) {}
    static file(path: string): Uri {
        return new Uri('file', path);
    }
    static parse(value: string): Uri {
        return new Uri(value.split(':')[0], value.replace(/^file:\/\//, ''));
    }
    toString(): string {
        return `${this.scheme}://${this.fsPath}`;
    }
}

/** The configuration the extension reads; tests assign `configuration.values`. */
export const configuration = { values: {} as Record<string, unknown> };

export const vscodeStub: Record<string, unknown> = {
    Disposable,
    EventEmitter,
    ThemeColor,
    Uri,
    StatusBarAlignment: { Left: 1, Right: 2 },
    window: {
        activeTextEditor: undefined as unknown,
        createStatusBarItem: () => {
            const item = new FakeStatusBarItem();
            recorded.statusItems.push(item);
            return item;
        },
        showWarningMessage: async (message: string) => {
            recorded.warnings.push(message);
            return undefined;
        },
        showErrorMessage: async (message: string) => {
            recorded.errors.push(message);
            return undefined;
        },
        showInformationMessage: async () => undefined,
        createOutputChannel: () => inert(),
    },
    commands: {
        registerCommand: (id: string, handler: (...args: unknown[]) => unknown) => {
            if (recorded.commands.has(id)) {
                throw new Error(`command '${id}' already exists`);
            }
            recorded.commands.set(id, handler);
            return new Disposable(() => recorded.commands.delete(id));
        },
        executeCommand: async (id: string, ...args: unknown[]) => recorded.commands.get(id)?.(...args),
    },
    workspace: {
        workspaceFolders: undefined as unknown,
        getConfiguration: () => ({
            get: (key: string) => configuration.values[key],
            has: (key: string) => key in configuration.values,
        }),
        onDidChangeConfiguration: () => new Disposable(),
        onDidOpenTextDocument: () => new Disposable(),
        onDidChangeTextDocument: () => new Disposable(),
        onDidCloseTextDocument: () => new Disposable(),
        textDocuments: [],
    },
    languages: {},
    env: { language: 'en' },
    version: '1.91.0',
};

/** A value that is a constructible function whose every property is another inert value. */
function inert(): any {
    const target = function () {} as unknown as object;
    return new Proxy(target, {
        get: (_t, property) => (property === 'then' ? undefined : property === Symbol.toPrimitive ? () => '' : inert()),
        apply: () => inert(),
        construct: () => inert(),
    });
}

const proxied = new Proxy(vscodeStub, {
    get: (target, property: string) => (property in target ? target[property] : inert()),
});

const loader = Module as unknown as { _load: (request: string, ...rest: unknown[]) => unknown };
const originalLoad = loader._load;
loader._load = function (request: string, ...rest: unknown[]) {
    return request === 'vscode' ? proxied : originalLoad.call(this, request, ...rest);
};
