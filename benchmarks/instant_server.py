"""An OpenAI-compatible chat server on loopback that answers at once with one fixed masked completion.

For measuring an evaluator's own start-up and per-rollout cost (``benchmarks.eval_vs_verifiers
--server instant``): no model, so the server adds almost nothing to what is timed.

    python -m benchmarks.instant_server PORT
"""

import sys
import time
from typing import Any

from fastapi import FastAPI, Request  # at module level: FastAPI reads the handlers' annotations

ANSWER = "<masked_output>\n[PII] met [PII].\n</masked_output>"


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(req: Request) -> dict[str, Any]:
        body = await req.json()
        n = body.get("n", 1) or 1
        return {"id": "x", "object": "chat.completion", "created": int(time.time()), "model": body.get("model", "m"),
                "choices": [{"index": i, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
                            for i in range(n)],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "m", "object": "model"}]}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(make_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="error")
