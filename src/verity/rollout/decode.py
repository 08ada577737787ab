"""The decode loop of :class:`~verity.rollout.hf_sampler.HFSampler`, free of per-token host syncs.

Everything a decode step decides is decided on the device: the uniforms of inverse-CDF sampling
are drawn for the whole batch before the loop (:class:`Uniforms`, on the device's generator),
finished rows are tracked in device tensors indexed by row number (no boolean indexing), and
the host looks at the batch only every ``check_every`` tokens: to stop when every row has
finished and to drop finished rows and their KV cache (compaction). Between two checks a
step launches its kernels without waiting for the device, so a GPU is never idle on the host.

On a CPU there is no device to wait for, so the default there is a check every token: finished
rows leave the batch at once (the cheapest schedule for CPU compute) and the outputs are the
same as those of the loop before the sync-free rewrite (``tests/data/decode_golden.json``).
Any ``check_every`` samples the same tokens for the same seed: the uniforms a row gets do not
depend on when finished rows leave the batch (see :class:`Uniforms`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from verity.types import FinishReason, SamplingArgs

#: Temperatures below this sample greedily (logits / 1e-100 would overflow to inf, then NaN).
GREEDY_BELOW = 1e-4
#: Tokens between two host checks of the batch on an accelerator (stop + compaction).
CHECK_EVERY_ACCELERATOR = 16


class Uniforms:
    """The uniforms a decode loop consumes, drawn before the loop on the decode device.

    With one generator for the batch, the loop before the rewrite drew, at step ``t``, one
    uniform per row of the (compacted) batch, in row order, and compacted whenever at most 3/4 of
    the rows were still live. This class replays that schedule on the device (``inb``: the rows
    that schedule keeps, ``off``: uniforms consumed so far) over one flat draw of ``B · T``
    uniforms, so the numbers a row gets are the same whatever the physical batch is; the
    generator is then advanced by exactly the number consumed (:meth:`finish`). With one
    generator per row, row ``r`` takes the ``t``-th uniform of its own generator at step ``t``.
    """

    def __init__(self, gen: Any, B: int, T: int, device: Any, replay: bool = True):
        import torch

        self.per_row = isinstance(gen, list)
        self.gen = gen
        #: False when the physical batch follows the old schedule itself (a host check every token):
        #: the uniforms are then taken in order, counted on the host, with no replay on the device.
        self.replay = replay
        self.hoff = 0
        if self.per_row:
            self.u = torch.stack([torch.rand(T, generator=g, device=g.device) for g in gen]).to(device)  # [B, T]
        else:
            self.state = gen.get_state()
            self.u = torch.rand(B * T, generator=gen, device=gen.device).to(device)  # flat
            self.inb = torch.ones(B, dtype=torch.bool, device=device)
            self.off = torch.zeros((), dtype=torch.long, device=device)

    def take(self, t: int, rows: Any, col: Any = None) -> Any:
        """The uniforms [b] of the physical rows ``rows`` (original row numbers) at step ``t``
        (per-row generators: at each row's own step ``col`` [b] when rows joined late)."""
        if self.per_row:
            if col is None:
                return self.u[:, t].index_select(0, rows)
            return self.u.index_select(0, rows).gather(1, col.clamp(max=self.u.shape[1] - 1)[:, None]).squeeze(1)
        if not self.replay:
            b = rows.shape[0]
            self.hoff += b
            return self.u[self.hoff - b:self.hoff]
        rank = self.inb.cumsum(0) - 1
        u = self.u.index_select(0, (self.off + rank).clamp_(max=self.u.numel() - 1))
        self.off += self.inb.sum()
        return u.index_select(0, rows)

    def extend(self, gens: list[Any]) -> None:
        """Rows that joined the batch, with their own generators (after the existing rows)."""
        import torch

        if not self.per_row:
            raise ValueError("rows can join a batch only when every row has its own generator")
        T = self.u.shape[1]
        new = torch.stack([torch.rand(T, generator=g, device=g.device) for g in gens]).to(self.u.device)
        self.u = torch.cat([self.u, new])

    def after_step(self, live: Any) -> None:
        """Replay the old compaction rule: keep only live rows once at most 3/4 of the batch is live."""
        if not self.per_row and self.replay:
            import torch

            drop = live.sum() * 4 <= self.inb.sum() * 3
            self.inb = torch.where(drop, live, self.inb)

    def finish(self) -> None:
        """Leave the shared generator where drawing only the consumed uniforms would have left it."""
        if not self.per_row:
            import torch

            used = int(self.off) if self.replay else self.hoff
            self.gen.set_state(self.state)
            if used:
                torch.rand(used, generator=self.gen, device=self.gen.device)


@dataclasses.dataclass
class Rows:
    """Per-row outputs in the batch's original row order (device tensors)."""

    tokens: Any  # [B, T] long
    logps: Any  # [B, T] float32
    lengths: Any  # [B] long: T until the row samples a stop token
    stopped: Any  # [B] bool
    live: Any  # [B] bool
    top_ids: Any  # [B, T, k]
    top_lps: Any  # [B, T, k]

    def grow(self, other: Rows) -> None:
        """Append ``other``'s rows (rows that joined the batch)."""
        import torch

        for f in dataclasses.fields(self):
            setattr(self, f.name, torch.cat([getattr(self, f.name), getattr(other, f.name)]))


def _rows(B: int, T: int, k: int, pad: int, dev: Any) -> Rows:
    import torch

    return Rows(tokens=torch.full((B, T), pad, dtype=torch.long, device=dev),
                logps=torch.zeros((B, T), dtype=torch.float32, device=dev),
                lengths=torch.full((B,), T, dtype=torch.long, device=dev),
                stopped=torch.zeros(B, dtype=torch.bool, device=dev),
                live=torch.ones(B, dtype=torch.bool, device=dev),
                top_ids=torch.zeros((B, T, k), dtype=torch.long, device=dev),
                top_lps=torch.zeros((B, T, k), dtype=torch.float32, device=dev))


class _Batch:
    """The physical batch: original row numbers, step each row joined at, per-row histories."""

    def __init__(self, B: int, T: int, k: int, pad: int, dev: Any):
        import torch

        self.rows = torch.arange(B, device=dev)
        self.start = torch.zeros(B, dtype=torch.long, device=dev)
        self.joined = False  # any row joined after step 0 (histories are then written per row)
        self.b, self.T, self.k, self.pad, self.dev = B, T, k, pad, dev
        # one column past T: where rows that ended at their T-th token write until they leave the batch
        self.tok = torch.full((B, T + 1), pad, dtype=torch.long, device=dev)
        self.lp = torch.zeros((B, T + 1), device=dev)
        self.top = (torch.zeros((B, T + 1, k), dtype=torch.long, device=dev), torch.zeros((B, T + 1, k), device=dev))

    def record(self, t: int, tok: Any, lp: Any, top: Any) -> Any:
        """Write step ``t``'s samples into the histories; the column of each row ([b], or None = t)."""
        if not self.joined:
            self.tok[:, t], self.lp[:, t] = tok, lp
            if top is not None:
                self.top[1][:, t], self.top[0][:, t] = top
            return None
        col = (t - self.start).clamp_(max=self.T)
        self.tok.scatter_(1, col[:, None], tok[:, None])
        self.lp.scatter_(1, col[:, None], lp[:, None])
        if top is not None:
            idx = col[:, None, None].expand(-1, 1, self.k)
            self.top[1].scatter_(1, idx, top[0][:, None])
            self.top[0].scatter_(1, idx, top[1][:, None])
        return col

    def flush(self, out: Rows) -> None:  # physical histories -> original rows
        T = self.T
        out.tokens[self.rows], out.logps[self.rows] = self.tok[:, :T], self.lp[:, :T]
        if self.k:
            out.top_ids[self.rows], out.top_lps[self.rows] = self.top[0][:, :T], self.top[1][:, :T]

    def keep(self, keep: Any, n: int) -> None:
        self.rows, self.start, self.b = self.rows[keep], self.start[keep], n
        self.tok, self.lp = self.tok[keep], self.lp[keep]
        self.top = self.top[0][keep], self.top[1][keep]

    def add(self, first: int, a: int, t: int) -> None:
        """Rows ``first .. first + a - 1`` join; they sample their first token at step ``t``."""
        import torch

        new = _Batch(a, self.T, self.k, self.pad, self.dev)
        self.rows = torch.cat([self.rows, new.rows + first])
        self.start = torch.cat([self.start, torch.full((a,), t, dtype=torch.long, device=self.dev)])
        self.tok, self.lp = torch.cat([self.tok, new.tok]), torch.cat([self.lp, new.lp])
        self.top = torch.cat([self.top[0], new.top[0]]), torch.cat([self.top[1], new.top[1]])
        self.b += a
        self.joined = True


def decode_loop(step: Any, logits: Any, B: int, args: SamplingArgs, gen: Any, eos: Any, pad: int,
                check_every: int, compact: Any, admit: Any = None, on_tokens: Any = None) -> Rows:
    """Sample up to ``args.max_tokens`` tokens for each of ``B`` rows from the prefill's last ``logits`` [B, V].

    ``step(tok [b])`` runs the model on the new tokens of the physical rows and returns the next
    logits [b, V]; ``compact(keep [b'])`` drops the other physical rows from the model's state (KV
    cache, mask, positions). Between host checks (every ``check_every`` tokens) nothing reads a
    device value on the host. Continuous batching: ``admit(live_rows)``, called after the step that
    follows a check, returns None or ``(logits [a, V], generators)`` of rows that join the batch
    now (rows B, B+1, ... in that order; ``gen`` must then be a list, one generator per row, or the
    decoding greedy). ``on_tokens(rows, tok, done)`` sees each step's tokens (device tensors).
    """
    import torch

    T, k, dev = args.max_tokens, args.top_logprobs, logits.device
    out = _rows(B, T, k, pad, dev)
    greedy = args.temperature < GREEDY_BELOW
    uni = None if greedy else Uniforms(gen, B, T, dev, replay=check_every != 1 or admit is not None)
    batch = _Batch(B, T, k, pad, dev)
    last, t, admit_now = T - 1, 0, False  # last: the step the last row to join must stop at
    while True:
        lg = logits.float()
        rows = batch.rows
        u = None if uni is None else uni.take(t, rows, None if not batch.joined else t - batch.start)
        tok, lp = sample(lg, args.temperature, args.top_p, u)
        top = policy_logprobs(lg, args.temperature).topk(k, dim=-1) if k else None
        col = batch.record(t, tok, lp, top)
        was = out.live.index_select(0, rows)
        done = was & torch.isin(tok, eos)
        out.lengths[rows] = torch.where(done, (t if col is None else col) + 1, out.lengths.index_select(0, rows))
        out.stopped[rows] = out.stopped.index_select(0, rows) | done
        ended = done if col is None else done | (col == T - 1)
        out.live[rows] = was & ~ended
        if uni is not None:
            uni.after_step(out.live)
        if on_tokens is not None:
            on_tokens(rows, tok, was)
        if t == last and not admit_now:
            break
        if (t + 1) % check_every == 0:  # the host looks: the only device reads of the loop
            live_now = out.live.index_select(0, rows)
            n = int(live_now.sum())
            if n == 0 and admit is None:
                break
            if n <= 0.75 * batch.b:  # compaction: drop finished rows and their KV
                batch.flush(out)
                keep = torch.nonzero(live_now).squeeze(-1)
                tok = tok[keep]
                batch.keep(keep, n)
                compact(keep)
            admit_now = admit is not None
        if batch.b:
            logits = step(tok)
        if admit_now and admit is not None:
            admit_now = False
            joined = admit(batch.b)
            if joined is not None:
                new_logits, gens = joined
                a = new_logits.shape[0]
                batch.flush(out)
                batch.add(B, a, t + 1)
                out.grow(_rows(a, T, k, pad, dev))
                if uni is not None:
                    uni.extend(gens)
                logits = new_logits if not batch.b - a else torch.cat([logits, new_logits])
                B, last = B + a, max(last, t + T)
            elif batch.b == 0 or t >= last:
                break
        t += 1
    batch.flush(out)
    if uni is not None:
        uni.finish()
    return out


def results(out: Rows, k: int) -> list[tuple[list[int], list[float], tuple[Any, ...], FinishReason]]:
    """(token ids, log-probs, top log-probs, finish reason) per row, on the host."""
    tokens, logps, lengths, stopped = out.tokens.cpu(), out.logps.cpu(), out.lengths.tolist(), out.stopped.tolist()
    top_ids, top_lps = (out.top_ids.cpu(), out.top_lps.cpu()) if k else (None, None)
    res = []
    for b, n in enumerate(lengths):
        ids, lps = tokens[b, :n].tolist(), logps[b, :n].tolist()
        top: tuple[Any, ...] = ()
        if top_ids is not None and top_lps is not None:
            top = tuple(tuple(zip(i, lp, strict=True)) for i, lp in
                        zip(top_ids[b, :n].tolist(), top_lps[b, :n].tolist(), strict=True))
        res.append((ids, lps, top, "stop" if stopped[b] else "length"))
    return res


def policy_logprobs(logits: Any, temperature: float) -> Any:
    """log softmax(logits / T) [B, V]; greedy (T ~ 0) reports the model's own softmax(logits)."""
    import torch

    return torch.log_softmax(logits if temperature < GREEDY_BELOW else logits / temperature, dim=-1)


def sample(logits: Any, temperature: float, top_p: float, u: Any) -> tuple[Any, Any]:
    """Sample one token per row; return (token [B], log-prob under the tempered policy [B]).

    ``u`` holds one uniform in [0, 1) per row (unused when greedy). Greedy rows report the model's log-prob.
    """
    logp = policy_logprobs(logits, temperature)  # [B, V]
    if temperature < GREEDY_BELOW:
        tok = logits.argmax(-1)
        return tok, logp.gather(-1, tok[:, None]).squeeze(-1)
    probs = logp.exp()
    if top_p < 1.0:
        sp, si = probs.sort(dim=-1, descending=True)
        keep = sp.cumsum(-1) - sp < top_p
        tok = si.gather(-1, inverse_cdf(sp * keep, u)[:, None]).squeeze(-1)
    else:
        tok = inverse_cdf(probs, u)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


def inverse_cdf(weights: Any, u: Any) -> Any:
    """One categorical draw per row of ``weights`` [B, V] (unnormalised, >= 0) from uniforms ``u`` [B] → [B].

    Row ``b`` draws the smallest ``i`` with ``u_b · Σ_j w_bj < Σ_{j<=i} w_bj``. Inverse-CDF sampling needs
    B uniforms where ``torch.multinomial`` draws B·V exponentials (~4 ms a step for 64 × 4096 on a
    CPU), and it reads no device value on the host. Zero-weight entries have empty intervals and are
    never drawn.
    """
    import torch

    cdf = weights.float().cumsum(-1)  # [B, V]
    x = u[:, None] * cdf[:, -1:]  # [B, 1] in [0, total)
    return torch.searchsorted(cdf, x, right=True).clamp_(max=cdf.shape[1] - 1).squeeze(-1)
