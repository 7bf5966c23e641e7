"""CoDiLA-LSP: the language server. Run it with `python -m lsp_server` (see lsp_server/__main__.py)."""

__version__ = "0.1.0"
