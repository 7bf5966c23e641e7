import './vscodeStub';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import {
    CLIENT_KEYS,
    checkValue,
    resolveClientSettings,
    resolveServerSettings,
    schemaFromPackageJson,
    serverKeys,
} from '../settings';

const packageJson = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
const schema = schemaFromPackageJson(packageJson);
const reader = (values: Record<string, unknown>) => ({ get: <T>(key: string) => values[key] as T | undefined });

/** The server's settings contract (section "codila"), in the order users should meet them. */
const CONTRACT = [
    'preset', 'dlmPath', 'arPath', 'device', 'dtype', 'arBackend', 'trustRemoteCode', 'method', 'blockSize', 'mode',
    'tau', 'scope', 'temperature', 'topP', 'maxNewTokens', 'contextTokens', 'latencyBudgetMs', 'debounceMs',
    'syntaxCheck', 'kvCache', 'logLevel',
];

test('package.json contributes every server setting of the contract, preset first, and nothing else', () => {
    const byOrder = serverKeys(schema).sort((a, b) => (schema[a] as any).order - (schema[b] as any).order);
    assert.deepEqual(byOrder, CONTRACT);
});

test('every setting is documented, typed, and its default passes its own validation', () => {
    for (const [key, setting] of Object.entries(schema)) {
        const described = (setting as any).markdownDescription ?? (setting as any).description;
        assert.ok(typeof described === 'string' && described.length > 20, `codila.${key} needs a description`);
        assert.ok(setting.type, `codila.${key} needs a type`);
        assert.ok('default' in setting, `codila.${key} needs a default`);
        assert.equal(checkValue(setting.default, setting), undefined, `codila.${key} default is invalid`);
    }
});

test('ranges and enums match the server contract', () => {
    const ok = (key: string, value: unknown) => assert.equal(checkValue(value, schema[key]), undefined, `${key}=${value}`);
    const bad = (key: string, value: unknown) => assert.notEqual(checkValue(value, schema[key]), undefined, `${key}=${value}`);
    ok('blockSize', 1); ok('blockSize', 16); bad('blockSize', 0); bad('blockSize', 17); bad('blockSize', 2.5);
    ok('topP', 1); ok('topP', 0.01); bad('topP', 0); bad('topP', 1.5);
    ok('maxNewTokens', 1); ok('maxNewTokens', 1024); bad('maxNewTokens', 1025);
    ok('scope', 1); bad('scope', 0);
    ok('tau', 0); bad('tau', -0.1);
    ok('temperature', 0); bad('temperature', -1);
    ok('latencyBudgetMs', 0);
    for (const device of ['auto', 'cpu', 'cuda', 'cuda:1']) ok('device', device);
    for (const device of ['gpu', 'cuda:', 'cuda:x', 'CPU']) bad('device', device);
    assert.deepEqual(schema.preset.enum, ['fast', 'balanced', 'accurate']);
    assert.equal(schema.preset.default, 'balanced');
    assert.deepEqual(schema.dtype.enum, ['auto', 'float32', 'bfloat16', 'float16', 'int8']);
    assert.deepEqual(schema.arBackend.enum, ['torch']);
    assert.deepEqual(schema.method.enum!.filter((v) => v !== null), ['auto', 'verified', 'ar', 'codila', 'codila-top1', 'dlm']);
    assert.deepEqual(schema.mode.enum!.filter((v) => v !== null), ['static', 'dynamic']);
    assert.deepEqual(schema.syntaxCheck.enum, ['off', 'trim', 'reject']);
    assert.deepEqual(schema.kvCache.enum!.filter((v) => v !== null), ['none', 'prefix', 'dual']);
    assert.equal(schema.trustRemoteCode.default, false);
    ok('dlmPath', null); ok('dlmPath', '/models/dream'); bad('dlmPath', 3);
});

test('unset settings resolve to the defaults, and client-only keys never reach the server', () => {
    const { value, problems } = resolveServerSettings(reader({}), schema);
    assert.deepEqual(problems, []);
    assert.deepEqual(Object.keys(value), CONTRACT);
    assert.equal(value.preset, 'balanced');
    assert.equal(value.dlmPath, null);
    assert.equal(value.blockSize, null, 'an unset knob leaves the choice to the preset');
    for (const key of CLIENT_KEYS) {
        assert.ok(!(key in value), `${key} must not be sent to the server`);
    }
});

test('a bad value gives a message naming the setting, and the server gets the default', () => {
    const { value, problems } = resolveServerSettings(
        reader({ preset: 'fast', blockSize: 40, device: 'gpu', temperature: 0.2, method: 'beam' }),
        schema,
    );
    assert.equal(value.preset, 'fast');
    assert.equal(value.temperature, 0.2);
    assert.equal(value.blockSize, null);
    assert.equal(value.device, 'auto');
    assert.equal(value.method, null);
    assert.equal(problems.length, 3);
    assert.match(problems[0], /^codila\.device must match .* got "gpu"; using the default "auto"\.$/);
    assert.match(problems[1], /^codila\.method must be one of "auto", "verified", "ar", "codila", "codila-top1", "dlm", got "beam"; using the default null\.$/);
    assert.match(problems[2], /^codila\.blockSize must be <= 16, got 40; using the default null\.$/);
});

test('client settings: interpreter, arguments, environment and languages', () => {
    const { value, problems } = resolveClientSettings(
        reader({ pythonPath: '/venv/bin/python', serverArgs: ['--log-file', 'x.log'], serverEnv: { A: 1 } }),
        schema,
    );
    assert.equal(value.pythonPath, '/venv/bin/python');
    assert.deepEqual(value.serverArgs, ['--log-file', 'x.log']);
    assert.deepEqual(value.serverEnv, {}, 'a non-string env value is rejected');
    assert.ok(value.languages.includes('python'));
    assert.deepEqual(problems, ['codila.serverEnv every value must be a string; using the default {}.']);
});
