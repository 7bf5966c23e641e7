-- User commands of the CoDiLA plugin; `require('codila').setup()` starts the server.
if vim.g.loaded_codila == 1 then return end
vim.g.loaded_codila = 1

local function codila()
  local module = require('codila')
  if _G.Codila == nil then
    vim.notify('(codila) call require("codila").setup() first', vim.log.levels.WARN)
    return nil
  end
  return module
end

vim.api.nvim_create_user_command('CodilaInfill', function(args)
  local module = codila()
  if module == nil then return end
  local buf_id = vim.api.nvim_get_current_buf()
  local range
  local visual = vim.api.nvim_buf_get_mark(buf_id, '<')
  local visual_end = vim.api.nvim_buf_get_mark(buf_id, '>')
  if args.range == 2 and visual[1] == args.line1 and visual_end[1] == args.line2 then
    range = module.visual_range(buf_id)
  elseif args.range > 0 then
    local last = vim.api.nvim_buf_get_lines(buf_id, args.line2 - 1, args.line2, true)[1]
    range = { args.line1 - 1, 0, args.line2 - 1, #last }
  else
    vim.notify('(codila) select the code to infill, then :CodilaInfill', vim.log.levels.WARN)
    return
  end
  module.infill(buf_id, range)
end, { range = true, desc = 'Rewrite the selection with the CoDiLA server (codila.infillSelection)' })

vim.api.nvim_create_user_command('CodilaTrain', function()
  local module = codila()
  if module ~= nil then module.train() end
end, { desc = 'Fine-tune the CoDiLA AR executor on the workspace (codila.trainOnWorkspace)' })

vim.api.nvim_create_user_command('CodilaRestart', function()
  local module = codila()
  if module ~= nil then module.restart() end
end, { desc = 'Restart the CoDiLA server (it starts again for every buffer of the configured filetypes)' })

vim.api.nvim_create_user_command('CodilaStatus', function()
  local module = codila()
  if module == nil then return end
  local status = module.get_status()
  local line = module.status()
  if status ~= nil and status.message ~= nil and status.message ~= '' then line = line .. ' - ' .. status.message end
  vim.notify('(codila) ' .. (line == '' and 'no server running' or line), vim.log.levels.INFO)
end, { desc = 'Show the CoDiLA server state' })
