"""JudgeRubric against a fake OpenAI-compatible judge on loopback: template, parsing, caching,
concurrency limit, retries, and an outage that is a counted error, not a crash."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from verity.errors import ConfigError
from verity.rubrics.judge import JudgeError, JudgeRubric, parse_judge_score


class FakeJudge:
    """/v1/chat/completions answering 'yes' when the response block contains the gold answer."""

    def __init__(self, fail_first: int = 0, delay_s: float = 0.0):
        import uvicorn
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse

        self.prompts: list[str] = []
        self.fail_first, self.delay_s = fail_first, delay_s
        self.in_flight = self.max_in_flight = 0
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(body: dict):
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay_s)
                text = body["messages"][-1]["content"]
                self.prompts.append(text)
                if len(self.prompts) <= self.fail_first:
                    return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
                gold = text.split("Ground truth answer:\n```\n")[1].split("\n```")[0]
                resp = text.split("Response:\n```\n")[1].split("\n```")[0]
                reply = "yes" if gold in resp else "no"
            finally:
                self.in_flight -= 1
            return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": reply}}]}

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def close(self):
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture
def fake():
    servers: list[FakeJudge] = []

    def make(**kw):
        servers.append(FakeJudge(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _score(rubric, response, answer="Paris", state=None):
    return rubric.score(prompt=[{"role": "user", "content": "Capital of France?"}],
                        completion=[{"role": "assistant", "content": response}], answer=answer, state=state)


@pytest.mark.parametrize("reply,want", [("yes", 1.0), ("No.", 0.0), ("Score: 7/10", 0.7), ("score: 0.25", 0.25),
                                        ("8", 0.8), ("Correct!", 1.0)])
def test_parse_judge_score(reply, want):
    assert parse_judge_score(reply) == pytest.approx(want)


def test_unparseable_reply_raises():
    with pytest.raises(JudgeError, match="cannot parse"):
        parse_judge_score("I am not sure")


def test_template_must_have_placeholders():
    with pytest.raises(ConfigError, match="no {response} placeholder"):
        JudgeRubric(judge_prompt="{question} {answer}")


def test_scores_caches_and_limits_concurrency(fake):
    srv = fake(delay_s=0.05)
    rubric = JudgeRubric(judge_base_url=srv.url, judge_model="judge", max_concurrency=2)

    async def run():
        answers = [f"It is Paris ({i})" if i % 2 == 0 else f"Lyon {i}" for i in range(8)]
        first = await asyncio.gather(*(_score(rubric, a) for a in answers))
        again = await asyncio.gather(*(_score(rubric, a) for a in answers))
        return first, again

    first, again = asyncio.run(run())
    assert [s.reward for s in first] == [1.0, 0.0] * 4
    assert [s.reward for s in again] == [s.reward for s in first]
    assert len(srv.prompts) == 8 and rubric.requests == 8  # the second pass came from the cache
    assert srv.max_in_flight <= 2
    assert "Capital of France?" in srv.prompts[0] and "```\nParis\n```" in srv.prompts[0]


def test_reply_cached_in_rollout_state(fake):
    srv = fake()
    rubric = JudgeRubric(judge_base_url=srv.url, judge_model="judge")
    state: dict = {}
    asyncio.run(rubric.judge([{"role": "user", "content": "q"}], "Paris", "Paris", state))
    assert list(state["judge_response"].values()) == ["yes"]


def test_sync_openai_client_works(fake):
    import openai

    srv = fake()
    client = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0)
    rubric = JudgeRubric(judge_client=client, judge_model="judge")
    assert asyncio.run(_score(rubric, "It is Paris")).reward == 1.0


def test_retries_transient_errors(fake):
    srv = fake(fail_first=2)
    rubric = JudgeRubric(judge_base_url=srv.url, judge_model="judge", max_retries=2, retry_base_s=0.01)
    s = asyncio.run(_score(rubric, "Paris"))
    assert s.reward == 1.0 and not s.errors and len(srv.prompts) == 3


def test_outage_is_a_counted_error_not_a_crash():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    rubric = JudgeRubric(judge_base_url=f"http://127.0.0.1:{port}/v1", judge_model="judge", max_retries=1,
                         retry_base_s=0.01, timeout_s=2)

    async def run():
        return await asyncio.gather(*(_score(rubric, f"Paris {i}") for i in range(3)))

    scores = asyncio.run(run())
    assert [s.reward for s in scores] == [0.0] * 3
    assert all("judge_reward" in s.errors and "failed after 2 attempt(s)" in s.errors["judge_reward"] for s in scores)
    assert rubric.failures == 3 and rubric.requests == 6
