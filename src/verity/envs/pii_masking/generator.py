"""Deterministic synthetic data for the PII-masking environment.

Each row asks the model to rewrite a short text with every piece of personal data replaced by
the literal token ``[PII]``. Rows follow the schema of the public HF dataset
``AdamLucek/open-pii-masking-en-us-30k``::

    {"question": <text with PII>, "answer": <same text, each PII span -> "[PII]">,
     "info": {"pii_count": <number of "[PII]" in answer>}, "task": "privacy_masking"}

What counts as PII (masked) -- identifiers of a private individual:
  person names (first, last or full, of anyone: customers, patients, agents, doctors),
  email addresses, usernames/handles, phone numbers, street addresses, city names, ZIP codes,
  calendar dates (birth dates and every other specific date), SSNs, card numbers and
  card last-four digits, bank account numbers and IBANs, IP addresses, passport and
  driver-license numbers, employee/patient/student/member IDs, insurance policy numbers and
  license plates.
What is NOT PII (kept verbatim) -- non-personal numbers and words:
  order, ticket, case, claim, invoice, tracking and listing references (they identify a
  record, not a person), amounts, quantities, percentages, times of day, weekdays, durations,
  room/floor/gate/seat numbers, flight numbers, version numbers, error codes, company,
  hospital and product names, job titles, honorifics (Mr./Ms./Dr.) and generic places such as
  "the front desk".
Span rule: one PII value is one ``[PII]`` -- a full name, a full postal address
("12 Oak St, Austin, TX 78701") and a date are single spans; labels, titles and punctuation
around a value stay unmasked.

Rows are built from segments (plain text or :class:`Pii`), so the answer is exactly the
question with each PII value replaced, and ``pii_count == answer.count("[PII]")`` always.
Row ``i`` depends only on ``(seed, i)`` and on earlier rows (for de-duplication), so a
prefix of a larger set equals a smaller set. Names and address parts come from Faker's
``en_US`` word lists, sampled with our own seeded ``random.Random`` (much faster than
calling Faker per value).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from functools import cache, lru_cache
from itertools import accumulate
from typing import Any

from verity.envs.pii_masking import templates as T

PII_TOKEN = "[PII]"
TASK = "privacy_masking"
PII_FIELDS = frozenset({
    "name", "first", "last", "email", "username", "phone", "dob", "date", "address", "street", "city",
    "zip", "ssn", "card", "cardlast", "iban", "acct", "ip", "passport", "dl", "empid", "patid", "studid",
    "memberid", "policy", "plate",
})


class Pii(str):
    """A text segment that is personal data (masked as ``[PII]`` in the answer); ``kind`` is its
    field (``"email"``, ``"dob"``, ...), empty when built by hand."""

    kind: str

    def __new__(cls, value: str, kind: str = "") -> Pii:
        obj = super().__new__(cls, value)
        obj.kind = kind
        return obj


def mask(segments: list[str]) -> tuple[str, str, int]:
    """Join segments into ``(question, answer, pii_count)``; :class:`Pii` segments are masked."""
    q_parts, a_parts, count = [], [], 0
    for seg in segments:
        q_parts.append(str(seg))
        if isinstance(seg, Pii):
            a_parts.append(PII_TOKEN)
            count += 1
        else:
            a_parts.append(seg)
    return "".join(q_parts), "".join(a_parts), count


def check_kinds(kinds: Iterable[str]) -> None:
    """Raise ``ValueError`` naming any kind that is not a PII field (e.g. ``"order"``)."""
    unknown = sorted(set(kinds) - PII_FIELDS)
    if unknown:
        raise ValueError(f"unknown PII kind(s) {unknown}; known: {sorted(PII_FIELDS)}")


def weak_label(segments: list[str], miss_rate: Mapping[str, float], rng: random.Random) -> list[str]:
    """The segments as an incomplete labeller would annotate them: each :class:`Pii` whose
    ``kind`` is in ``miss_rate`` is left unmasked (turned into plain text) with that probability.

    For building weakly supervised SFT data only; rewards and eval always use the gold labels.
    """
    out: list[str] = []
    for seg in segments:
        missed = isinstance(seg, Pii) and seg.kind in miss_rate and rng.random() < miss_rate[seg.kind]
        out.append(str(seg) if missed else seg)
    return out


# --------------------------------------------------------------------------- Faker word lists

@lru_cache(maxsize=1)
def _words() -> dict:
    """Faker en_US names and address words with cumulative weights (loaded once)."""
    from faker.providers.address.en_US import Provider as Addr
    from faker.providers.person.en_US import Provider as Person

    def weighted(od):
        return list(od.keys()), list(accumulate(od.values()))

    return {
        "female": weighted(Person.first_names_female), "male": weighted(Person.first_names_male),
        "last": weighted(Person.last_names), "street_suffix": list(Addr.street_suffixes),
        "city_prefix": list(Addr.city_prefixes), "city_suffix": list(Addr.city_suffixes),
        "states": list(Addr.states_abbr),
    }


def _pick(rng: random.Random, weighted) -> str:
    keys, cum = weighted
    return rng.choices(keys, cum_weights=cum)[0]


def _digits(rng: random.Random, n: int) -> str:
    return str(rng.randrange(10 ** n)).zfill(n)


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choices("ABCDEFGHJKLMNPRSTUVWXYZ", k=n))


def _group(s: str, size: int, sep: str) -> str:
    return sep.join(s[i:i + size] for i in range(0, len(s), size))


# --------------------------------------------------------------------------- row context

class _Ctx:
    """Per-row state: the RNG and cached field values (same key -> same value in one row)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.cache: dict[str, str] = {}
        self.people: dict[str, dict] = {}

    def person(self, idx: str) -> dict:
        if idx not in self.people:
            rng, w = self.rng, _words()
            female = rng.random() < 0.5
            first = _pick(rng, w["female" if female else "male"])
            last = _pick(rng, w["last"])
            self.people[idx] = {"first": first, "last": last, "female": female,
                                "middle": rng.choice("ABCDEFGHJKLMNPRSTW")}
        return self.people[idx]

    def get(self, key: str) -> str:
        if key not in self.cache:
            base = key.rstrip("0123456789")
            idx = key[len(base):] or "1"
            try:
                fn = _FIELDS[base]
            except KeyError:
                raise KeyError(f"unknown template field {key!r}") from None
            value = fn(self, idx)
            self.cache[key] = Pii(value, base) if base in PII_FIELDS else value
        return self.cache[key]


def _full_name(c: _Ctx, idx: str) -> str:
    p, r = c.person(idx), c.rng.random()
    if r < 0.12:
        return f"{p['first']} {p['middle']}. {p['last']}"
    return f"{p['first']} {p['last']}"


def _email(c: _Ctx, idx: str) -> str:
    p, rng = c.person(idx), c.rng
    f, last = p["first"].lower(), p["last"].lower().replace("'", "").replace(" ", "")
    local = rng.choice([f"{f}.{last}", f"{f[0]}{last}", f"{f}{last[0]}{rng.randint(1, 99)}", f"{f}_{last}",
                        f"{last}.{f[0]}", f"{f}{rng.randint(60, 99)}"])
    domain = rng.choice(["gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com",
                         "proton.me", "aol.com", "mail.com"])
    return f"{local}@{domain}"


def _username(c: _Ctx, idx: str) -> str:
    p, rng = c.person(idx), c.rng
    f, last = p["first"].lower(), p["last"].lower().replace("'", "")
    return rng.choice([f"{f}{last[0]}{rng.randint(1, 999)}", f"{f[0]}{last}", f"{f}_{last}",
                       f"{last}{f[0]}{rng.randint(1, 99)}", f"{f}.{last[:3]}", f"the_{f}{rng.randint(1, 99)}"])


def _phone(c: _Ctx, idx: str) -> str:
    rng = c.rng
    a, e, n = rng.randint(201, 989), rng.randint(200, 999), _digits(rng, 4)
    fmt = rng.choice(["({a}) {e}-{n}", "{a}-{e}-{n}", "{a}.{e}.{n}", "+1 {a} {e} {n}", "+1-{a}-{e}-{n}",
                      "{a}{e}{n}", "({a}) {e}-{n}"])
    return fmt.format(a=a, e=e, n=n)


def _date(c: _Ctx, lo: int, hi: int) -> str:
    rng = c.rng
    y, m, d = rng.randint(lo, hi), rng.randint(1, 12), rng.randint(1, 28)
    mon = T.MONTHS[m - 1]
    return rng.choice([f"{m:02d}/{d:02d}/{y}", f"{y}-{m:02d}-{d:02d}", f"{mon} {d}, {y}", f"{mon[:3]} {d}, {y}",
                       f"{d} {mon} {y}", f"{m}/{d}/{y % 100:02d}", f"{m}/{d}/{y}"])


def _street(c: _Ctx, idx: str) -> str:
    rng, w = c.rng, _words()
    num = rng.choice([str(rng.randint(1, 999)), str(rng.randint(100, 9999)), str(rng.randint(1000, 99999))])
    word = _pick(rng, w["last"]) if rng.random() < 0.6 else _pick(rng, w["female" if rng.random() < 0.5 else "male"])
    s = f"{num} {word} {rng.choice(w['street_suffix'])}"
    if rng.random() < 0.25:
        s += f" {rng.choice(['Apt.', 'Apt', 'Suite', 'Unit'])} {rng.randint(1, 999)}"
    return s


def _city(c: _Ctx, idx: str) -> str:
    rng, w = c.rng, _words()
    r = rng.random()
    if r < 0.4:
        return rng.choice(T.REAL_CITIES)
    name = _pick(rng, w["last"] if r < 0.6 else w["female"])
    if r < 0.8:
        return f"{name}{rng.choice(w['city_suffix'])}"
    return f"{rng.choice(w['city_prefix'])} {name}"


def _address(c: _Ctx, idx: str) -> str:
    rng = c.rng
    street = _street(c, idx)
    sep = ", " if street[-1].isdigit() or rng.random() < 0.7 else " "
    return f"{street}{sep}{_city(c, idx)}, {rng.choice(_words()['states'])} {_digits(rng, 5)}"


def _card(c: _Ctx, idx: str) -> str:
    rng = c.rng
    if rng.random() < 0.15:
        return "3" + rng.choice("47") + _digits(rng, 13)
    raw = rng.choice("45") + _digits(rng, 15)
    return _group(raw, 4, rng.choice([" ", "-", ""]))


def _iban(c: _Ctx, idx: str) -> str:
    rng = c.rng
    cc = rng.choice(T.IBAN_COUNTRIES)
    body = _letters(rng, 4) + _digits(rng, 14) if cc in ("GB", "NL", "IE") else _digits(rng, rng.choice([18, 20, 22]))
    raw = cc + _digits(rng, 2) + body
    return _group(raw, 4, " ") if rng.random() < 0.6 else raw


def _ip(c: _Ctx, idx: str) -> str:
    rng = c.rng
    r = rng.random()
    if r < 0.2:
        return f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if r < 0.3:
        return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    octets = (rng.randint(11, 223), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))
    return ".".join(str(x) for x in octets)


def _time(c: _Ctx, idx: str) -> str:
    rng = c.rng
    h, m = rng.randint(1, 12), rng.choice([0, 15, 30, 45, 5, 10, 20, 40, 50])
    r = rng.random()
    if r < 0.5:
        return f"{h}:{m:02d} {rng.choice(['AM', 'PM'])}"
    if r < 0.7:
        return f"{h} {rng.choice(['AM', 'PM', 'am', 'pm'])}"
    return f"{rng.randint(7, 20):02d}:{m:02d}"


def _amount(c: _Ctx, idx: str) -> str:
    rng = c.rng
    r = rng.random()
    if r < 0.5:
        return f"${rng.randint(1, 999)}.{rng.randint(0, 99):02d}"
    if r < 0.8:
        return f"${rng.randint(1, 200) * 5:,}"
    return f"${rng.randint(1000, 99999):,}.{rng.randint(0, 99):02d}"


def _pct(c: _Ctx, idx: str) -> str:
    rng = c.rng
    return f"{rng.randint(1, 99)}%" if rng.random() < 0.6 else f"{rng.randint(0, 20)}.{rng.randint(1, 9)}%"


def _ref(prefixes: list[str], lo: int, hi: int):
    def gen(c: _Ctx, idx: str) -> str:
        return c.rng.choice(prefixes) + _digits(c.rng, c.rng.randint(lo, hi))
    return gen


def _choice(options: list[str]):
    return lambda c, idx: c.rng.choice(options)


def _int(lo: int, hi: int):
    return lambda c, idx: str(c.rng.randint(lo, hi))


_FIELDS = {
    # PII
    "name": _full_name,
    "first": lambda c, i: c.person(i)["first"],
    "last": lambda c, i: c.person(i)["last"],
    "email": _email, "username": _username, "phone": _phone, "street": _street, "city": _city,
    "address": _address, "card": _card, "iban": _iban, "ip": _ip,
    "dob": lambda c, i: _date(c, 1940, 2008),
    "date": lambda c, i: _date(c, 2018, 2027),
    "zip": lambda c, i: _digits(c.rng, 5) if c.rng.random() < 0.85 else f"{_digits(c.rng, 5)}-{_digits(c.rng, 4)}",
    "ssn": lambda c, i: (lambda s: f"{s[:3]}-{s[3:5]}-{s[5:]}" if c.rng.random() < 0.85 else s)(
        str(c.rng.randint(1, 665)).zfill(3) + _digits(c.rng, 6)),
    "cardlast": lambda c, i: _digits(c.rng, 4),
    "acct": lambda c, i: _digits(c.rng, c.rng.randint(8, 12)) if c.rng.random() < 0.7
    else f"{_digits(c.rng, 4)}-{_digits(c.rng, 4)}-{_digits(c.rng, 2)}",
    "passport": lambda c, i: _digits(c.rng, 9) if c.rng.random() < 0.5 else _letters(c.rng, 1) + _digits(c.rng, 8),
    "dl": lambda c, i: c.rng.choice([
        _letters(c.rng, 1) + _digits(c.rng, 7), _digits(c.rng, 9),
        f"{_letters(c.rng, 1)}{_digits(c.rng, 3)}-{_digits(c.rng, 4)}-{_digits(c.rng, 4)}"]),
    "empid": _ref(["EMP-", "E", "", "EMP"], 5, 6),
    "patid": _ref(["MRN-", "P", "", "PT-"], 7, 8),
    "studid": _ref(["S", "STU-", ""], 7, 9),
    "memberid": lambda c, i: _letters(c.rng, 3) + _digits(c.rng, 9) if c.rng.random() < 0.5
    else "M-" + _digits(c.rng, 8),
    "policy": lambda c, i: c.rng.choice(["POL-", "HO-", "AU-", ""]) + _digits(c.rng, 8),
    "plate": lambda c, i: c.rng.choice([f"{c.rng.randint(1, 9)}{_letters(c.rng, 3)}{_digits(c.rng, 3)}",
                                       f"{_letters(c.rng, 3)}-{_digits(c.rng, 4)}",
                                       f"{c.rng.randint(1, 9)}{_letters(c.rng, 2)} {_digits(c.rng, 3)}"]),
    # distractors (never masked)
    "title": lambda c, i: c.rng.choice(["Ms.", "Mrs."]) if c.person(i)["female"] else "Mr.",
    "order": _ref(["#", "ORD-", "", "#"], 5, 7), "ticket": _ref(["TCK-", "#", "T-"], 5, 6),
    "invoice": _ref(["INV-", "INV", "#"], 4, 6), "case": _ref(["CASE-", "#", "CV-"], 5, 6),
    "claim": _ref(["CLM-", "CL"], 6, 8), "tracking": _ref(["1Z", "TRK", "94001"], 10, 14),
    "listing": _ref(["L-", "#", "MLS "], 5, 7), "orderno": _ref([""], 5, 7), "asset": _ref(["LT-", "IT-"], 4, 5),
    "jobid": lambda c, i: f"{c.rng.getrandbits(32):08x}",
    "amount": _amount, "pct": _pct, "time": _time,
    "ltime": lambda c, i: f"{c.rng.randint(0, 23):02d}:{c.rng.randint(0, 59):02d}:{c.rng.randint(0, 59):02d}",
    "weekday": _choice(T.WEEKDAYS), "company": _choice(T.COMPANIES), "hospital": _choice(T.HOSPITALS),
    "product": _choice(T.PRODUCTS), "jobtitle": _choice(T.JOBTITLES), "team": _choice(T.TEAMS),
    "plan": _choice(T.PLANS), "errcode": _choice(T.ERRCODES), "grade": _choice(T.GRADES), "dur": _choice(T.DURATIONS),
    "version": lambda c, i: f"{c.rng.randint(1, 12)}.{c.rng.randint(0, 20)}.{c.rng.randint(0, 9)}",
    "flight": lambda c, i: f"{c.rng.choice(T.AIRLINES)} {c.rng.randint(10, 2999)}",
    "seat": lambda c, i: f"{c.rng.randint(1, 40)}{c.rng.choice('ABCDEF')}",
    "gate": lambda c, i: f"{c.rng.choice('ABCDE')}{c.rng.randint(1, 40)}",
    "room": lambda c, i: str(c.rng.randint(101, 950)) if c.rng.random() < 0.7
    else f"{c.rng.choice('ABC')}{c.rng.randint(1, 30)}",
    "lot": lambda c, i: c.rng.choice("ABCDEFGH") + ("" if c.rng.random() < 0.5 else str(c.rng.randint(1, 9))),
    "weight": lambda c, i: f"{c.rng.randint(0, 60)}.{c.rng.randint(0, 9)}",
    "qty": _int(1, 12), "count": _int(2, 30), "days": _int(2, 30), "weeks": _int(2, 12), "mins": _int(5, 30),
    "hours": _int(4, 40), "nights": _int(1, 14), "floor": _int(2, 20), "dose": _choice(["5", "10", "20", "250", "500"]),
    "beds": _int(1, 5), "baths": _int(1, 4), "major": _int(1, 3), "status": _choice(["200", "201", "404", "500"]),
    "ms": _int(3, 4000), "freq": _choice(["4", "6", "8", "12", "24"]),
}


# --------------------------------------------------------------------------- template parsing

def _parse_seq(s: str, i: int, closers: str) -> tuple[list, int]:
    """Parse ``s[i:]`` up to one of ``closers``; nodes are str, ("f", key), ("a", alts), ("o", seq)."""
    seq: list = []
    buf: list[str] = []
    while i < len(s) and s[i] not in closers:
        ch = s[i]
        if ch in "{<[":
            if buf:
                seq.append("".join(buf))
                buf = []
            if ch == "{":
                j = s.index("}", i)
                seq.append(("f", s[i + 1:j]))
                i = j + 1
            elif ch == "[":
                sub, i = _parse_seq(s, i + 1, "]")
                seq.append(("o", sub))
                i += 1
            else:
                alts, i = [], i + 1
                while True:
                    sub, i = _parse_seq(s, i, "|>")
                    alts.append(sub)
                    i += 1
                    if s[i - 1] == ">":
                        break
                seq.append(("a", alts))
        else:
            buf.append(ch)
            i += 1
    if buf:
        seq.append("".join(buf))
    return seq, i


@cache
def _parsed(template: str) -> list:
    seq, i = _parse_seq(template, 0, "")
    assert i == len(template), f"unbalanced template: {template!r}"
    return seq


def _expand(seq: list, ctx: _Ctx, out: list[str]) -> None:
    for node in seq:
        if isinstance(node, str):
            out.append(node)
        elif node[0] == "f":
            out.append(ctx.get(node[1]))
        elif node[0] == "a":
            _expand(ctx.rng.choice(node[1]), ctx, out)
        elif ctx.rng.random() < 0.5:
            _expand(node[1], ctx, out)


def _sentence_segments(template: str, ctx: _Ctx) -> list[str]:
    out: list[str] = []
    _expand(_parsed(template), ctx, out)
    return out


def _form_segments(header: str, lines: list[str], ctx: _Ctx) -> list[str]:
    rng = ctx.rng
    keep = [ln for ln in lines if rng.random() < 0.75]
    while len(keep) < 3:
        keep = rng.sample(lines, 3)
    if rng.random() < 0.5:
        rng.shuffle(keep)
    joiner = rng.choice(["\n", "\n", "\n", "; ", " | "])
    out: list[str] = []
    if rng.random() < 0.7:
        _expand(_parsed(header), ctx, out)
        out.append("\n" if joiner == "\n" else ": ")
    for k, line in enumerate(keep):
        if k:
            out.append(joiner)
        _expand(_parsed(line), ctx, out)
    return out


# --------------------------------------------------------------------------- public API

@lru_cache(maxsize=1)
def _registry() -> tuple[list[str], list, list[float]]:
    names, specs, weights = [], [], []
    for name, tpl, w in T.SENTENCES:
        names.append(name)
        specs.append(("s", tpl))
        weights.append(w)
    for name, header, lines, w in T.FORMS:
        names.append(name)
        specs.append(("f", header, lines))
        weights.append(w)
    assert len(set(names)) == len(names), "duplicate template names"
    return names, specs, list(accumulate(weights))


def template_names() -> list[str]:
    """Names of all templates (sentence templates and forms), in registry order."""
    return list(_registry()[0])


def _render(k: int, rng: random.Random) -> list[str]:
    """Segments for template number ``k`` (index into :func:`template_names`)."""
    names, specs, _ = _registry()
    ctx = _Ctx(rng)
    spec = specs[k]
    if spec[0] == "f":
        return _form_segments(spec[1], spec[2], ctx)
    segs = _sentence_segments(spec[1], ctx)
    if not names[k].startswith(T.NO_WRAP_PREFIXES):
        if rng.random() < 0.15 and not segs[0].startswith(("Re:", "Reminder:")):
            segs.insert(0, rng.choice(T.PREFIXES))
        last = segs[-1]
        if rng.random() < 0.2 and not isinstance(last, Pii) and last.endswith((".", "!", "?")):
            segs.append(rng.choice(T.SUFFIXES))
    return segs


def _make_row(rng: random.Random) -> tuple[str, list[str]]:
    names, _, cum = _registry()
    k = rng.choices(range(len(names)), cum_weights=cum)[0]
    return names[k], _render(k, rng)


def _draw(seed: int, i: int, redraw: int) -> tuple[str, list[str]]:
    """(template name, segments) of draw ``redraw`` for row ``i``."""
    return _make_row(random.Random(f"{seed}-{i}" if redraw == 0 else f"{seed}-{i}-{redraw}"))


def _row(name: str, segs: list[str], seed: int, i: int, with_template: bool,
         miss_rate: Mapping[str, float] | None) -> dict:
    question, answer, count = mask(segs)
    if miss_rate:
        answer = mask(weak_label(segs, miss_rate, random.Random(f"{seed}-{i}-weak")))[1]
    row = {"question": question, "answer": answer, "info": {"pii_count": count}, "task": TASK}
    if with_template:
        row["template"] = name
    return row


def generate_rows(n: int, seed: int = 42, with_template: bool = False,
                  miss_rate: Mapping[str, float] | None = None) -> list[dict]:
    """``n`` distinct, deterministic rows; row ``i`` is the same for every ``n > i``.

    ``with_template=True`` adds a top-level ``"template"`` key (debugging/tests only; it is
    not part of the public schema). ``miss_rate`` (kind -> probability, e.g. ``{"date": 0.8}``)
    makes the *answers* weak labels (:func:`weak_label`): the questions are the same rows as
    without it, and ``info["pii_count"]`` stays the gold count.
    """
    check_kinds(miss_rate or {})
    rows: list[dict] = []
    seen: set[str] = set()
    for i in range(n):
        redraw = 0
        while True:
            name, segs = _draw(seed, i, redraw)
            question = mask(segs)[0]
            if question not in seen:
                break
            redraw += 1
        seen.add(question)
        rows.append(_row(name, segs, seed, i, with_template, miss_rate))
    return rows


# Rows of ``generate_rows(n, seed)`` whose first draw repeats an earlier row's question (they take
# their second draw), for the default seed up to ``n = 30_000``: with it, any row of those sets is
# built on its own, without the pass over all earlier rows that de-duplication otherwise needs.
# tests/test_pii_generator.py recomputes it from generate_rows.
KNOWN_REDRAWS: dict[int, tuple[int, frozenset[int]]] = {42: (30_000, frozenset({
    2490, 3075, 4138, 4857, 5030, 5167, 5318, 6424, 6479, 7229, 7448, 9848, 9939, 10517, 13505, 15187,
    15285, 18352, 19843, 20664, 20868, 21221, 22552, 22687, 24652, 24726, 26970, 27573, 27949, 27964,
    28692, 29726}))}


def row_builder(n: int, seed: int = 42) -> Callable[[int], dict]:
    """``row(i) == generate_rows(n, seed)[i]``: built on its own when ``(seed, n)`` is covered by
    :data:`KNOWN_REDRAWS`, else from one ``generate_rows`` call made on first use."""
    return RowBuilder(n, seed)


class RowBuilder:
    """See :func:`row_builder`. A plain object (no closures), so the environment pickles; the rows
    generated all at once are not pickled but rebuilt on first use."""

    def __init__(self, n: int, seed: int):
        known = KNOWN_REDRAWS.get(seed)
        self.n, self.seed = n, seed
        self.redraws = known[1] if known is not None and n <= known[0] else None
        self._every: list[dict] | None = None

    def __call__(self, i: int) -> dict:
        if self.redraws is not None:
            if not 0 <= i < self.n:
                raise IndexError(f"row {i} of {self.n}")
            return _row(*_draw(self.seed, i, int(i in self.redraws)), self.seed, i, False, None)
        if self._every is None:
            self._every = generate_rows(self.n, seed=self.seed)
        r = self._every[i]
        return {**r, "info": dict(r["info"])}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_every": None}


if __name__ == "__main__":
    for r in generate_rows(5):
        print(r)
