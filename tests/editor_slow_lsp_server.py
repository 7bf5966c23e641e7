"""A deliberately slow inline-completion server for the editor tests' stale-result check.

Every textDocument/inlineCompletion is answered after DELAY seconds, even when cancelled, with a text that
names the request it answers: "<v{document version}@{line}:{character}>". An editor that shows an answer
for text that has changed since would therefore show a tag that does not match the buffer.

Run: python tests/editor_slow_lsp_server.py [DELAY]   (stdio)
"""

import sys
import time

from lsprotocol import types
from pygls.lsp.server import LanguageServer

DELAY = float(sys.argv[1]) if len(sys.argv) > 1 else 0.3
server = LanguageServer("editor-slow-server", "0")


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION)
def inline_completion(ls: LanguageServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    # Synchronous on purpose: the event loop is blocked, so $/cancelRequest cannot stop the answer.
    version = ls.workspace.get_text_document(params.text_document.uri).version
    time.sleep(DELAY)
    tag = f"<v{version}@{params.position.line}:{params.position.character}>"
    return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=tag)])


if __name__ == "__main__":
    server.start_io()
