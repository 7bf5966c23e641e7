--- *codila* Local multi-line completions and infilling from the CoDiLA language server
---
--- Starts `python -m lsp_server` with |vim.lsp.start()| for the configured filetypes and shows its
--- `textDocument/inlineCompletion` answers as ghost text:
--- - Neovim 0.12+: through the built-in |vim.lsp.inline_completion|;
--- - Neovim 0.10 and 0.11: rendered here with extmarks (first line inline, the rest as virtual lines),
---   requested after a debounce in Insert mode. Every request carries an id; a result is shown only if it
---   answers the newest request and the buffer and cursor have not changed since it was sent.
--- Either way a suggestion is accepted only while the text and the cursor are as they were when it was
--- answered: a key typed after it was shown is never overtaken by it. |Codila.suggest()| sends an Invoked
--- request (triggerKind 1) and shows the answer with this plugin's renderer on every version.
---
--- Also: |:CodilaInfill| (rewrite a visual selection through `codila.infillSelection`), |:CodilaTrain|,
--- the server's `codila/status` in |Codila.status()|, and |:checkhealth| codila.
---
--- Setup: `require('codila').setup({})` (see |Codila.config|).

local Codila = {}
local H = {}

--- Set up the plugin.
---
---@param config table|nil Module config table. See |Codila.config|.
Codila.setup = function(config)
  _G.Codila = Codila

  config = H.setup_config(config)
  H.apply_config(config)
  H.create_autocommands()
  H.create_default_hl()
end

--- Module config. Default values (see |Codila.config|):
Codila.config = {
  -- Command that starts the server; nil = { python, '-m', 'lsp_server' }.
  cmd = nil,
  -- Python interpreter with the server installed; nil = 'python3' ('python' on Windows).
  python = nil,
  -- Extra environment for the server process, e.g. { CUDA_VISIBLE_DEVICES = '0' }.
  cmd_env = nil,
  -- Filetypes the server attaches to.
  filetypes = { 'python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'go', 'rust', 'c', 'cpp' },
  -- Files or folders that mark a project root (the current directory if none is found).
  root_markers = { '.git', 'pyproject.toml', 'package.json', 'go.mod', 'Cargo.toml' },
  -- Server settings (section "codila"); unset = the server's default. See |codila-settings|.
  settings = {},

  ghost_text = {
    enable = true,
    -- 'auto': the built-in vim.lsp.inline_completion on Neovim 0.12+, this plugin's renderer before.
    -- true: require the built-in one; false: always this plugin's renderer.
    native = 'auto',
    -- Milliseconds of typing pause before a request (this plugin's renderer only).
    debounce_ms = 75,
  },

  -- Insert-mode keys (buffer-local, only where the server is attached); '' to not map.
  mappings = {
    -- Accept the suggestion; without one the key does what it did before (your own mapping, or the key).
    accept = '<Tab>',
    -- Hide the suggestion; without one the key does what it did before (i_CTRL-] expands abbreviations).
    dismiss = '<C-]>',
    -- Ask for a suggestion now (an Invoked request, no debounce); VS Code's key for the same.
    suggest = '<M-\\>',
  },

  -- Do not show informational messages (errors still show).
  silent = false,
}

-- Public API -----------------------------------------------------------------

--- Start (or reuse) the server for a buffer. Called by the |FileType| autocommand.
---
---@param buf_id integer|nil Buffer; default current.
---@return integer|nil Client id.
Codila.start = function(buf_id)
  buf_id = H.resolve_buf(buf_id)
  if vim.bo[buf_id].buftype ~= '' then return nil end
  local config = H.get_config()
  local capabilities = vim.lsp.protocol.make_client_capabilities()
  capabilities.textDocument = capabilities.textDocument or {}
  capabilities.textDocument.inlineCompletion = capabilities.textDocument.inlineCompletion
    or { dynamicRegistration = false }
  -- Positions in UTF-16, as in VS Code: the encoding every LSP server supports (pygls would otherwise pick
  -- Neovim's first preference, UTF-8).
  capabilities.general = capabilities.general or {}
  capabilities.general.positionEncodings = { 'utf-16' }
  local root = H.find_root(buf_id, config.root_markers)
  return vim.lsp.start({
    name = H.client_name,
    cmd = H.server_cmd(config),
    cmd_env = config.cmd_env,
    root_dir = root,
    workspace_folders = { { uri = vim.uri_from_fname(root), name = root } },
    init_options = H.as_object(H.server_settings),
    settings = { codila = H.as_object(H.server_settings) },
    capabilities = capabilities,
    handlers = { ['codila/status'] = H.on_status },
    on_attach = H.on_attach,
    on_exit = H.on_exit,
  }, { bufnr = buf_id })
end

--- Stop the server and start it again for every buffer of the configured filetypes (|:CodilaRestart|).
--- The new server starts once the old one has exited (it is killed after 3 seconds); without a running
--- server this only starts one.
Codila.restart = function()
  local clients = H.get_clients()
  local start_all = function()
    for _, buf_id in ipairs(vim.api.nvim_list_bufs()) do
      if vim.api.nvim_buf_is_loaded(buf_id) and vim.tbl_contains(Codila.config.filetypes, vim.bo[buf_id].filetype) then
        Codila.start(buf_id)
      end
    end
  end
  if #clients == 0 then return start_all() end
  for _, client in ipairs(clients) do H.stop_client(client, false) end
  local waited_ms, timer = 0, vim.uv.new_timer()
  timer:start(H.restart_poll_ms, H.restart_poll_ms, vim.schedule_wrap(function()
    waited_ms = waited_ms + H.restart_poll_ms
    -- vim.lsp.start() would reuse a client that is still shutting down: wait until none is left.
    if #H.get_clients() > 0 then
      if waited_ms >= H.restart_force_ms then
        for _, client in ipairs(H.get_clients()) do H.stop_client(client, true) end
      end
      return
    end
    timer:stop()
    timer:close()
    start_all()
  end))
end

--- Change server settings at run time: validated, merged into the current ones and sent with
--- `workspace/didChangeConfiguration`. Invalid values are reported and left out.
---
---@param settings table Server settings, e.g. `{ preset = 'fast' }`.
Codila.set_settings = function(settings)
  H.server_settings = vim.tbl_extend('force', H.server_settings, H.validate_settings(settings))
  for _, client in ipairs(H.get_clients()) do
    client.settings = { codila = H.as_object(H.server_settings) }
    H.notify_client(client, 'workspace/didChangeConfiguration', { settings = client.settings })
  end
end

--- Accept the shown suggestion. A suggestion counts only while the text and the cursor are as they were
--- when it was answered (see |codila-ghost-text|).
---
---@param buf_id integer|nil Buffer; default current.
---@return boolean Whether a suggestion was accepted.
Codila.accept = function(buf_id)
  buf_id = H.resolve_buf(buf_id)
  if not H.has_fresh_suggestion(buf_id) then return H.has_fresh_native(buf_id) and H.accept_native(buf_id) end
  local suggestion = H.buf_state[buf_id].suggestion
  H.dismiss(buf_id)

  local lines = vim.split(suggestion.text, '\n', { plain = true })
  local r = suggestion.range
  vim.api.nvim_buf_set_text(buf_id, r[1], r[2], r[3], r[4], lines)
  local end_row = r[1] + #lines - 1
  local end_col = (#lines == 1 and r[2] or 0) + #lines[#lines]
  local win = vim.fn.bufwinid(buf_id)
  if win ~= -1 then vim.api.nvim_win_set_cursor(win, { end_row + 1, end_col }) end

  if suggestion.command ~= nil then
    local client = vim.lsp.get_client_by_id(suggestion.client_id)
    if client ~= nil then H.request(client, 'workspace/executeCommand', suggestion.command, function() end, buf_id) end
  end
  return true
end

--- Hide the shown suggestion and cancel the request in flight.
---
---@param buf_id integer|nil Buffer; default current.
---@return boolean Whether a suggestion was shown.
Codila.dismiss = function(buf_id)
  buf_id = H.resolve_buf(buf_id)
  local shown = H.has_suggestion(buf_id)
  H.cancel(buf_id)
  H.dismiss(buf_id)
  return H.dismiss_native(buf_id) or shown
end

--- Ask for a suggestion at the cursor now: an Invoked request (triggerKind 1, the server does not
--- debounce it), answered as ghost text by this plugin's renderer on every Neovim version.
---
---@param buf_id integer|nil Buffer; default current.
Codila.suggest = function(buf_id)
  buf_id = H.resolve_buf(buf_id)
  H.send_inline_request(buf_id, H.trigger_kind.invoked)
end

--- Which renderer shows the automatic ghost text: 'native' (|vim.lsp.inline_completion|) or 'plugin'.
---
---@return string
Codila.ghost_text_renderer = function() return H.uses_native() and 'native' or 'plugin' end

--- The command that starts the server (`cmd`, or `{ python, '-m', 'lsp_server' }`).
---
---@return string[]
Codila.server_command = function() return vim.deepcopy(H.server_cmd(Codila.config)) end

--- The validated server settings sent to the server (a copy).
---
---@return table
Codila.get_settings = function() return vim.deepcopy(H.server_settings) end

--- The range of the last Visual selection of a buffer, as |Codila.infill()| takes it: 0-based rows, byte
--- columns, end exclusive (linewise: whole lines).
---
---@param buf_id integer|nil Buffer; default current.
---@return table `{ start_row, start_col, end_row, end_col }`
Codila.visual_range = function(buf_id) return H.visual_range(H.resolve_buf(buf_id)) end

--- The suggestion shown in a buffer by this plugin's renderer, or nil (the built-in renderer keeps its own).
---
---@param buf_id integer|nil Buffer; default current.
---@return table|nil `{ text = string, range = { row, col, end_row, end_col } }` (0-based, bytes).
Codila.get_suggestion = function(buf_id)
  local state = H.buf_state[H.resolve_buf(buf_id)]
  if state == nil or state.suggestion == nil then return nil end
  return { text = state.suggestion.text, range = vim.deepcopy(state.suggestion.range) }
end

--- Rewrite a range through the server's `codila.infillSelection`; the server applies the edit
--- (`workspace/applyEdit`).
---
---@param buf_id integer|nil Buffer; default current.
---@param range table `{ start_row, start_col, end_row, end_col }`: 0-based, byte columns, end exclusive.
---@param on_done function|nil Called with (err, result) when the server has answered.
Codila.infill = function(buf_id, range, on_done)
  buf_id = H.resolve_buf(buf_id)
  on_done = on_done or function() end
  local client = H.get_clients(buf_id)[1]
  if client == nil then
    H.message('no server attached to this buffer', 'WARN')
    return on_done('no server')
  end
  local enc = client.offset_encoding
  local lsp_range = {
    start = { line = range[1], character = H.lsp_character(buf_id, range[1], range[2], enc) },
    ['end'] = { line = range[3], character = H.lsp_character(buf_id, range[3], range[4], enc) },
  }
  local command = { command = 'codila.infillSelection', arguments = { vim.uri_from_bufnr(buf_id), lsp_range } }
  H.status_override = 'infilling'
  H.refresh_status()
  H.request(client, 'workspace/executeCommand', command, function(err, result)
    H.status_override = nil
    H.refresh_status()
    if err ~= nil then
      H.message('infill failed: ' .. (err.message or vim.inspect(err)), 'ERROR')
    elseif type(result) == 'table' and result.applied == false then
      H.message('the infill was not applied: ' .. tostring(result.reason or 'the edit was refused'), 'WARN')
    end
    on_done(err, result)
  end, buf_id)
end

--- Ask the server to train on the workspace (`codila.trainOnWorkspace`).
Codila.train = function()
  local client = H.get_clients()[1]
  if client == nil then return H.message('no server running', 'WARN') end
  local folders = vim.tbl_map(function(f) return f.uri end, client.workspace_folders or {})
  H.request(client, 'workspace/executeCommand', { command = 'codila.trainOnWorkspace', arguments = folders },
    function(err)
      if err ~= nil then H.message('training failed: ' .. (err.message or vim.inspect(err)), 'ERROR') end
    end)
end

--- Short server state for a statusline: '' without a server, else e.g. 'codila: ready 84ms'.
---
---@return string
Codila.status = function()
  if #H.get_clients() == 0 then return '' end
  if H.status_override ~= nil then return 'codila: ' .. H.status_override end
  local s = H.status
  if s == nil then return 'codila: starting' end
  local state = s.state == 'loading' and 'loading model' or s.state
  if s.state == 'ready' and type(s.lastLatencyMs) == 'number' then
    return string.format('codila: ready %dms', math.floor(s.lastLatencyMs + 0.5))
  end
  return 'codila: ' .. state
end

--- The last `codila/status` the server sent (`{ state, message, lastLatencyMs }`), or nil.
---
---@return table|nil
Codila.get_status = function() return H.status and vim.deepcopy(H.status) or nil end

-- Helper data ----------------------------------------------------------------
H.default_config = vim.deepcopy(Codila.config)

H.client_name = 'codila'

H.ns_id = vim.api.nvim_create_namespace('codila')

H.trigger_kind = { invoked = 1, automatic = 2 }

-- Per attached buffer: { timer, pending = { id, client, lsp_id }, latest = id, suggestion, extmark,
-- sending, own = { [lsp_id] = true } (this plugin's requests), native_sent = { [lsp_id] = { tick, cursor } }
-- (the built-in's requests in flight), native_fresh = { tick, cursor, mark } }
H.buf_state = {}

-- Buffers whose keys are mapped (once per buffer: the mappings outlive a server restart).
H.mapped = {}

-- Per buffer and key: the buffer-local mapping the plugin's own replaced, to fall back to.
H.fallback_maps = {}

H.restart_poll_ms = 50
H.restart_force_ms = 3000

-- Every inline request gets the next id; a result for an older id is stale.
H.request_counter = 0

H.server_settings = {}

H.status = nil

H.status_override = nil

-- Server settings (section "codila"): the same names, types and ranges as the server and the VS Code
-- extension's package.json. `nullable` = `vim.NIL` means "the preset's value" / "the default model".
H.settings_schema = {
  preset = { type = 'string', enum = { 'fast', 'balanced', 'accurate' } },
  dlmPath = { type = 'string', nullable = true, pattern = { '%S' }, pattern_message = 'a folder path (or vim.NIL)' },
  arPath = { type = 'string', nullable = true, pattern = { '%S' }, pattern_message = 'a folder path (or vim.NIL)' },
  device = { type = 'string', pattern = { '^auto$', '^cpu$', '^cuda$', '^cuda:%d+$' }, pattern_message = 'auto, cpu, cuda or cuda:N' },
  dtype = { type = 'string', enum = { 'auto', 'float32', 'bfloat16', 'float16', 'int8' } },
  arBackend = { type = 'string', enum = { 'torch' } },
  trustRemoteCode = { type = 'boolean' },
  method = { type = 'string', enum = { 'auto', 'verified', 'ar', 'codila', 'codila-top1', 'dlm' }, nullable = true },
  blockSize = { type = 'integer', min = 1, max = 16, nullable = true },
  mode = { type = 'string', enum = { 'static', 'dynamic' }, nullable = true },
  tau = { type = 'number', min = 0, max = 100, nullable = true },
  scope = { type = 'integer', min = 1, max = 10000, nullable = true },
  temperature = { type = 'number', min = 0, max = 100 },
  topP = { type = 'number', min = 0.000001, max = 1 },
  maxNewTokens = { type = 'integer', min = 1, max = 1024 },
  contextTokens = { type = 'integer', min = 16, max = 1000000 },
  latencyBudgetMs = { type = 'integer', min = 0, max = 3600000 },
  debounceMs = { type = 'integer', min = 0, max = 10000 },
  syntaxCheck = { type = 'string', enum = { 'off', 'trim', 'reject' } },
  kvCache = { type = 'string', enum = { 'none', 'prefix', 'dual' }, nullable = true },
  logLevel = { type = 'string', enum = { 'debug', 'info', 'warning', 'error' } },
}

-- Helper functionality =======================================================
-- Settings -------------------------------------------------------------------
H.setup_config = function(config)
  H.check_type('config', config, 'table', true)
  config = vim.tbl_deep_extend('force', vim.deepcopy(H.default_config), config or {})

  H.check_type('cmd', config.cmd, 'table', true)
  H.check_type('python', config.python, 'string', true)
  H.check_type('cmd_env', config.cmd_env, 'table', true)
  H.check_type('filetypes', config.filetypes, 'table')
  H.check_type('root_markers', config.root_markers, 'table')
  H.check_type('settings', config.settings, 'table')
  H.check_type('ghost_text', config.ghost_text, 'table')
  H.check_type('ghost_text.enable', config.ghost_text.enable, 'boolean')
  if not vim.tbl_contains({ 'auto', true, false }, config.ghost_text.native) then
    H.error('`ghost_text.native` should be "auto", true or false, not ' .. vim.inspect(config.ghost_text.native))
  end
  H.check_type('ghost_text.debounce_ms', config.ghost_text.debounce_ms, 'number')
  H.check_type('mappings', config.mappings, 'table')
  H.check_type('mappings.accept', config.mappings.accept, 'string')
  H.check_type('mappings.dismiss', config.mappings.dismiss, 'string')
  H.check_type('mappings.suggest', config.mappings.suggest, 'string')
  H.check_type('silent', config.silent, 'boolean')
  if config.ghost_text.native == true and not H.has_native() then
    H.error('`ghost_text.native = true` needs Neovim 0.12+ (vim.lsp.inline_completion)')
  end
  return config
end

H.apply_config = function(config)
  Codila.config = config
  H.server_settings = H.validate_settings(config.settings)
end

H.get_config = function() return Codila.config end

--- Valid settings only; each invalid one gives a message and is left out (the server keeps its default).
H.validate_settings = function(settings)
  local valid = {}
  for key, value in pairs(settings) do
    local problem = H.check_setting(key, value)
    if problem == nil then
      valid[key] = value
    else
      H.message(string.format('settings.%s %s; using the server default', key, problem), 'WARN')
    end
  end
  return valid
end

--- Why a server setting is invalid, or nil.
H.check_setting = function(key, value)
  local schema = H.settings_schema[key]
  if schema == nil then
    local names = vim.tbl_keys(H.settings_schema)
    table.sort(names)
    return 'is not a setting (known: ' .. table.concat(names, ', ') .. ')'
  end
  if value == vim.NIL then return schema.nullable and nil or 'cannot be null' end
  local shown = vim.inspect(value)
  if schema.type == 'integer' then
    if type(value) ~= 'number' or value % 1 ~= 0 then return 'must be an integer, got ' .. shown end
  elseif type(value) ~= schema.type then
    return 'must be a ' .. schema.type .. ', got ' .. shown
  end
  if schema.enum ~= nil and not vim.tbl_contains(schema.enum, value) then
    return 'must be one of ' .. table.concat(schema.enum, ', ') .. ', got ' .. shown
  end
  if schema.min ~= nil and value < schema.min then return 'must be >= ' .. schema.min .. ', got ' .. shown end
  if schema.max ~= nil and value > schema.max then return 'must be <= ' .. schema.max .. ', got ' .. shown end
  if schema.pattern ~= nil then
    local matches = vim.tbl_filter(function(p) return value:match(p) ~= nil end, schema.pattern)
    if #matches == 0 then return 'must be ' .. schema.pattern_message .. ', got ' .. shown end
  end
  return nil
end

-- Autocommands ---------------------------------------------------------------
H.create_autocommands = function()
  local gr = vim.api.nvim_create_augroup('Codila', {})
  local au = function(event, pattern, callback, desc)
    vim.api.nvim_create_autocmd(event, { group = gr, pattern = pattern, callback = callback, desc = desc })
  end
  au('FileType', Codila.config.filetypes, function(args) Codila.start(args.buf) end, 'Start the CoDiLA server')
  -- Buffers whose filetype was set before setup() ran.
  for _, buf_id in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf_id) and vim.tbl_contains(Codila.config.filetypes, vim.bo[buf_id].filetype) then
      Codila.start(buf_id)
    end
  end
end

H.create_default_hl = function()
  vim.api.nvim_set_hl(0, 'CodilaSuggestion', { default = true, link = 'Comment' })
end

H.attach_autocommands = function(buf_id)
  local gr = vim.api.nvim_create_augroup('CodilaBuffer' .. buf_id, {})
  local au = function(event, callback, desc)
    vim.api.nvim_create_autocmd(event, { group = gr, buffer = buf_id, callback = callback, desc = desc })
  end
  au('TextChangedI', function() H.on_text_changed(buf_id) end, 'Request a CoDiLA suggestion')
  au('CursorMovedI', function() H.on_cursor_moved(buf_id) end, 'Hide a CoDiLA suggestion the cursor left')
  au({ 'InsertLeave', 'BufLeave' }, function() Codila.dismiss(buf_id) end, 'Hide the CoDiLA suggestion')
  au('BufWipeout', function() H.detach(buf_id) end, 'Forget CoDiLA state')
  if H.uses_native() then
    au('LspRequest', function(ev) H.on_native_request(buf_id, ev.data) end, 'Track built-in inline completion')
  end
end

-- LSP client -----------------------------------------------------------------
H.server_cmd = function(config)
  if config.cmd ~= nil then return config.cmd end
  local python = config.python or (vim.fn.has('win32') == 1 and 'python' or 'python3')
  return { python, '-m', 'lsp_server' }
end

H.find_root = function(buf_id, markers)
  local root = vim.fs.root(buf_id, markers)
  return root or vim.fn.getcwd()
end

H.get_clients = function(buf_id) return vim.lsp.get_clients({ name = H.client_name, bufnr = buf_id }) end

-- The built-in inline completion as released in 0.12 (early 0.12 dev builds lack it or parts of it).
H.has_native = function()
  local native = vim.lsp.inline_completion
  return type(native) == 'table' and type(native.enable) == 'function' and type(native.get) == 'function'
    and type(native.is_enabled) == 'function'
end

H.uses_native = function()
  local native = Codila.config.ghost_text.native
  return native == true or (native == 'auto' and H.has_native())
end

H.on_attach = function(_, buf_id)
  if H.buf_state[buf_id] == nil then
    H.buf_state[buf_id] = { native_sent = {}, own = {} }
    H.attach_autocommands(buf_id)
  end
  if Codila.config.ghost_text.enable and H.uses_native() then
    -- Per buffer, not per client: enabled for a client id, Neovim never detaches a client that stopped, and
    -- every later keystroke fails its assertion (0.12.4).
    vim.lsp.inline_completion.enable(true, { bufnr = buf_id })
  end
  H.map_keys(buf_id)
end

H.on_exit = function(code, signal)
  if code ~= 0 then H.message(string.format('server exited (code %d, signal %d); see :LspLog', code, signal), 'ERROR') end
  H.status = nil
  for buf_id in pairs(H.buf_state) do
    local state = H.buf_state[buf_id]
    state.pending, state.native_sent, state.own, state.native_fresh = nil, {}, {}, nil
    vim.schedule(function() H.dismiss(buf_id) end)
  end
  H.refresh_status()
end

H.detach = function(buf_id)
  local state = H.buf_state[buf_id]
  if state ~= nil then
    H.cancel(buf_id)
    H.dismiss(buf_id)
    if state.timer ~= nil then state.timer:close() end
  end
  H.buf_state[buf_id], H.mapped[buf_id], H.fallback_maps[buf_id] = nil, nil, nil
end

H.stop_client = function(client, force)
  if vim.fn.has('nvim-0.11') == 1 then return client:stop(force) end
  return client.stop(force)
end

-- Keys ------------------------------------------------------------------------
-- Each key acts when there is something to act on and otherwise does what it did before: the buffer-local
-- mapping it replaced, else the global mapping of that moment, else the key itself. The mappings are Lua
-- callbacks, not expressions: Neovim evaluates an expression mapping as soon as it peeks at the key, which
-- can be before keys typed ahead of it have reached the buffer.
H.map_keys = function(buf_id)
  if H.mapped[buf_id] then return end
  H.mapped[buf_id] = true
  H.fallback_maps[buf_id] = {}
  local mappings = Codila.config.mappings
  local map = function(lhs, act, desc)
    if lhs == '' then return end
    H.fallback_maps[buf_id][lhs] = vim.api.nvim_buf_call(buf_id, function()
      local previous = vim.fn.maparg(lhs, 'i', false, true)
      return previous.buffer == 1 and previous or nil
    end)
    local rhs = function()
      if not act() then H.feed_fallback(buf_id, lhs) end
    end
    vim.keymap.set('i', lhs, rhs, { buffer = buf_id, desc = desc })
  end
  map(mappings.accept, function()
    -- The popup menu's own use of the key (or the user's mapping for it) comes first.
    return vim.fn.pumvisible() == 0 and Codila.accept(buf_id)
  end, 'Accept the CoDiLA suggestion')
  map(mappings.dismiss, function() return Codila.dismiss(buf_id) end, 'Dismiss the CoDiLA suggestion')
  map(mappings.suggest, function()
    Codila.suggest(buf_id)
    return true
  end, 'Ask the CoDiLA server for a suggestion now')
end

--- Do what `lhs` did before the plugin mapped it (see above): its keys go to the front of the typeahead,
--- ahead of anything typed after it.
H.feed_fallback = function(buf_id, lhs)
  local previous = H.fallback_maps[buf_id] and H.fallback_maps[buf_id][lhs] or H.global_mapping(lhs)
  if previous == nil then return vim.api.nvim_feedkeys(vim.keycode(lhs), 'int', false) end
  -- A buffer-local <Plug> copy of that mapping, made now so that a global mapping changed since attaching
  -- is the one used.
  local plug = '<Plug>(codila-fallback-' .. vim.fn.keytrans(vim.keycode(lhs)) .. ')'
  local copy = vim.tbl_extend('force', previous, { lhs = plug, lhsraw = vim.keycode(plug), mode = 'i', buffer = 1 })
  copy.lhsrawalt = nil
  vim.fn.mapset('i', false, copy)
  vim.api.nvim_feedkeys(vim.keycode(plug), 'imt', false)
end

H.global_mapping = function(lhs)
  local raw = vim.keycode(lhs)
  for _, m in ipairs(vim.api.nvim_get_keymap('i')) do
    if vim.keycode(m.lhs) == raw then return m end
  end
  return nil
end

H.has_suggestion = function(buf_id)
  local state = H.buf_state[buf_id]
  return state ~= nil and state.suggestion ~= nil
end

--- A suggestion of this plugin's renderer is shown and nothing was typed nor the cursor moved since: keys
--- typed after it was shown may still wait for TextChangedI, which would have hidden it.
H.has_fresh_suggestion = function(buf_id)
  local state = H.buf_state[buf_id]
  local suggestion = state and state.suggestion
  return suggestion ~= nil and vim.api.nvim_buf_get_changedtick(buf_id) == suggestion.tick
    and vim.deep_equal(H.buf_cursor(buf_id), suggestion.cursor)
end

-- Built-in inline completion (Neovim 0.12) -------------------------------------
-- It keeps showing its last item while newer requests are pending and would insert it at the item's old
-- range, before anything typed since. So its answers are tracked from the outside: each request's text and
-- cursor when sent, and which request the displayed item answers; the item is accepted only while the text
-- and cursor are still those and no newer request is pending.
H.native_ns = function() return vim.api.nvim_get_namespaces()['nvim.lsp.inline_completion'] end

--- Id of the built-in ghost text's extmark in a buffer, or nil.
H.native_mark = function(buf_id)
  local ns = H.native_ns()
  if ns == nil or not vim.api.nvim_buf_is_valid(buf_id) then return nil end
  local marks = vim.api.nvim_buf_get_extmarks(buf_id, ns, 0, -1, { limit = 1 })
  return marks[1] and marks[1][1] or nil
end

H.on_native_request = function(buf_id, data)
  local state = H.buf_state[buf_id]
  local request = data.request
  if state == nil or request.method ~= 'textDocument/inlineCompletion' then return end
  local client = vim.lsp.get_client_by_id(data.client_id)
  if client == nil or client.name ~= H.client_name then return end
  -- This plugin's own (Invoked) requests are tracked by send_inline_request.
  if state.sending then state.own[data.request_id] = true end
  if state.own[data.request_id] then
    if request.type == 'complete' then state.own[data.request_id] = nil end
    return
  end
  if request.type == 'pending' then
    state.native_sent[data.request_id] = { tick = vim.api.nvim_buf_get_changedtick(buf_id), cursor = H.buf_cursor(buf_id) }
    state.native_fresh = nil
  elseif request.type == 'complete' then
    local sent = state.native_sent[data.request_id]
    state.native_sent[data.request_id] = nil
    local before = H.native_mark(buf_id)
    -- Neovim's handler runs next (scheduled just before this); after it, a new extmark means it showed
    -- this answer. An error or an empty answer shows nothing new.
    vim.schedule(function()
      if H.buf_state[buf_id] ~= state or next(state.native_sent) ~= nil then return end
      local after = H.native_mark(buf_id)
      if sent ~= nil and after ~= nil and after ~= before then
        state.native_fresh = { tick = sent.tick, cursor = sent.cursor, mark = after }
        -- The newest answer wins: hide this plugin's (Invoked) suggestion under it.
        H.dismiss(buf_id)
      end
    end)
  else
    state.native_sent[data.request_id] = nil
  end
end

H.has_fresh_native = function(buf_id)
  local state = H.buf_state[buf_id]
  local fresh = state and state.native_fresh
  if fresh == nil or not H.uses_native() or next(state.native_sent) ~= nil then return false end
  return fresh.mark == H.native_mark(buf_id) and vim.api.nvim_buf_get_changedtick(buf_id) == fresh.tick
    and vim.deep_equal(H.buf_cursor(buf_id), fresh.cursor)
end

--- Insert the built-in ghost text. |vim.lsp.inline_completion.get()| inserts it on the next turn of the event
--- loop; waiting for that turn here (typed keys are not handled meanwhile) keeps keys typed after the accept
--- key after the suggestion.
H.accept_native = function(buf_id)
  local done = false
  local on_accept = function(item)
    done = true
    return item
  end
  if not vim.lsp.inline_completion.get({ bufnr = buf_id, on_accept = on_accept }) then return false end
  vim.wait(1000, function() return done end, 1)
  return true
end

--- Hide the built-in ghost text (and cancel its requests) without inserting it; false if none was shown.
--- |vim.lsp.inline_completion.get()| with an `on_accept` that returns nil does exactly that.
H.dismiss_native = function(buf_id)
  if not H.uses_native() or H.native_mark(buf_id) == nil then return false end
  local state = H.buf_state[buf_id]
  if state ~= nil then state.native_fresh = nil end
  return vim.lsp.inline_completion.get({ bufnr = buf_id, on_accept = function() return nil end }) == true
end

H.buf_cursor = function(buf_id)
  local win = vim.api.nvim_get_current_buf() == buf_id and 0 or vim.fn.bufwinid(buf_id)
  if win == -1 then return nil end
  return vim.api.nvim_win_get_cursor(win)
end

-- Neovim 0.11 made client methods take `self`; 0.10 used plain fields.
H.request = function(client, method, params, handler, buf_id)
  if vim.fn.has('nvim-0.11') == 1 then return client:request(method, params, handler, buf_id) end
  return client.request(method, params, handler, buf_id)
end

H.notify_client = function(client, method, params)
  if vim.fn.has('nvim-0.11') == 1 then return client:notify(method, params) end
  return client.notify(method, params)
end

H.is_stopped = function(client)
  if vim.fn.has('nvim-0.11') == 1 then return client:is_stopped() end
  return client.is_stopped()
end

H.cancel_request = function(client, lsp_id)
  if vim.fn.has('nvim-0.11') == 1 then return client:cancel_request(lsp_id) end
  return client.cancel_request(lsp_id)
end

-- Ghost text (Neovim < 0.12) -------------------------------------------------
H.on_text_changed = function(buf_id)
  local state = H.buf_state[buf_id]
  if state == nil then return end
  H.cancel(buf_id)
  H.dismiss(buf_id)
  if not Codila.config.ghost_text.enable or H.uses_native() then return end
  state.timer = state.timer or vim.uv.new_timer()
  state.timer:stop()
  state.timer:start(Codila.config.ghost_text.debounce_ms, 0, vim.schedule_wrap(function()
    if vim.api.nvim_buf_is_valid(buf_id) and vim.api.nvim_get_current_buf() == buf_id and H.in_insert_mode() then
      H.send_inline_request(buf_id, H.trigger_kind.automatic)
    end
  end))
end

H.on_cursor_moved = function(buf_id)
  local state = H.buf_state[buf_id]
  if state == nil or state.suggestion == nil then return end
  if not vim.deep_equal(vim.api.nvim_win_get_cursor(0), state.suggestion.cursor) then H.dismiss(buf_id) end
end

H.in_insert_mode = function() return vim.api.nvim_get_mode().mode:sub(1, 1) == 'i' end

--- Send `textDocument/inlineCompletion` for the cursor; the previous request of the buffer is cancelled.
H.send_inline_request = function(buf_id, trigger_kind)
  local state = H.buf_state[buf_id]
  local client = H.get_clients(buf_id)[1]
  if state == nil or client == nil then return end
  H.cancel(buf_id)
  H.dismiss(buf_id)

  H.request_counter = H.request_counter + 1
  local id = H.request_counter
  local sent = {
    id = id,
    tick = vim.api.nvim_buf_get_changedtick(buf_id),
    cursor = vim.api.nvim_win_get_cursor(0),
  }
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = trigger_kind }
  state.latest = id
  -- Its LspRequest events fire inside client:request(): `sending` marks them as this plugin's.
  state.sending = true
  local ok, lsp_id = H.request(client, 'textDocument/inlineCompletion', params, function(err, result)
    H.on_inline_result(buf_id, client, sent, err, result)
  end, buf_id)
  state.sending = false
  if ok and lsp_id ~= nil and state.latest == id then state.pending = { id = id, client = client, lsp_id = lsp_id } end
end

H.on_inline_result = function(buf_id, client, sent, err, result)
  local state = H.buf_state[buf_id]
  if state == nil then return end
  if state.pending ~= nil and state.pending.id == sent.id then state.pending = nil end
  -- Stale: a newer request was sent, or the text or cursor moved since this one was.
  if state.latest ~= sent.id then return end
  if not vim.api.nvim_buf_is_valid(buf_id) or vim.api.nvim_buf_get_changedtick(buf_id) ~= sent.tick then return end
  if vim.api.nvim_get_current_buf() ~= buf_id or not H.in_insert_mode() then return end
  if not vim.deep_equal(vim.api.nvim_win_get_cursor(0), sent.cursor) then return end
  if err ~= nil then
    -- RequestCancelled / ContentModified are normal while typing.
    if err.code ~= -32800 and err.code ~= -32801 then H.message('completion failed: ' .. (err.message or ''), 'WARN') end
    return
  end
  local items = result and (result.items or result) or {}
  for _, item in ipairs(items) do
    local suggestion = H.make_suggestion(buf_id, client, item, sent.cursor)
    if suggestion ~= nil then return H.show(buf_id, suggestion) end
  end
end

--- A displayable suggestion from an InlineCompletionItem, or nil when it cannot be shown as an insertion
--- at the cursor.
H.make_suggestion = function(buf_id, client, item, cursor)
  local text = item.insertText
  if type(text) == 'table' then text = text.value end
  if type(text) ~= 'string' then return nil end
  local row, col = cursor[1] - 1, cursor[2]
  local range = { row, col, row, col }
  if item.range ~= nil then
    local enc = client.offset_encoding
    local s, e = item.range.start, item.range['end']
    range = { s.line, H.byte_col(buf_id, s.line, s.character, enc), e.line, H.byte_col(buf_id, e.line, e.character, enc) }
  end
  -- The ghost text starts at the cursor: what the range covers before the cursor must already be typed.
  if range[1] ~= row or range[2] > col then return nil end
  local typed = vim.api.nvim_buf_get_lines(buf_id, row, row + 1, true)[1]:sub(range[2] + 1, col)
  if text:sub(1, #typed) ~= typed then return nil end
  local ghost = text:sub(#typed + 1)
  if ghost == '' then return nil end
  return { text = text, ghost = ghost, range = range, cursor = cursor, command = item.command, client_id = client.id }
end

H.show = function(buf_id, suggestion)
  local state = H.buf_state[buf_id]
  local lines = vim.split(suggestion.ghost, '\n', { plain = true })
  local virt_lines = {}
  for i = 2, #lines do
    virt_lines[#virt_lines + 1] = { { lines[i], 'CodilaSuggestion' } }
  end
  local row, col = suggestion.cursor[1] - 1, suggestion.cursor[2]
  -- One ghost text at a time: this answer replaces the built-in one (an Invoked request on 0.12).
  H.dismiss_native(buf_id)
  state.extmark = vim.api.nvim_buf_set_extmark(buf_id, H.ns_id, row, col, {
    virt_text = { { lines[1], 'CodilaSuggestion' } },
    virt_text_pos = 'inline',
    virt_lines = #virt_lines > 0 and virt_lines or nil,
    hl_mode = 'combine',
  })
  suggestion.tick = vim.api.nvim_buf_get_changedtick(buf_id)
  state.suggestion = suggestion
  vim.api.nvim_exec_autocmds('User', { pattern = 'CodilaSuggestion', modeline = false,
    data = { buf = buf_id, text = suggestion.text, range = vim.deepcopy(suggestion.range) } })
end

H.dismiss = function(buf_id)
  local state = H.buf_state[buf_id]
  if state == nil then return end
  if state.extmark ~= nil and vim.api.nvim_buf_is_valid(buf_id) then
    vim.api.nvim_buf_del_extmark(buf_id, H.ns_id, state.extmark)
  end
  state.extmark, state.suggestion = nil, nil
end

H.cancel = function(buf_id)
  local state = H.buf_state[buf_id]
  if state == nil then return end
  if state.timer ~= nil then state.timer:stop() end
  -- A newer id makes any answer still on its way stale, even if the server ignores the cancel.
  state.latest = nil
  local pending = state.pending
  state.pending = nil
  if pending ~= nil and not H.is_stopped(pending.client) then H.cancel_request(pending.client, pending.lsp_id) end
end

-- Positions ------------------------------------------------------------------
H.line = function(buf_id, row) return vim.api.nvim_buf_get_lines(buf_id, row, row + 1, false)[1] or '' end

--- LSP character (in the client's encoding) -> byte column. A character past the end of the line means
--- the end of the line, as the LSP specification says.
H.byte_col = function(buf_id, row, character, encoding)
  local line = H.line(buf_id, row)
  if encoding == 'utf-8' then return math.min(character, #line) end
  if vim.fn.has('nvim-0.11') == 1 then return vim.str_byteindex(line, encoding, character, false) end
  -- Neovim 0.10's str_byteindex has no clamping and throws past the end.
  local utf32_len, utf16_len = vim.str_utfindex(line)
  character = math.min(character, encoding == 'utf-16' and utf16_len or utf32_len)
  return vim.str_byteindex(line, character, encoding == 'utf-16')
end

--- Byte column -> LSP character (in the client's encoding).
H.lsp_character = function(buf_id, row, col, encoding)
  local line = H.line(buf_id, row)
  col = math.min(col, #line)
  if encoding == 'utf-8' then return col end
  if vim.fn.has('nvim-0.11') == 1 then return vim.str_utfindex(line, encoding, col, false) end
  local utf32, utf16 = vim.str_utfindex(line, col)
  return encoding == 'utf-16' and utf16 or utf32
end

--- The range of the last visual selection: 0-based rows, byte columns, end exclusive.
H.visual_range = function(buf_id)
  local s, e = vim.api.nvim_buf_get_mark(buf_id, '<'), vim.api.nvim_buf_get_mark(buf_id, '>')
  local start_row, start_col, end_row, end_col = s[1] - 1, s[2], e[1] - 1, e[2]
  if vim.fn.visualmode() == 'V' then
    return { start_row, 0, end_row, #H.line(buf_id, end_row) }
  end
  -- Charwise: the '> mark is on the last selected character; include all of its bytes.
  local line = H.line(buf_id, end_row)
  local char_len = #vim.fn.strcharpart(line:sub(end_col + 1), 0, 1)
  return { start_row, start_col, end_row, math.min(end_col + math.max(char_len, 1), #line) }
end

-- Status ---------------------------------------------------------------------
H.on_status = function(_, params)
  if type(params) ~= 'table' then return end
  local previous = H.status and H.status.state
  H.status = params
  if params.state ~= previous then
    if params.state == 'error' then
      H.message(params.message or 'server error', 'ERROR')
    elseif params.state == 'ready' and previous == 'loading' then
      H.message('ready' .. (params.message and params.message ~= '' and (': ' .. params.message) or ''), 'INFO')
    end
  end
  H.refresh_status()
end

H.refresh_status = function()
  vim.schedule(function()
    vim.api.nvim_exec_autocmds('User', { pattern = 'CodilaStatus', modeline = false })
    vim.cmd('redrawstatus')
  end)
end

-- Utilities ------------------------------------------------------------------
-- An empty Lua table is encoded as a JSON array; the server expects an object.
H.as_object = function(tbl) return next(tbl) == nil and vim.empty_dict() or tbl end

H.resolve_buf = function(buf_id)
  if buf_id == nil or buf_id == 0 then return vim.api.nvim_get_current_buf() end
  return buf_id
end

H.error = function(msg) error('(codila) ' .. msg, 0) end

H.check_type = function(name, val, ref, allow_nil)
  if type(val) == ref or (ref == 'callable' and vim.is_callable(val)) or (allow_nil and val == nil) then return end
  H.error(string.format('`%s` should be %s, not %s', name, ref, type(val)))
end

H.message = function(msg, level)
  level = level or 'INFO'
  if level == 'INFO' and Codila.config.silent then return end
  vim.schedule(function() vim.notify('(codila) ' .. msg, vim.log.levels[level]) end)
end

-- For tests only: the plugin's entry files (plugin/, health.lua) use the public functions above.
Codila._H = H

return Codila
