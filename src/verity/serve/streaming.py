"""Server-sent events streamed while the tokens are generated (``stream: true`` without tools).

Each step's new tokens of a choice are detokenized with the choice's earlier tokens and the new
text is sent at once. Text that could still turn out to be the start of a stop string, or that ends
in an incomplete UTF-8 sequence, is held back until the next token settles it. When the batch
ends, each choice sends whatever its final text (cut at the stop string, as without streaming)
adds to what was sent, then its finish reason and log-probs, so the concatenated deltas equal the
non-streamed text.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from verity.serve.render import SSE_DONE, sse
from verity.types import Completion

log = logging.getLogger(__name__)


class IncrementalText:
    """The streamable text of one choice as its tokens arrive."""

    def __init__(self, tokenizer: Any, stop: Sequence[str]):
        self.tok, self.stop, self.ids, self.sent = tokenizer, tuple(stop), [], ""
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.stopped = False

    def add(self, token_ids: Sequence[int]) -> str:
        """The new text that ``token_ids`` make safe to send ("" when none)."""
        if self.stopped:
            return ""
        self.ids.extend(token_ids)
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        cut = min((text.find(s) for s in self.stop if s in text), default=-1)
        if cut >= 0:
            self.stopped, visible = True, text[:cut]
        else:
            visible = text[:len(text) - self.hold] if self.hold else text
            while visible.endswith("\ufffd"):
                visible = visible[:-1]
        return self._advance(visible)

    def finish(self, final_text: str) -> str:
        """What the final text adds to the sent text."""
        return self._advance(final_text)

    def _advance(self, visible: str) -> str:
        if len(visible) <= len(self.sent) or not visible.startswith(self.sent):
            return ""
        piece, self.sent = visible[len(self.sent):], visible
        return piece


async def live_events(batcher: Any, job: Any, tokenizer: Any, n: int,
                      chunk: Callable[[int, str | None, Completion | None], str],
                      usage_chunk: Callable[[list[Completion]], str] | None) -> AsyncIterator[str]:
    """SSE lines for a streamed job: ``chunk(index, text, None)`` per new text, ``chunk(index, rest, completion)``
    at the end of each choice, then ``usage_chunk(completions)`` (when given) and ``[DONE]``."""
    texts = [IncrementalText(tokenizer, job.args.stop) for _ in range(n)]
    async for kind, payload in batcher.events(job):
        if kind == "tokens":
            by_choice: dict[int, list[int]] = {}
            for i, t in payload:
                by_choice.setdefault(i, []).append(t)
            for i, ids in by_choice.items():
                piece = texts[i].add(ids)
                if piece:
                    yield chunk(i, piece, None)
        elif kind == "done":
            for i, c in enumerate(payload):
                yield chunk(i, texts[i].finish(c.text), c)
            if usage_chunk is not None:
                yield usage_chunk(payload)
        else:  # the headers are sent: the error goes in the stream, the details in the server's log
            log.error("generation failed while streaming", exc_info=payload)
            yield sse({"error": {"message": "The server had an error while generating; it is logged on the server",
                                 "type": "server_error", "param": None, "code": None}})
            return
    yield SSE_DONE
