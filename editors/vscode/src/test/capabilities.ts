/**
 * The ClientCapabilities that VS Code sends with this extension: computed by the pinned vscode-languageclient
 * itself (its computeClientCapabilities, which every feature fills in), so the server-side test in
 * tests/test_editor_vscode_caps.py initializes the server exactly as this client would.
 */
import './vscodeStub';
import { LanguageClient } from 'vscode-languageclient/node';

export function vscodeClientCapabilities(): unknown {
    const client = new LanguageClient('codila', 'CoDiLA', { command: 'python3' }, {});
    return JSON.parse(JSON.stringify((client as any).computeClientCapabilities()));
}

if (require.main === module) {
    process.stdout.write(JSON.stringify(vscodeClientCapabilities(), null, 2) + '\n');
}
