"""A deliberately slow inline-completion server for the editor tests' stale-result check.

Every textDocument/inlineCompletion is answered after DELAY seconds, even when cancelled, with a text that
names the request it answers: "<v{document version}@{line}:{character}>". An editor that shows an answer
for text that has changed since would therefore show a tag that does not match the buffer. The item's range
starts at the cursor and ends PAST_EOL characters after it, beyond the end of the line (the editors' tests
type at the end of a line): the LSP specification reads such a position as the end of the line, and a
client must not fail on it (Neovim 0.10's str_byteindex throws there).

Run: python tests/editor_slow_lsp_server.py [DELAY]   (stdio)
"""

import sys
import time

from lsprotocol import types
from pygls.lsp.server import LanguageServer

DELAY = float(sys.argv[1]) if len(sys.argv) > 1 else 0.3
PAST_EOL = 40
server = LanguageServer("editor-slow-server", "0")


# With options: pygls 2.1.1 advertises inlineCompletionProvider only then, and a client that honours the
# server's capabilities (vscode-languageclient) would otherwise never ask.
@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
def inline_completion(ls: LanguageServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    # Synchronous on purpose: the event loop is blocked, so $/cancelRequest cannot stop the answer.
    version = ls.workspace.get_text_document(params.text_document.uri).version
    time.sleep(DELAY)
    position = params.position
    tag = f"<v{version}@{position.line}:{position.character}>"
    past_eol = types.Position(line=position.line, character=position.character + PAST_EOL)
    item = types.InlineCompletionItem(insert_text=tag, range=types.Range(start=position, end=past_eol))
    return types.InlineCompletionList(items=[item])


if __name__ == "__main__":
    server.start_io()
