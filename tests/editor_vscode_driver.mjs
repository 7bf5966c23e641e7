// Drives a real VS Code (code-server, in headless Chromium through playwright-core) with real keystrokes, for
// tests/test_editor_vscode_real.py. It observes and writes JSON; the assertions are in the Python tests.
//
//   node tests/editor_vscode_driver.mjs CONFIG.json
//
// CONFIG: { url, folder, nodeModules (where playwright-core is), chromium, browserHome, artifacts, out,
// scenarios: [...] }.
// out gets { scenario: { ok, result } | { ok: false, error } }. After every scenario a screenshot goes to
// artifacts/<scenario>.png, so a failure in Python can point at what the screen showed.
//
// The DOM hooks are VS Code 1.100's (code-server 4.100.3, pinned in .ci/get_vscode.py); a newer VS Code may
// rename them, and then these lookups time out rather than pass:
// - ghost text: `.ghost-text-decoration` / `.ghost-text-decoration-preview` spans (the suggestion's first line,
//   injected into the line) and a `.ghost-text` view zone (its further lines);
// - the status-bar item: `.statusbar-item` holding "CoDiLA"; ready shows `.codicon-check`;
// - Quick Open and the command palette: `.quick-input-widget`.
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as path from 'node:path';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const { chromium } = createRequire(path.join(config.nodeModules, 'noop.js'))('playwright-core');

const WAIT_MS = 60_000; // model load and the first completion on a busy 2-core machine
const SETTLE_MS = 300; // how long an editor must stay clean after a save
const EDITOR = '.editor-instance .monaco-editor.focused';
const GHOST = `${EDITOR} .ghost-text-decoration, ${EDITOR} .ghost-text-decoration-preview, ${EDITOR} .ghost-text .view-line`;

// Helpers ----------------------------------------------------------------------------------------------------

function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

function file(name) {
    return path.join(config.folder, name);
}

/** Poll `read` until `done(value)`; returns the value, or throws naming `what`. */
async function until(what, read, done, timeoutMs = WAIT_MS) {
    const deadline = Date.now() + timeoutMs;
    let value = await read();
    while (!done(value)) {
        if (Date.now() > deadline) {
            throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last seen: ${JSON.stringify(value)}`);
        }
        await sleep(50);
        value = await read();
    }
    return value;
}

async function openFile(page, name) {
    await page.keyboard.press('Control+P');
    const input = page.locator('.quick-input-widget input');
    await input.waitFor({ state: 'visible' });
    await input.fill(name);
    await page.locator('.quick-input-widget .monaco-list-row', { hasText: name }).first().waitFor();
    await page.keyboard.press('Enter');
    await page.locator('.tab.active', { hasText: name }).waitFor();
    await page.locator(EDITOR).waitFor();
}

async function runCommand(page, title) {
    await page.keyboard.press('F1');
    const input = page.locator('.quick-input-widget input');
    await input.waitFor({ state: 'visible' });
    await input.fill(`>${title}`);
    await page.locator('.quick-input-widget .monaco-list-row', { hasText: title }).first().waitFor();
    await page.keyboard.press('Enter');
    await input.waitFor({ state: 'hidden' });
}

/**
 * Save the active editor; returns the saved text once it is no longer `previous` and the editor stays clean
 * (an edit that a key started may land after Ctrl+S did: the tab turns dirty again and is saved again).
 */
async function save(page, name, previous) {
    const dirty = page.locator('.tab.active.dirty');
    for (let attempt = 0; attempt < 5; attempt++) {
        await page.keyboard.press('Control+S');
        const text = await until(`${name} to be saved`, () => fs.readFileSync(file(name), 'utf8'), (t) => t !== previous);
        await dirty.waitFor({ state: 'detached' });
        await sleep(SETTLE_MS);
        if ((await dirty.count()) === 0) {
            return fs.readFileSync(file(name), 'utf8');
        }
    }
    throw new Error(`${name} kept changing after each save`);
}

/** What the ghost text shows now: [first line's inline parts joined, ...further lines], or null when none. */
async function ghost(page) {
    return page.evaluate((editorSelector) => {
        const editor = document.querySelector(editorSelector);
        if (!editor) {
            return null;
        }
        const clean = (text) => text.replace(/\u00a0/g, ' ');
        const inline = [...editor.querySelectorAll('.ghost-text-decoration, .ghost-text-decoration-preview')]
            .map((span) => clean(span.textContent));
        const more = [...editor.querySelectorAll('.ghost-text .view-line')].map((line) => clean(line.textContent));
        return inline.length || more.length ? [inline.join(''), ...more] : null;
    }, EDITOR);
}

async function waitForGhost(page) {
    await page.locator(GHOST).first().waitFor({ state: 'attached', timeout: WAIT_MS });
    return ghost(page);
}

/** "Ln 2, Col 11" from the status bar, as [line, column] (1-based, as VS Code shows them). */
async function cursor(page) {
    const text = await page.locator('.statusbar-item', { hasText: /Ln \d+, Col \d+/ }).first().innerText();
    const [, line, column] = text.match(/Ln (\d+), Col (\d+)/);
    return [Number(line), Number(column)];
}

function statusItem(page) {
    return page.locator('.statusbar-item', { hasText: 'CoDiLA' });
}

async function waitUntilReady(page) {
    await statusItem(page).locator('.codicon-check').waitFor({ timeout: WAIT_MS });
    return (await statusItem(page).innerText()).trim();
}

/**
 * Type at the end of `name`, save, and wait for the ghost text; returns what a scenario records. Keys come
 * `delayMs` apart; with no delay VS Code's own debounce sends one request for them all (the slow server
 * answers every request in turn, however stale). Only typed keys ask for suggestions: an inserted text does not.
 */
async function typeUntilGhost(page, name, typed, { delayMs = 40 } = {}) {
    const before = fs.readFileSync(file(name), 'utf8');
    await page.keyboard.press('Control+End');
    await page.keyboard.type(typed, { delay: delayMs });
    const saved = await save(page, name, before);
    return { saved, ghost: await waitForGhost(page), cursor: await cursor(page) };
}

// Scenarios --------------------------------------------------------------------------------------------------
// Each starts with the workbench loaded; files are created by the Python test.

const scenarios = {
    // The server started on opening a Python file, loaded the model and said so in the status bar.
    async ready(page) {
        await openFile(page, 'ghost.py');
        return { status: await waitUntilReady(page) };
    },

    // Typing shows a suggestion without asking for one; Tab inserts it.
    async ghost_accept(page) {
        await openFile(page, 'ghost.py');
        const shown = await typeUntilGhost(page, 'ghost.py', '    return');
        await page.keyboard.press('Tab');
        const after = await save(page, 'ghost.py', shown.saved);
        return { ...shown, after, cursorAfter: await cursor(page) };
    },

    // The suggestion is shown, then a key that does not continue it and Tab at once: Tab is a plain Tab.
    async typed_after_shown(page) {
        await openFile(page, 'stale.py');
        await waitUntilReady(page);
        const shown = await typeUntilGhost(page, 'stale.py', '    return', { delayMs: 0 });
        await page.keyboard.press('q');
        await page.keyboard.press('Tab');
        const after = await save(page, 'stale.py', shown.saved);
        return { ...shown, after };
    },

    // A request overtaken by a newer keystroke is answered late (the slow server ignores cancellation);
    // Tab pressed after that stale answer arrived and before the current one must not insert it.
    async stale_answer(page) {
        await openFile(page, 'late.py');
        await waitUntilReady(page);
        const shown = await typeUntilGhost(page, 'late.py', '    return', { delayMs: 0 });
        const delayMs = config.slowServerDelayS * 1000;
        await page.keyboard.press('x'); // request A, answered after delayMs
        await sleep(delayMs / 5);
        await page.keyboard.press('y'); // request B cancels A in the editor; the server still answers A first
        await sleep(delayMs * 0.8 + delayMs / 5 + 200); // A's answer is in, B's is not (due at 2 * delayMs)
        const beforeTab = { ghost: await ghost(page), cursor: await cursor(page) };
        await page.keyboard.press('Tab');
        const after = await save(page, 'late.py', shown.saved);
        return { ...shown, beforeTab, after };
    },

    // Select the last word of line 2 and run "CoDiLA: Infill Selection": the server's edit replaces it.
    async infill(page) {
        await openFile(page, 'infill.py');
        const before = fs.readFileSync(file('infill.py'), 'utf8');
        await page.keyboard.press('Control+Home');
        await page.keyboard.press('ArrowDown');
        await page.keyboard.press('End');
        await page.keyboard.press('Control+Shift+ArrowLeft');
        const selection = await until('the selection in the status bar',
            () => page.locator('.statusbar-item', { hasText: /Ln \d+, Col \d+/ }).first().innerText(),
            (text) => text.includes('selected'));
        await runCommand(page, 'CoDiLA: Infill Selection');
        const after = await save(page, 'infill.py', before);
        return { before, selection, after, cursor: await cursor(page) };
    },

    // "CoDiLA: Restart Server": the status bar leaves ready and comes back; completions work again.
    async restart(page) {
        await openFile(page, 'restart.py');
        await page.evaluate(() => {
            // Record every text the CoDiLA item shows from now on (the states in between are brief).
            window.codilaStatusSeen = [];
            const bar = document.querySelector('.part.statusbar');
            new MutationObserver(() => {
                const item = [...bar.querySelectorAll('.statusbar-item')].find((el) => el.textContent.includes('CoDiLA'));
                const text = item ? item.textContent.trim() : '(none)';
                if (window.codilaStatusSeen.at(-1) !== text) {
                    window.codilaStatusSeen.push(text);
                }
            }).observe(bar, { subtree: true, childList: true, characterData: true, attributes: true });
        });
        await runCommand(page, 'CoDiLA: Restart Server');
        const seen = await until('the status bar to leave ready and come back',
            () => page.evaluate(() => window.codilaStatusSeen),
            (texts) => texts.some((t) => !/^CoDiLA( \d+ ms)?$/.test(t)) && /^CoDiLA( \d+ ms)?$/.test(texts.at(-1) ?? ''));
        const shown = await typeUntilGhost(page, 'restart.py', '    return');
        await page.keyboard.press('Tab');
        const after = await save(page, 'restart.py', shown.saved);
        return { statusSeen: seen, ...shown, after };
    },
};

// Main -------------------------------------------------------------------------------------------------------

async function main() {
    const results = {};
    const write = () => fs.writeFileSync(config.out, JSON.stringify(results, null, 2));
    const browser = await chromium.launch({
        executablePath: config.chromium,
        args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
        // Chromium keeps crash reports and caches under XDG folders: not in the user's home.
        env: { ...process.env, XDG_CONFIG_HOME: config.browserHome, XDG_CACHE_HOME: config.browserHome },
    });
    try {
        const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
        page.setDefaultTimeout(WAIT_MS);
        await page.goto(`${config.url}/?folder=${encodeURIComponent(config.folder)}`);
        await page.locator('.monaco-workbench .part.statusbar').waitFor();
        for (const name of config.scenarios) {
            try {
                results[name] = { ok: true, result: await scenarios[name](page) };
            } catch (error) {
                results[name] = { ok: false, error: String(error && error.stack ? error.stack : error) };
            }
            await page.screenshot({ path: path.join(config.artifacts, `${name}.png`) }).catch(() => undefined);
            // Leave no widget open for the next scenario.
            await page.keyboard.press('Escape');
            write();
        }
    } catch (error) {
        results._driver = String(error && error.stack ? error.stack : error);
    } finally {
        write();
        await browser.close();
    }
}

await main();
