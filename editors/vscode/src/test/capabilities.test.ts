import './vscodeStub';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { vscodeClientCapabilities } from './capabilities';

const FIXTURE = path.join(__dirname, '..', '..', '..', '..', 'tests', 'editor_vscode_client_capabilities.json');

test('the capabilities fixture used by tests/test_editor_vscode_caps.py is what this client sends', () => {
    const computed = vscodeClientCapabilities() as any;
    assert.deepEqual(computed.textDocument.inlineCompletion, { dynamicRegistration: true });
    assert.equal(computed.workspace.applyEdit, true, 'infill relies on the server applying its edit');
    const committed = JSON.parse(fs.readFileSync(FIXTURE, 'utf8'));
    assert.deepEqual(committed, computed, 'regenerate with `npm run capabilities` after upgrading vscode-languageclient');
});
