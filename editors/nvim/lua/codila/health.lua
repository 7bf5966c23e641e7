-- :checkhealth codila
local M = {}

local health = vim.health

local function python_snippet(python, code)
  local ok, result = pcall(function()
    return vim.system({ python, '-c', code }, { text = true }):wait(20000)
  end)
  if not ok then return nil, tostring(result) end
  if result.code ~= 0 then return nil, vim.trim((result.stderr or '') .. (result.stdout or '')) end
  return vim.trim(result.stdout), nil
end

M.check = function()
  health.start('codila: Neovim')
  local v = vim.version()
  local version = string.format('%d.%d.%d', v.major, v.minor, v.patch)
  if vim.fn.has('nvim-0.10') == 0 then
    health.error('Neovim ' .. version .. ' is too old: the plugin needs 0.10+ (inline virtual text)')
  elseif _G.Codila ~= nil and _G.Codila.ghost_text_renderer() == 'native' then
    health.ok('Neovim ' .. version .. ': ghost text from the built-in vim.lsp.inline_completion')
  else
    health.ok('Neovim ' .. version .. ': ghost text rendered by this plugin (extmarks)')
  end

  health.start('codila: server')
  if _G.Codila == nil then
    health.warn('setup() was not called', { 'Add require("codila").setup({}) to your config' })
    return
  end
  local config = _G.Codila.config
  local cmd = _G.Codila.server_command()
  if vim.fn.executable(cmd[1]) == 0 then
    health.error('server command not found: ' .. cmd[1], { 'Set `python` (or `cmd`) in setup() to the interpreter that has the server installed' })
    return
  end
  health.ok('server command: ' .. table.concat(cmd, ' '))
  local is_python = cmd[2] == '-m' and cmd[3] == 'lsp_server'
  if not is_python then
    health.info('custom `cmd`: not checking the Python environment')
    return
  end

  local python = cmd[1]
  local location, err = python_snippet(python, 'import lsp_server, os; print(os.path.dirname(lsp_server.__file__))')
  if location == nil then
    health.error('lsp_server is not importable with ' .. python .. ': ' .. (err or ''), { 'pip install -e . in the CoDiLA repository, with this interpreter' })
    return
  end
  health.ok('lsp_server importable: ' .. location)

  local settings = _G.Codila.get_settings()
  local default_root = python_snippet(python, 'import decoding, os; print(os.path.join(os.path.dirname(decoding.__file__), "default_model"))')
  for _, key in ipairs({ 'dlmPath', 'arPath' }) do
    local folder = settings[key]
    local label = key == 'dlmPath' and 'dlm' or 'ar'
    if type(folder) ~= 'string' then
      folder = default_root and (default_root .. '/' .. label) or nil
      label = 'default ' .. label
    end
    if folder == nil then
      health.error('cannot locate the default model (decoding package not importable)')
    elseif vim.fn.isdirectory(folder) == 1 then
      health.ok(label .. ' model folder: ' .. folder)
    else
      health.error(label .. ' model folder missing: ' .. folder, { 'Set settings.' .. key .. ' to a folder with config.json and safetensors' })
    end
  end

  local clients = vim.lsp.get_clients({ name = 'codila' })
  if #clients == 0 then
    health.info('no server running (open a file of one of: ' .. table.concat(config.filetypes, ', ') .. ')')
  else
    health.ok('server running; ' .. _G.Codila.status())
  end
end

return M
