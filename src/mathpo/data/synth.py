"""Synthetic GSM8K-style word problems: mathpo's own generator for the embedded CPU demo.

`mathpo data synth --n 500 --steps 1-4 --seed 0 --split train --output synth-train.jsonl`

Each problem is a short story from one scenario family (shopping, travel, recipes, savings,
classroom, farm, reading). It starts with one quantity; each step is one sentence that applies
one arithmetic operation to the running quantity, worded after that operation ("eats 3 of them" is
a subtraction, "puts them into bags of 4" a division). The reference solution has one line per
step in GSM8K's style, `She has 12 - 3 = <<12-3=9>>9 cookies left.`, and ends with `#### 9`.
Difficulty = number of steps. Numbers stay small (mostly 2-100, results <= 1000) and every
intermediate result is a positive integer (divisions are only offered where they are exact).

Splits: the question text is hashed (sha256); questions whose first hash byte is < 64 (1/4 of
the space) belong to `test`, the rest to `train`. A split keeps only its own questions, so train
and test never share a question, whatever the seeds. Rows are loader records
`{id, question, gold, solution, steps, family}`, read by `mathpo.data.load(FILE)`.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from ..errors import UserError

SPLITS = ("train", "test")
TEST_HASH_BELOW = 64  # first sha256 byte < 64 -> test (a quarter of all questions)
MAX_VALUE = 1000


@dataclass(frozen=True)
class Op:
    sym: str  # + - * /
    q: str  # the question sentence; {b} is the new number
    s: str  # the solution sentence; {expr} becomes "a op b = <<a op b=c>>c"
    ask: str  # the final question when this is the last step
    to: str | None = None  # the unit after this step (None: unchanged)
    b: tuple[int, int] | None = None  # range for b (+ and * only)


@dataclass(frozen=True)
class Start:
    unit: str
    text: str
    a: tuple[int, int] = (2, 60)


P, S, ASK = "{Pr}", "{Name}", "How many"


def _family(starts, units):
    return {"starts": starts, "units": units}


FAMILIES = {
    "shopping": _family(
        [Start("packs", "{Name} buys {a} packs of {item}.", (2, 12)), Start("items", "{Name} has {a} {item}.")],
        {"packs": [
            Op("*", "Each pack has {b} {item}.", "{Pr} has {expr} {item}.", "How many {item} does {name} have?", "items"),
            Op("+", "{Pr} buys {b} more packs.", "{Pr} has {expr} packs.", "How many packs does {name} have now?", None, (2, 9)),
            Op("*", "Each pack costs ${b}.", "The packs cost {expr} dollars.", "How many dollars does {name} spend?", "cost"),
        ], "items": [
            Op("+", "{Pr} gets {b} more {item} from a friend.", "{Pr} has {expr} {item} now.", "How many {item} does {name} have now?"),
            Op("-", "{Pr} gives {b} {item} to {pos} brother.", "{Pr} has {expr} {item} left.", "How many {item} does {name} have left?"),
            Op("/", "{Pr} shares the {item} equally among {b} friends.", "Each friend gets {expr} {item}.", "How many {item} does each friend get?", "share"),
            Op("/", "{Pr} puts the {item} in rows of {b}.", "{Pr} makes {expr} rows.", "How many rows does {name} make?", "rows"),
            Op("*", "{Pr} sells each {item1} for ${b}.", "{Pr} earns {expr} dollars.", "How many dollars does {name} earn?", "money"),
        ], "cost": [
            Op("+", "{Pr} also pays ${b} for a gift bag.", "{Pr} spends {expr} dollars in total.", "How many dollars does {name} spend in total?"),
            Op("-", "{Pr} uses a coupon for ${b} off.", "{Pr} pays {expr} dollars.", "How many dollars does {name} pay?"),
            Op("/", "{Pr} splits the cost equally with friends, {b} people in all.", "Each person pays {expr} dollars.", "How many dollars does each person pay?", "share"),
        ], "rows": [
            Op("+", "{Pr} adds {b} more rows.", "There are {expr} rows.", "How many rows are there now?"),
        ], "money": [
            Op("-", "{Pr} spends ${b} on lunch.", "{Pr} has {expr} dollars left.", "How many dollars does {name} have left?"),
            Op("+", "{Pos} mom gives {obj} ${b} more.", "{Pr} has {expr} dollars.", "How many dollars does {name} have now?"),
        ], "share": []}),
    "travel": _family(
        [Start("passengers", "{Name} drives a bus that leaves the station with {a} passengers.", (10, 60)),
         Start("hours", "{Name} drives for {a} hours.", (2, 6))],
        {"passengers": [
            Op("-", "At the first stop, {b} passengers get off.", "{expr} passengers are left on the bus.", "How many passengers are on the bus now?"),
            Op("+", "Then {b} people get on.", "There are {expr} passengers on the bus.", "How many passengers are on the bus now?"),
            Op("*", "Each passenger pays ${b} for a ticket.", "The passengers pay {expr} dollars.", "How many dollars do the passengers pay in total?", "fares"),
            Op("/", "The passengers sit in rows of {b}.", "They fill {expr} rows.", "How many rows do they fill?", "seats"),
        ], "hours": [
            Op("*", "{Pr} drives {b} miles each hour.", "{Pr} drives {expr} miles.", "How many miles does {name} drive?", "miles", (20, 60)),
            Op("+", "The next day {pr} drives {b} more hours.", "{Pr} drives for {expr} hours in all.", "How many hours does {name} drive in all?", None, (2, 5)),
        ], "miles": [
            Op("+", "Then {pr} drives {b} more miles to a hotel.", "{Pr} drives {expr} miles in total.", "How many miles does {name} drive in total?"),
            Op("-", "{Pr} stops for lunch after {b} miles.", "{Pr} drives {expr} miles after lunch.", "How many miles does {name} drive after lunch?"),
            Op("/", "The car uses one liter of fuel every {b} miles.", "The car uses {expr} liters of fuel.", "How many liters of fuel does the car use?", "fuel"),
        ], "fuel": [
            Op("*", "Fuel costs ${b} per liter.", "The fuel costs {expr} dollars.", "How many dollars does the fuel cost?", "fares"),
        ], "fares": [
            Op("-", "The driver spends ${b} on snacks.", "{expr} dollars are left.", "How many dollars are left?"),
            Op("/", "The money is shared equally among {b} drivers.", "Each driver gets {expr} dollars.", "How many dollars does each driver get?", "share"),
        ], "seats": [], "share": []}),
    "recipes": _family(
        [Start("trays", "{Name} bakes {a} trays of cookies.", (2, 9)),
         Start("percake", "{Name}'s cake recipe needs {a} cups of flour.", (2, 6))],
        {"trays": [
            Op("*", "Each tray holds {b} cookies.", "{Pr} bakes {expr} cookies.", "How many cookies does {name} bake?", "cookies", (4, 12)),
            Op("+", "Then {pr} bakes {b} more trays.", "{Pr} bakes {expr} trays.", "How many trays does {name} bake?", None, (2, 6)),
        ], "cookies": [
            Op("-", "{Pr} eats {b} of the cookies.", "{Pr} has {expr} cookies left.", "How many cookies are left?"),
            Op("+", "{Pos} friend brings {b} more cookies.", "They have {expr} cookies.", "How many cookies do they have now?"),
            Op("/", "{Pr} puts the cookies into bags of {b}.", "{Pr} fills {expr} bags.", "How many bags does {name} fill?", "bags"),
            Op("/", "{Pr} shares the cookies equally among {b} classmates.", "Each classmate gets {expr} cookies.", "How many cookies does each classmate get?", "share"),
        ], "bags": [
            Op("*", "{Pr} sells each bag for ${b}.", "{Pr} earns {expr} dollars.", "How many dollars does {name} earn?", "money"),
            Op("-", "{Pr} gives {b} bags to {pos} neighbors.", "{Pr} has {expr} bags left.", "How many bags are left?"),
        ], "percake": [
            Op("*", "{Pr} bakes {b} cakes.", "{Pr} needs {expr} cups of flour.", "How many cups of flour does {name} need?", "cups", (2, 8)),
        ], "cups": [
            Op("+", "{Pr} also needs {b} cups of flour for bread.", "{Pr} needs {expr} cups in total.", "How many cups of flour does {name} need in total?"),
            Op("-", "{Pr} already has {b} cups at home.", "{Pr} must buy {expr} more cups.", "How many cups of flour must {name} buy?", "buy"),
        ], "buy": [
            Op("*", "Flour costs ${b} a cup.", "The flour costs {expr} dollars.", "How many dollars does the flour cost?", "flourcost"),
        ], "flourcost": [], "money": [
            Op("-", "{Pr} spends ${b} on more sugar.", "{Pr} has {expr} dollars left.", "How many dollars does {name} have left?"),
        ], "share": []}),
    "savings": _family(
        [Start("weekly", "{Name} saves ${a} every week.", (2, 25)),
         Start("money", "{Name} has ${a} in {pos} piggy bank.", (5, 90))],
        {"weekly": [
            Op("*", "{Pr} saves for {b} weeks.", "{Pr} saves {expr} dollars.", "How many dollars does {name} save?", "money", (2, 10)),
            Op("+", "Later {pr} saves ${b} more each week.", "{Pr} saves {expr} dollars a week.", "How many dollars does {name} save each week now?", None, (2, 10)),
        ], "money": [
            Op("+", "{Pos} grandmother gives {obj} ${b}.", "{Pr} has {expr} dollars.", "How many dollars does {name} have now?"),
            Op("-", "{Pr} buys a book for ${b}.", "{Pr} has {expr} dollars left.", "How many dollars does {name} have left?"),
            Op("/", "{Pr} splits the money equally into {b} jars.", "Each jar gets {expr} dollars.", "How many dollars go in each jar?", "share"),
            Op("/", "{Pr} spends it all on toys that cost ${b} each.", "{Pr} buys {expr} toys.", "How many toys does {name} buy?", "toys"),
        ], "toys": [
            Op("-", "{Pr} gives {b} of the toys to {pos} sister.", "{Pr} keeps {expr} toys.", "How many toys does {name} keep?"),
        ], "share": []}),
    "classroom": _family(
        [Start("classes", "A school has {a} classes.", (2, 9)), Start("students", "A class has {a} students.", (12, 36))],
        {"classes": [
            Op("*", "Each class has {b} students.", "There are {expr} students.", "How many students are there?", "students", (10, 30)),
            Op("+", "The school opens {b} more classes.", "There are {expr} classes.", "How many classes are there now?", None, (2, 5)),
        ], "students": [
            Op("-", "{b} students are absent today.", "{expr} students are at school.", "How many students are at school today?"),
            Op("+", "{b} new students join.", "There are {expr} students now.", "How many students are there now?"),
            Op("/", "The teacher splits the students into groups of {b}.", "There are {expr} groups.", "How many groups are there?", "groups"),
            Op("*", "Each student needs {b} pencils.", "The students need {expr} pencils.", "How many pencils do the students need?", "pencils"),
        ], "groups": [
            Op("*", "Each group gets {b} markers.", "The groups get {expr} markers.", "How many markers do the groups get?", "markers"),
        ], "pencils": [
            Op("-", "The school already has {b} pencils.", "The school must buy {expr} pencils.", "How many pencils must the school buy?"),
            Op("/", "Pencils come in boxes of {b}.", "They need {expr} boxes.", "How many boxes do they need?", "boxes"),
        ], "markers": [
            Op("+", "The teacher adds {b} spare markers.", "There are {expr} markers.", "How many markers are there in all?"),
        ], "boxes": []}),
    "farm": _family(
        [Start("chickens", "{Name} has {a} chickens on {pos} farm.", (3, 40))],
        {"chickens": [
            Op("+", "{Pr} buys {b} more chickens.", "{Pr} now has {expr} chickens.", "How many chickens does {name} have now?"),
            Op("-", "{Pr} sells {b} chickens to a neighbor.", "{Pr} has {expr} chickens left.", "How many chickens does {name} have left?"),
            Op("*", "Each chicken lays {b} eggs a week.", "The chickens lay {expr} eggs a week.", "How many eggs do the chickens lay in a week?", "eggs", (2, 7)),
        ], "eggs": [
            Op("-", "{Pr} uses {b} eggs to bake bread.", "{Pr} has {expr} eggs left.", "How many eggs are left?"),
            Op("+", "{Pos} neighbor gives {obj} {b} more eggs.", "{Pr} has {expr} eggs.", "How many eggs does {name} have now?"),
            Op("/", "{Pr} packs the eggs into cartons of {b}.", "{Pr} fills {expr} cartons.", "How many cartons does {name} fill?", "cartons"),
        ], "cartons": [
            Op("*", "{Pr} sells each carton for ${b}.", "{Pr} earns {expr} dollars.", "How many dollars does {name} earn?", "money"),
            Op("-", "{Pr} keeps {b} cartons for the family.", "{Pr} has {expr} cartons to sell.", "How many cartons can {name} sell?"),
        ], "money": [
            Op("-", "{Pr} spends ${b} on chicken feed.", "{Pr} has {expr} dollars left.", "How many dollars does {name} have left?"),
            Op("+", "{Pr} also gets a ${b} tip.", "{Pr} has {expr} dollars in total.", "How many dollars does {name} have in total?"),
        ]}),
    "reading": _family(
        [Start("daily", "{Name} reads {a} pages every day.", (3, 30)), Start("pages", "{Name} has a book with {a} pages.", (40, 200))],
        {"daily": [
            Op("*", "{Pr} reads for {b} days.", "{Pr} reads {expr} pages.", "How many pages does {name} read?", "pages", (2, 9)),
            Op("+", "On weekends {pr} reads {b} more pages a day.", "{Pr} reads {expr} pages a day on weekends.", "How many pages does {name} read on a weekend day?"),
        ], "pages": [
            Op("+", "{Pr} reads {b} more pages on Sunday.", "{Pr} has read {expr} pages.", "How many pages has {name} read?"),
            Op("-", "{Pr} skips {b} pages of pictures.", "{Pr} reads {expr} pages.", "How many pages does {name} read?"),
            Op("/", "Each chapter is {b} pages long.", "That is {expr} chapters.", "How many chapters is that?", "chapters"),
        ], "chapters": [
            Op("-", "{Pr} has already finished {b} chapters.", "{Pr} has {expr} chapters left.", "How many chapters are left?"),
            Op("*", "Each chapter takes {obj} {b} minutes.", "That takes {expr} minutes.", "How many minutes does that take?", "minutes", (5, 20)),
        ], "minutes": []}),
}

NAMES = [("Mia", "f"), ("Ava", "f"), ("Emma", "f"), ("Lily", "f"), ("Zoe", "f"), ("Nora", "f"), ("Sara", "f"),
         ("Leo", "m"), ("Sam", "m"), ("Ben", "m"), ("Omar", "m"), ("Jack", "m"), ("Ravi", "m"), ("Tom", "m")]
ITEMS = [("stickers", "sticker"), ("pencils", "pencil"), ("marbles", "marble"), ("cards", "card"),
         ("balloons", "balloon"), ("erasers", "eraser")]
SYMS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


def split_of(question: str) -> str:
    """The split a question belongs to, from the hash of its text (fixed for all seeds)."""
    return "test" if hashlib.sha256(question.encode("utf-8")).digest()[0] < TEST_HASH_BELOW else "train"


def _pick_b(rng: random.Random, op: Op, a: int) -> int | None:
    """A number for `op` on the running value `a` that keeps results positive, exact and small."""
    if op.sym == "/":
        divisors = [d for d in range(2, 13) if a % d == 0 and a // d >= 2]
        return rng.choice(divisors) if divisors else None
    if op.sym == "-":
        return rng.randint(1, min(a - 2, 40)) if a >= 3 else None
    lo, hi = op.b or ((2, 30) if op.sym == "+" else (2, 9))
    if op.sym == "*":
        hi = min(hi, MAX_VALUE // a)
    elif op.sym == "+":
        hi = min(hi, MAX_VALUE - a)
    return rng.randint(lo, hi) if hi >= lo else None


def _fill(text: str, ctx: dict) -> str:
    for key, value in ctx.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def _try_problem(rng: random.Random, steps: int) -> dict | None:
    fam_name = rng.choice(sorted(FAMILIES))
    fam = FAMILIES[fam_name]
    start = rng.choice(fam["starts"])
    name, sex = rng.choice(NAMES)
    item, item1 = rng.choice(ITEMS)
    he = sex == "m"
    ctx = {"Name": name, "name": name, "Pr": "He" if he else "She", "pr": "he" if he else "she",
           "Pos": "His" if he else "Her", "pos": "his" if he else "her", "obj": "him" if he else "her",
           "item": item, "item1": item1}
    a = rng.randint(*start.a)
    ctx["a"] = a
    sentences, lines, used, unit = [_fill(start.text, ctx)], [], set(), start.unit
    op = None
    for i in range(steps):
        last = i == steps - 1
        cands = [o for o in fam["units"][unit]
                 if id(o) not in used and (last or fam["units"].get(o.to or unit))]
        rng.shuffle(cands)
        for op in cands:
            b = _pick_b(rng, op, a)
            if b is not None:
                break
        else:
            return None
        used.add(id(op))
        c = SYMS[op.sym](a, b)
        expr = f"{a} {op.sym} {b} = <<{a}{op.sym}{b}={c}>>{c}"
        sentences.append(_fill(op.q, {**ctx, "b": b}))
        lines.append(_fill(op.s, {**ctx, "expr": expr}))
        a, unit = c, op.to or unit
    question = " ".join(sentences + [_fill(op.ask, ctx)])
    solution = "\n".join(lines + [f"#### {a}"])
    return {"question": question, "gold": str(a), "solution": solution, "steps": steps, "family": fam_name}


def parse_steps(text: str) -> tuple[int, int]:
    """`2-4` -> (2, 4); `3` -> (3, 3)."""
    lo, _, hi = str(text).partition("-")
    try:
        lo_i, hi_i = int(lo), int(hi or lo)
    except ValueError:
        raise UserError(f"--steps must look like 2-4 or 3, got '{text}'") from None
    if not 1 <= lo_i <= hi_i <= 4:
        raise UserError(f"--steps must lie within 1-4 with low <= high, got '{text}'")
    return lo_i, hi_i


def generate(n: int, steps: tuple[int, int] = (1, 4), seed: int = 0, split: str = "train") -> list[dict]:
    """`n` distinct problems of `split`, with step counts drawn uniformly from `steps`."""
    if n < 1:
        raise UserError(f"--n must be positive, got {n}")
    if split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}, got '{split}'")
    rng = random.Random(f"mathpo-synth-{seed}")
    seen, rows, tries = set(), [], 0
    while len(rows) < n:
        tries += 1
        if tries > 200 * n + 10_000:
            raise UserError(f"could not find {n} distinct {split} problems with steps {steps[0]}-{steps[1]}")
        prob = None
        k = rng.randint(*steps)  # draw the difficulty first so step counts come out uniform
        while prob is None:
            prob = _try_problem(rng, k)
        if prob["question"] in seen or split_of(prob["question"]) != split:
            continue
        seen.add(prob["question"])
        rows.append({"id": f"synth-{split}-{seed}-{len(rows)}", **prob})
    return rows
