/**
 * Settings: the `codila.*` section of package.json is the single schema. Server settings are validated
 * against it before they reach the server (initializationOptions, workspace/didChangeConfiguration and
 * workspace/configuration all carry the same validated object); a bad value gives the user a message and the
 * server gets the default instead. Client-only settings say how the server process is started.
 */

export const SECTION = 'codila';

/** Settings that configure the client (how the server is started), never sent to the server. */
export const CLIENT_KEYS = ['pythonPath', 'serverArgs', 'serverEnv', 'languages', 'trace.server'] as const;

/** Changing one of these means a new server process. */
export const RESTART_KEYS = ['pythonPath', 'serverArgs', 'serverEnv', 'languages'] as const;

/** The subset of JSON schema used by package.json's `contributes.configuration.properties`. */
export interface SettingSchema {
    type: string | string[];
    default: unknown;
    enum?: unknown[];
    minimum?: number;
    maximum?: number;
    exclusiveMinimum?: number;
    pattern?: string;
    items?: { type: string };
    additionalProperties?: { type: string };
}

/** `contributes.configuration.properties` of package.json, keyed by the name below `codila.`. */
export type Schema = Record<string, SettingSchema>;

/** What the server receives: camelCase keys as in package.json, `null` where the preset decides. */
export type ServerSettings = Record<string, unknown>;

export interface ClientSettings {
    pythonPath: string;
    serverArgs: string[];
    serverEnv: Record<string, string>;
    languages: string[];
}

/** Anything with `get(key)`, e.g. `vscode.workspace.getConfiguration('codila')`. */
export interface ConfigurationReader {
    get<T>(key: string): T | undefined;
}

export function schemaFromPackageJson(packageJson: any): Schema {
    const properties = packageJson?.contributes?.configuration?.properties ?? {};
    const schema: Schema = {};
    for (const [name, setting] of Object.entries(properties)) {
        if (name.startsWith(`${SECTION}.`)) {
            schema[name.slice(SECTION.length + 1)] = setting as SettingSchema;
        }
    }
    return schema;
}

export function serverKeys(schema: Schema): string[] {
    return Object.keys(schema).filter((key) => !(CLIENT_KEYS as readonly string[]).includes(key));
}

/** Why `value` does not fit `schema`, or undefined when it does. */
export function checkValue(value: unknown, schema: SettingSchema): string | undefined {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((type) => hasType(value, type))) {
        return `expected ${types.join(' or ')}, got ${JSON.stringify(value)}`;
    }
    if (value === null) {
        return undefined;
    }
    if (schema.enum && !schema.enum.includes(value)) {
        const choices = schema.enum.filter((choice) => choice !== null).map((choice) => JSON.stringify(choice));
        return `must be one of ${choices.join(', ')}, got ${JSON.stringify(value)}`;
    }
    if (typeof value === 'number') {
        if (schema.minimum !== undefined && value < schema.minimum) {
            return `must be >= ${schema.minimum}, got ${value}`;
        }
        if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) {
            return `must be > ${schema.exclusiveMinimum}, got ${value}`;
        }
        if (schema.maximum !== undefined && value > schema.maximum) {
            return `must be <= ${schema.maximum}, got ${value}`;
        }
    }
    if (typeof value === 'string' && schema.pattern && !new RegExp(schema.pattern).test(value)) {
        return `must match ${schema.pattern}, got ${JSON.stringify(value)}`;
    }
    if (Array.isArray(value) && schema.items && !value.every((item) => hasType(item, schema.items!.type))) {
        return `every item must be a ${schema.items.type}`;
    }
    if (isPlainObject(value) && schema.additionalProperties) {
        const itemType = schema.additionalProperties.type;
        if (!Object.values(value).every((item) => hasType(item, itemType))) {
            return `every value must be a ${itemType}`;
        }
    }
    return undefined;
}

function hasType(value: unknown, type: string): boolean {
    switch (type) {
        case 'null':
            return value === null;
        case 'integer':
            return typeof value === 'number' && Number.isInteger(value);
        case 'number':
            return typeof value === 'number' && Number.isFinite(value);
        case 'array':
            return Array.isArray(value);
        case 'object':
            return isPlainObject(value);
        default:
            return typeof value === type;
    }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
    return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export interface Resolved<T> {
    value: T;
    /** One line per rejected setting, ready to show the user. */
    problems: string[];
}

function readValidated(config: ConfigurationReader, schema: Schema, keys: string[]): Resolved<Record<string, unknown>> {
    const value: Record<string, unknown> = {};
    const problems: string[] = [];
    for (const key of keys) {
        const setting = schema[key];
        const raw = config.get<unknown>(key);
        const given = raw === undefined ? setting.default : raw;
        const problem = checkValue(given, setting);
        if (problem === undefined) {
            value[key] = given;
        } else {
            value[key] = setting.default;
            problems.push(`${SECTION}.${key} ${problem}; using the default ${JSON.stringify(setting.default)}.`);
        }
    }
    return { value, problems };
}

/** The settings object the server receives, every server key present (`null` = preset/default model). */
export function resolveServerSettings(config: ConfigurationReader, schema: Schema): Resolved<ServerSettings> {
    return readValidated(config, schema, serverKeys(schema));
}

export function resolveClientSettings(config: ConfigurationReader, schema: Schema): Resolved<ClientSettings> {
    const keys = RESTART_KEYS.filter((key) => key in schema);
    const { value, problems } = readValidated(config, schema, [...keys]);
    return { value: value as unknown as ClientSettings, problems };
}
