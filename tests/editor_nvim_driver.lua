-- Drives a child Neovim (the editor under test) from a parent headless Neovim, the way mini.test does:
--
--   nvim --headless --clean -l tests/editor_nvim_driver.lua CHILD_INIT OUT_JSON SCENARIO[,SCENARIO...]
--
-- The child runs `nvim --embed --headless --clean -u CHILD_INIT` (which sets up the codila plugin) and
-- receives real keystrokes through nvim_input; the parent polls its state over RPC with timeouts. Each
-- scenario returns observations; OUT_JSON gets { scenario = { ok, result | error } } and pytest asserts on
-- them (tests/test_editor_nvim.py).

local child_init, out_path, scenario_list = arg[1], arg[2], arg[3]
local nvim = vim.v.progpath

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

--- Wait until `code` (Lua run in the child) returns a truthy value; error after `timeout_ms`.
Child.wait_for = function(what, code, timeout_ms)
  local value
  local ok = vim.wait(timeout_ms, function()
    value = Child.lua(code)
    -- A nil result arrives over RPC as vim.NIL, which Lua counts as true.
    return value ~= nil and value ~= vim.NIL and value ~= false
  end, 25)
  if not ok then error(string.format('timed out after %d ms waiting for %s', timeout_ms, what), 0) end
  return value
end

Child.lines = function() return Child.lua('return vim.api.nvim_buf_get_lines(0, 0, -1, true)') end
Child.cursor = function() return Child.lua('return vim.api.nvim_win_get_cursor(0)') end
Child.mode = function() return Child.lua('return vim.api.nvim_get_mode().mode') end

--- The ghost text as displayed: extmarks of the plugin's namespace, inline text + virtual lines.
Child.ghost = function()
  return Child.lua([[
    local ns = vim.api.nvim_get_namespaces().codila
    local marks = vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })
    if #marks == 0 then return nil end
    local m = marks[1]
    local lines = { table.concat(vim.tbl_map(function(c) return c[1] end, m[4].virt_text or {})) }
    for _, vl in ipairs(m[4].virt_lines or {}) do
      lines[#lines + 1] = table.concat(vim.tbl_map(function(c) return c[1] end, vl))
    end
    return { row = m[2], col = m[3], lines = lines, pos = m[4].virt_text_pos, count = #marks }
  ]])
end

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

--- In Insert mode at the end of line `row` (1-based), type `text`, and wait for ghost text.
local function type_and_wait_ghost(row, text)
  Child.lua('vim.api.nvim_win_set_cursor(0, { ..., 0 })', row)
  Child.type('A' .. text)
  return Child.wait_for('ghost text', [[
    local ns = vim.api.nvim_get_namespaces().codila
    return #vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, {}) > 0
  ]], answer_timeout) and Child.ghost()
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
    messages = Child.lua('return vim.fn.execute("messages")'),
  }
end

S.ghost_accept = function()
  wait_ready()
  Child.open('ghost_accept.py', { 'def add(a, b):', '    ', '', 'print(add(1, 2))' })
  local ghost = type_and_wait_ghost(2, 'return')
  local before = Child.lines()
  local cursor_before = Child.cursor()
  local suggestion = Child.lua('return require("codila").get_suggestion()')
  Child.type('<Tab>')
  Child.wait_for('the suggestion to be inserted', 'return require("codila").get_suggestion() == nil', 5000)
  vim.wait(100)
  return {
    ghost = ghost,
    suggestion = suggestion,
    before = before,
    cursor_before = cursor_before,
    after = Child.lines(),
    cursor_after = Child.cursor(),
    mode = Child.mode(),
  }
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
  -- Typed in one go: the debounce has not fired, so there is no suggestion when <Tab> arrives.
  Child.type('Ay<Tab>z<Esc>')
  Child.wait_for('Normal mode', 'return vim.api.nvim_get_mode().mode == "n"', 5000)
  return { after = Child.lines() }
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
    messages = Child.lua('return vim.fn.execute("messages")'),
    sent = Child.lua('return vim.lsp.get_clients({ name = "codila" })[1].settings'),
  }
end

S.health = function()
  wait_ready()
  Child.lua('vim.cmd("checkhealth codila")')
  return { report = table.concat(Child.lines(), '\n') }
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
  Child.lua('vim.api.nvim_win_set_cursor(0, { 1, 0 })')
  Child.type('A')
  for _, char in ipairs({ 'a', 'b', 'c' }) do
    Child.type(char)
    vim.wait(tonumber(vim.env.CODILA_TEST_KEY_GAP_MS or '150'))
  end
  Child.wait_for('ghost text', 'return #_G.shown > 0', 10000)
  -- Let every late answer arrive.
  vim.wait(tonumber(vim.env.CODILA_TEST_SETTLE_MS or '1500'))
  return {
    shown = Child.lua('return _G.shown'),
    line = Child.lua('return vim.api.nvim_get_current_line()'),
    cursor = Child.cursor(),
    ghost = Child.ghost() or vim.NIL,
    answered = Child.lua('return _G.completed'),
  }
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
      local messages = select(2, pcall(Child.lua, 'return vim.fn.execute("messages")'))
      results[name] = { ok = false, error = tostring(result), messages = messages }
    end
  end
end)
if not ok_all then results._driver = { ok = false, error = tostring(err_all) } end
Child.stop()
local file = assert(io.open(out_path, 'w'))
file:write(vim.json.encode(results))
file:close()
