-- Drives a child Neovim (the editor under test) from a parent headless Neovim, the way mini.test does:
--
--   CODILA_TEST_CHILD_NVIM=/path/to/nvim nvim --headless --clean -l tests/editor_nvim_driver.lua CHILD_INIT OUT_JSON SCENARIO[,SCENARIO...]
--
-- The child runs `$CODILA_TEST_CHILD_NVIM --embed --headless --clean -u CHILD_INIT` (which sets up the
-- codila plugin; the parent's own Neovim when the variable is unset) and receives real keystrokes through
-- nvim_input, which Neovim handles exactly as typed keys; the parent polls its state over RPC with timeouts.
-- Each scenario returns observations; OUT_JSON gets { scenario = { ok, result | error } } and pytest asserts
-- on them (tests/test_editor_nvim.py).

local child_init, out_path, scenario_list = arg[1], arg[2], arg[3]
-- The Neovim under test (a launcher for the Debian builds); default: the Neovim running this driver.
local nvim = vim.env.CODILA_TEST_CHILD_NVIM or vim.v.progpath

-- Child -----------------------------------------------------------------------
local Child = {}

local ready_timeout = tonumber(vim.env.CODILA_TEST_READY_MS or '240000')
local answer_timeout = tonumber(vim.env.CODILA_TEST_ANSWER_MS or '60000')
Child.ready_timeout = ready_timeout

Child.start = function()
  Child.job = vim.fn.jobstart({ nvim, '--embed', '--headless', '--clean', '-n', '-u', child_init }, { rpc = true })
  assert(Child.job > 0, 'could not start the child Neovim')
end

Child.stop = function()
  pcall(vim.rpcrequest, Child.job, 'nvim_exec_lua', 'vim.lsp.stop_client(vim.lsp.get_clients(), true)', {})
  vim.fn.jobstop(Child.job)
end

--- Run Lua in the child and return its value.
Child.lua = function(code, ...) return vim.rpcrequest(Child.job, 'nvim_exec_lua', code, { ... }) end

--- Keys as a user types them (asynchronous, like a real keyboard).
Child.type = function(keys) vim.rpcrequest(Child.job, 'nvim_input', keys) end

--- Wait until `code` (Lua run in the child, with `...` as its arguments) returns a truthy value; error after
--- `timeout_ms`.
Child.wait_for = function(what, code, timeout_ms, ...)
  local value
  local args = { ... }
  local ok = vim.wait(timeout_ms, function()
    value = Child.lua(code, unpack(args))
    -- A nil result arrives over RPC as vim.NIL, which Lua counts as true.
    return value ~= nil and value ~= vim.NIL and value ~= false
  end, 25)
  if not ok then error(string.format('timed out after %d ms waiting for %s', timeout_ms, what), 0) end
  return value
end

Child.lines = function() return Child.lua('return vim.api.nvim_buf_get_lines(0, 0, -1, true)') end
Child.cursor = function() return Child.lua('return vim.api.nvim_win_get_cursor(0)') end
Child.mode = function() return Child.lua('return vim.api.nvim_get_mode().mode') end
Child.messages = function() return Child.lua('return vim.fn.execute("messages")') end

-- Ghost text is drawn with extmarks: by the plugin (namespace "codila") or by Neovim 0.12's built-in inline
-- completion (namespace "nvim.lsp.inline_completion").
local GHOST_NAMESPACES = [[ local namespaces = { plugin = 'codila', native = 'nvim.lsp.inline_completion' } ]]

--- The ghost text as displayed: inline text + virtual lines, which renderer drew it, and how many ghost
--- extmarks exist in the buffer (any renderer).
Child.ghost = function()
  return Child.lua(GHOST_NAMESPACES .. [[
    local found, count = nil, 0
    for renderer, name in pairs(namespaces) do
      local ns = vim.api.nvim_get_namespaces()[name]
      local marks = ns and vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true }) or {}
      count = count + #marks
      if #marks > 0 then
        local m = marks[1]
        local lines = { table.concat(vim.tbl_map(function(c) return c[1] end, m[4].virt_text or {})) }
        for _, vl in ipairs(m[4].virt_lines or {}) do
          lines[#lines + 1] = table.concat(vim.tbl_map(function(c) return c[1] end, vl))
        end
        found = { row = m[2], col = m[3], lines = lines, pos = m[4].virt_text_pos, renderer = renderer }
      end
    end
    if found then found.count = count end
    return found
  ]])
end

Child.has_ghost = GHOST_NAMESPACES .. [[
  for _, name in pairs(namespaces) do
    local ns = vim.api.nvim_get_namespaces()[name]
    if ns and #vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, {}) > 0 then return true end
  end
  return false
]]

--- Open a fresh scratch file with `lines`, filetype python; wait for the server to attach.
Child.open = function(name, lines)
  -- Start every scenario in Normal mode, whatever the previous one left behind.
  Child.type('<Esc>')
  Child.wait_for('Normal mode', 'return vim.api.nvim_get_mode().mode == "n"', 5000)
  Child.lua([[
    local name, lines = ...
    vim.cmd('silent! %bwipeout!')
    vim.cmd.edit(vim.fn.fnameescape(name))
    vim.api.nvim_buf_set_lines(0, 0, -1, true, lines)
    vim.bo.expandtab = false
  ]], name, lines)
  -- The client counts as attached once the server has answered `initialize` (Python starting up).
  Child.wait_for('the server to attach', 'return #vim.lsp.get_clients({ name = "codila", bufnr = 0 }) > 0',
    Child.ready_timeout)
end

--- Wait until the server reports `ready` (model loaded).
local function wait_ready()
  return Child.wait_for('codila/status ready', [[
    local s = require('codila').get_status()
    if s and s.state == 'error' then error('server error: ' .. s.message) end
    return s and s.state == 'ready' and require('codila').status()
  ]], ready_timeout)
end

local function wait_ghost(what)
  return Child.wait_for(what or 'ghost text', Child.has_ghost, answer_timeout) and Child.ghost()
end

local function wait_insert_settled(what)
  -- Every typed key handled (nvim_input is asynchronous) and the child idle in Insert mode.
  Child.wait_for(what, 'return vim.api.nvim_get_mode().mode == "i" and not vim.api.nvim_get_mode().blocking', 5000)
end

--- In Insert mode at the end of line `row` (1-based), type `text`, and wait for ghost text.
local function type_and_wait_ghost(row, text, what)
  Child.lua('vim.api.nvim_win_set_cursor(0, { ..., 0 })', row)
  Child.type('A' .. text)
  return wait_ghost(what)
end

--- Wait until the buffer's text differs from `before`.
local function wait_changed(before, what)
  return Child.wait_for(what, 'return not vim.deep_equal(vim.api.nvim_buf_get_lines(0, 0, -1, true), ...)',
    5000, before)
end

local function clear_messages()
  Child.lua('vim.cmd("messages clear"); vim.v.errmsg = ""')
end

local function errors()
  return { errmsg = Child.lua('return vim.v.errmsg'), messages = Child.messages() }
end

-- Scenarios -------------------------------------------------------------------
local S = {}

S.ready = function()
  -- The server starts with the first buffer of a configured filetype.
  Child.open('ready.py', { 'x = 1' })
  local statusline = wait_ready()
  return {
    statusline = statusline,
    status = Child.lua('return require("codila").get_status()'),
    messages = Child.messages(),
    version = Child.lua('local v = vim.version(); return ("%d.%d.%d"):format(v.major, v.minor, v.patch)'),
    renderer = Child.lua('return require("codila").ghost_text_renderer()'),
  }
end

S.ghost_accept = function()
  wait_ready()
  Child.open('ghost_accept.py', { 'def add(a, b):', '    ', '', 'print(add(1, 2))' })
  local ghost = type_and_wait_ghost(2, 'return')
  local before = Child.lines()
  local cursor_before = Child.cursor()
  -- A key typed right after <Tab> lands after the suggestion.
  Child.type('<Tab>Z')
  wait_changed(before, 'the suggestion to be inserted')
  wait_insert_settled('Insert mode after accepting')
  vim.wait(300)
  return {
    ghost = ghost,
    before = before,
    cursor_before = cursor_before,
    after = Child.lines(),
    cursor_after = Child.cursor(),
    mode = Child.mode(),
    ghost_after = Child.ghost() or vim.NIL,
  }
end

-- A key typed after the ghost text was shown reaches the buffer before anything can react to it (no
-- TextChangedI, no new answer): the <Tab> right after it must not insert the old suggestion at the old cursor.
S.typed_after_shown = function()
  wait_ready()
  Child.open('typed_after.py', { 'def add(a, b):', '    ' })
  local ghost = type_and_wait_ghost(2, 'return')
  local before = Child.lines()
  Child.type('q<Tab>')
  wait_changed(before, 'the keys to be handled')
  wait_insert_settled('the keys to be handled')
  vim.wait(200)
  return { ghost = ghost, before = before, after = Child.lines() }
end

S.dismiss_key = function()
  wait_ready()
  Child.open('dismiss_key.py', { 'def add(a, b):', '    ' })
  Child.lua('vim.cmd("iabbrev <buffer> cdl codila_lsp")')
  local ghost = type_and_wait_ghost(2, 'return')
  local before = Child.lines()
  Child.type('<C-]>')
  Child.wait_for('the ghost text to go', 'return not (function() ' .. Child.has_ghost .. ' end)()', 5000)
  wait_insert_settled('Insert mode after dismissing')
  local after_dismiss = { lines = Child.lines(), mode = Child.mode() }
  -- Nothing shown now: <C-]> is Insert mode's own again (i_CTRL-] expands an abbreviation).
  Child.type(' cdl<C-]>')
  Child.wait_for('the abbreviation to be handled', 'return vim.api.nvim_get_current_line():find("cdl") == nil '
    .. 'or vim.api.nvim_get_current_line():find("codila_lsp") ~= nil', 5000)
  vim.wait(100)
  return { ghost = ghost, before = before, after_dismiss = after_dismiss, after_abbrev = Child.lines() }
end

S.dismiss = function()
  wait_ready()
  Child.open('dismiss.py', { 'def add(a, b):', '    ' })
  local ghost = type_and_wait_ghost(2, 'return')
  local before = Child.lines()
  Child.type('<Esc>')
  Child.wait_for('Normal mode', 'return vim.api.nvim_get_mode().mode == "n"', 5000)
  return { ghost = ghost, ghost_after_esc = Child.ghost() or vim.NIL, before = before, after = Child.lines() }
end

S.fallback = function()
  wait_ready()
  Child.open('fallback.py', { 'x = 1' })
  Child.lua('vim.api.nvim_win_set_cursor(0, { 1, 0 })')
  -- Typed in one go: no answer can arrive before <Tab>, so there is no suggestion to accept.
  Child.type('Ay<Tab>z<Esc>')
  Child.wait_for('Normal mode', 'return vim.api.nvim_get_mode().mode == "n"', 5000)
  return { after = Child.lines() }
end

-- A user's own <Tab> mapping (global, made after the buffer was attached) still runs where there is no
-- suggestion; with one, <Tab> accepts it.
S.user_tab = function()
  wait_ready()
  Child.open('user_tab.py', { 'x = 1', 'def add(a, b):', '    ' })
  Child.lua([[vim.keymap.set('i', '<Tab>', function() return '[user-tab]' end, { expr = true })]])
  Child.lua('vim.api.nvim_win_set_cursor(0, { 1, 0 })')
  Child.type('Ay<Tab>z<Esc>')
  Child.wait_for('Normal mode', 'return vim.api.nvim_get_mode().mode == "n"', 5000)
  local fallback = Child.lines()
  local ghost = type_and_wait_ghost(3, 'return')
  local before = Child.lines()
  Child.type('<Tab>')
  wait_changed(before, 'the suggestion to be inserted')
  wait_insert_settled('Insert mode after accepting')
  vim.wait(100)
  local accepted = Child.lines()
  Child.type('<Esc>')
  Child.lua([[vim.keymap.del('i', '<Tab>')]])
  return { fallback = fallback, ghost = ghost, before = before, accepted = accepted }
end

-- `suggest` (its key, <M-\>) sends an Invoked request and shows the answer; it never accepts anything.
S.suggest = function()
  wait_ready()
  Child.open('suggest.py', { 'def add(a, b):', '    return', '' })
  Child.lua([[
    _G.sent = {}
    local client = vim.lsp.get_clients({ name = 'codila', bufnr = 0 })[1]
    local request = client.rpc.request
    client.rpc.request = function(method, params, ...)
      if method == 'textDocument/inlineCompletion' then
        table.insert(_G.sent, { kind = params.context and params.context.triggerKind, position = params.position })
      end
      return request(method, params, ...)
    end
  ]])
  Child.lua('vim.api.nvim_win_set_cursor(0, { 2, 0 })')
  Child.type('A')
  wait_insert_settled('Insert mode')
  -- Long enough for the built-in path's own automatic request (on InsertEnter, after 200 ms) to be answered.
  vim.wait(600)
  local before = Child.lines()
  local sent_before = Child.lua('return #_G.sent')
  Child.type('<M-\\>')
  Child.wait_for('an Invoked request', 'for i = ... + 1, #_G.sent do if _G.sent[i].kind == 1 then return true end end',
    5000, sent_before)
  Child.wait_for('its ghost text', [[
    local ns = vim.api.nvim_get_namespaces().codila
    return ns and #vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, {}) > 0
  ]], answer_timeout)
  vim.wait(300)
  local ghost = Child.ghost()
  local shown = { lines = Child.lines(), sent = Child.lua('return _G.sent'), sent_before = sent_before,
    suggestion = Child.lua('return require("codila").get_suggestion()') }
  Child.type('<Tab>')
  wait_changed(before, 'the suggestion to be inserted')
  wait_insert_settled('Insert mode after accepting')
  return { before = before, ghost = ghost, shown = shown, after = Child.lines() }
end

S.infill = function()
  wait_ready()
  local lines = { 'def greet(name):', '    s = "😀 " + name', '    return s', '', 'print(greet("x"))' }
  Child.open('infill.py', lines)
  Child.lua([[
    _G.applied = {}
    local original = vim.lsp.handlers['workspace/applyEdit']
    vim.lsp.handlers['workspace/applyEdit'] = function(err, params, ctx)
      table.insert(_G.applied, params)
      return original(err, params, ctx)
    end
  ]])
  -- Select `name` on line 2 (after the emoji: byte and UTF-16 columns differ) and infill it.
  Child.lua('vim.api.nvim_win_set_cursor(0, { 2, 0 })')
  Child.type('0fnve:CodilaInfill<CR>')
  Child.wait_for('the server to apply its edit', 'return #_G.applied > 0', answer_timeout)
  Child.wait_for('the infill command to finish', 'return require("codila").status():find("infilling") == nil', answer_timeout)
  return { before = lines, after = Child.lines(), applied = Child.lua('return _G.applied') }
end

S.bad_setting = function()
  Child.lua('require("codila").set_settings({ blockSize = 40, preset = "fast" })')
  vim.wait(200)
  return {
    messages = Child.messages(),
    sent = Child.lua('return vim.lsp.get_clients({ name = "codila" })[1].settings'),
  }
end

S.health = function()
  wait_ready()
  Child.lua('vim.cmd("checkhealth codila")')
  return { report = table.concat(Child.lines(), '\n') }
end

local function client_ids()
  return Child.lua('return vim.tbl_map(function(c) return c.id end, vim.lsp.get_clients({ name = "codila" }))')
end

local function wait_new_client(old)
  Child.wait_for('a new server attached to the buffer', [[
    local old = ...
    local clients = vim.lsp.get_clients({ name = 'codila', bufnr = 0 })
    return #clients == 1 and not vim.tbl_contains(old, clients[1].id)
  ]], ready_timeout, old)
  wait_ready()
end

-- The server stops and starts again while a buffer is attached: :CodilaRestart, then a server that just
-- stops (a crash, :LspStop) with keys typed while none runs, then :CodilaRestart again. Ghost text must come
-- back each time and no error may appear. Each time the ghost text is asked for on the same text and cursor
-- (a random tiny model may well answer nothing somewhere else; the same input gives the same answer).
S.restart = function()
  wait_ready()
  Child.open('restart.py', { 'def add(a, b):', '    ', '' })
  clear_messages()
  local first = type_and_wait_ghost(2, 'return', 'ghost text before the restart')
  local old = client_ids()
  Child.lua('vim.cmd("CodilaRestart")')
  wait_new_client(old)
  -- Typing goes on in the same Insert mode, back to the same text: the answer comes from the new server.
  Child.type('<BS>n')
  local after_restart = wait_ghost('ghost text after :CodilaRestart')
  old = client_ids()
  Child.lua('vim.lsp.stop_client(vim.lsp.get_clients({ name = "codila" }))')
  Child.wait_for('the server to stop', 'return #vim.lsp.get_clients({ name = "codila" }) == 0', ready_timeout)
  Child.type('<Esc>')
  Child.lua('vim.api.nvim_win_set_cursor(0, { 3, 0 })')
  Child.type('Ax = 1<CR>y = 2<Esc>')
  Child.wait_for('Normal mode', 'return vim.api.nvim_get_mode().mode == "n"', 5000)
  vim.wait(300)
  local while_stopped = { errors = errors(), lines = Child.lines() }
  Child.type('u')
  Child.wait_for('the undo', 'return #vim.api.nvim_buf_get_lines(0, 0, -1, true) == 3', 5000)
  Child.lua('vim.cmd("CodilaRestart")')
  wait_new_client(old)
  local after_start = type_and_wait_ghost(2, '<BS>n', 'ghost text after the server stopped and started')
  Child.type('<Esc>')
  vim.wait(200)
  return { first = first, after_restart = after_restart, while_stopped = while_stopped,
    after_start = after_start, errors = errors() }
end

-- Typing faster than the server answers: requests are answered late (the server ignores cancellation),
-- so every answer but the last is stale and must never be shown.
S.stale = function()
  Child.open('stale.py', { 'x = ' })
  Child.lua([[
    _G.completed = 0
    vim.api.nvim_create_autocmd('LspRequest', { callback = function(ev)
      local r = ev.data.request
      if r.method == 'textDocument/inlineCompletion' and r.type == 'complete' then _G.completed = _G.completed + 1 end
    end })
    _G.shown = {}
    vim.api.nvim_create_autocmd('User', { pattern = 'CodilaSuggestion', callback = function(ev)
      table.insert(_G.shown, { data = ev.data, cursor = vim.api.nvim_win_get_cursor(0),
        tick = vim.api.nvim_buf_get_changedtick(0), line = vim.api.nvim_get_current_line() })
    end })
  ]])
  clear_messages()
  Child.lua('vim.api.nvim_win_set_cursor(0, { 1, 0 })')
  Child.type('A')
  for _, char in ipairs({ 'a', 'b', 'c' }) do
    Child.type(char)
    vim.wait(tonumber(vim.env.CODILA_TEST_KEY_GAP_MS or '150'))
  end
  Child.wait_for('ghost text', 'return #_G.shown > 0', 10000)
  -- Let every late answer arrive.
  vim.wait(tonumber(vim.env.CODILA_TEST_SETTLE_MS or '1500'))
  local result = {
    shown = Child.lua('return _G.shown'),
    line = Child.lua('return vim.api.nvim_get_current_line()'),
    cursor = Child.cursor(),
    ghost = Child.ghost() or vim.NIL,
    answered = Child.lua('return _G.completed'),
  }
  -- The answer's range runs past the end of the line: <Tab> replaces up to the end of the line.
  Child.type('<Tab>')
  Child.wait_for('the suggestion to be inserted', 'return vim.api.nvim_get_current_line() ~= "x = abc"', 5000)
  result.accepted = Child.lua('return vim.api.nvim_get_current_line()')
  result.errors = errors()
  return result
end

-- Main ------------------------------------------------------------------------
local results = {}
Child.start()
local ok_all, err_all = pcall(function()
  for name in vim.gsplit(scenario_list, ',', { plain = true }) do
    local scenario = assert(S[name], 'unknown scenario ' .. name)
    local ok, result = pcall(scenario)
    if ok then
      results[name] = { ok = true, result = result }
    else
      local messages = select(2, pcall(Child.messages))
      results[name] = { ok = false, error = tostring(result), messages = messages }
    end
  end
end)
if not ok_all then results._driver = { ok = false, error = tostring(err_all) } end
Child.stop()
local file = assert(io.open(out_path, 'w'))
file:write(vim.json.encode(results))
file:close()
