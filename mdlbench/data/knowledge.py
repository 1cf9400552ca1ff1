"""A synthetic knowledge base whose information content is known exactly.

N entities, each with K attributes (birth year, home city, employer, ...) whose values are drawn
independently and uniformly from fixed, known choice sets. The facts are rendered as short
statements, one fact per statement, with a few templates per attribute::

    Kavo Tesu was born in 1957.
    Kavo Tesu works at Granite Bank.

Because every value is uniform and independent of everything else (the name included), the
values carry exactly ``sum over facts of log2 |choices|`` bits (:attr:`KnowledgeBase.information_bits`):
no code can describe them in fewer bits on average, so a model that predicts them with fewer bits
must have stored the difference in its parameters (``mdlbench.capacity``).

Three properties make the code length of a value a fair measure:

* **Names leak nothing.** Names are random syllable strings of one fixed length, drawn
  independently of the attribute values and unique within the knowledge base.
* **Each template is identified before its value starts.** The text between the name and the
  value (e.g. ``" was born in "``) of one template is never a prefix of another's (checked at
  import), so at the first byte of the value the context says which attribute is asked for, and
  no probability has to be kept for a different sentence.
* **Values end with a terminator.** The coded span is the value followed by ``"."``; the byte
  strings ``value + "."`` are prefix-free, so under any model the probabilities of the choices sum
  to at most 1 (Kraft), and a model spreading its mass evenly over the choices pays exactly
  ``log2 |choices|`` bits.

How often each entity is seen in training is part of the source: ``uniform`` (every fact
``exposures`` times) or ``zipf`` (the entity of rank r, in a random order, ``round(exposures *
r**-zipf_exponent)`` times, at least ``min_exposures``).

Everything is deterministic from ``KnowledgeConfig.seed`` through ``numpy.random.default_rng``
(no global RNG); the training order is drawn from a generator the caller passes in. Numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mdlbench.config import ConfigError, check_ranges

TERMINATOR = "."
EXPOSURES = ("uniform", "zipf")
MAX_ENTITIES = 1_000_000

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


@dataclass(frozen=True)
class Attribute:
    """One attribute: its name, its choice set and its templates.

    Attributes:
      name: key used in configs and tables.
      choices: the values, drawn uniformly; the information of one value is log2(len(choices)).
      templates: statements with ``{n}`` (the name) at the start and ``{v}`` (the value) right
        before the final terminator.
    """

    name: str
    choices: tuple[str, ...]
    templates: tuple[str, ...]

    @property
    def bits(self) -> float:
        """Information of one value in bits: log2 |choices|."""
        return math.log2(len(self.choices))


_CITIES = (
    "Oslo", "Lima", "Cairo", "Dakar", "Paris", "Rome", "Tokyo", "Seoul", "Delhi", "Quito", "Accra", "Perth",
    "Dublin", "Vienna", "Prague", "Warsaw", "Berlin", "Madrid", "Lisbon", "Athens", "Ankara", "Tehran",
    "Baghdad", "Kabul", "Hanoi", "Manila", "Jakarta", "Bangkok", "Beijing", "Taipei", "Sydney", "Auckland",
    "Toronto", "Denver", "Boston", "Chicago", "Houston", "Phoenix", "Havana", "Bogota", "Caracas", "Santiago",
    "Montevideo", "Asuncion", "La Paz", "Nairobi", "Kampala", "Lusaka", "Harare", "Maputo", "Luanda", "Tunis",
    "Algiers", "Rabat", "Riga", "Vilnius", "Tallinn", "Helsinki", "Stockholm", "Copenhagen", "Reykjavik",
    "Bern", "Zagreb", "Sofia")
_EMPLOYERS = (
    "Alder Labs", "Birchwood", "Cobalt Works", "Dunmore", "Ember Systems", "Falcon Freight", "Granite Bank",
    "Harbor Foods", "Ironclad", "Juniper Health", "Kestrel Air", "Lumen Energy", "Maple Media", "Nimbus Cloud",
    "Onyx Mining", "Pinecrest", "Quarry Steel", "Redwood Press", "Sable Motors", "Tidewater", "Upland Farms",
    "Vantage Retail", "Willow Textiles", "Xenon Optics", "Yarrow Pharma", "Zephyr Rail", "Atlas Shipping",
    "Beacon Insurance", "Crescent Hotels", "Delta Robotics", "Evergreen Paper", "Fjord Fisheries")
_UNIVERSITIES = (
    "Ashford", "Belmont", "Carrow", "Dunhill", "Elmwood", "Fairhaven", "Glenmore", "Hollis", "Ivydale",
    "Kingsley", "Lakeside", "Merton", "Norwood", "Oakridge", "Pembrook", "Ravenscroft")
_MAJORS = (
    "Physics", "Chemistry", "Biology", "History", "Law", "Medicine", "Music", "Art", "Economics", "Geology",
    "Nursing", "Philosophy", "Mathematics", "Linguistics", "Architecture", "Astronomy", "Sociology",
    "Psychology", "Statistics", "Engineering")

# Sizes 128, 64, 32, 16 (whole bits) and 20 (log2 20 = 4.32 bits): the measure needs neither.
ATTRIBUTES: dict[str, Attribute] = {a.name: a for a in (
    Attribute("birth_year", tuple(str(y) for y in range(1900, 2028)),
              ("{n} was born in {v}.", "{n}'s year of birth is {v}.", "{n}, born {v}.")),
    Attribute("birth_city", _CITIES,
              ("{n} is from {v}.", "{n} grew up in {v}.", "{n}'s home town is {v}.")),
    Attribute("employer", _EMPLOYERS,
              ("{n} works at {v}.", "{n} is employed by {v}.", "{n}'s employer is {v}.")),
    Attribute("university", _UNIVERSITIES,
              ("{n} graduated from {v}.", "{n} studied at {v}.", "{n}'s alma mater is {v}.")),
    Attribute("major", _MAJORS,
              ("{n} majored in {v}.", "{n}'s major was {v}.", "{n} holds a degree in {v}.")),
)}
N_TEMPLATES = 3


def _check_tables() -> None:
    """Checks the properties the measure relies on (see the module docstring); runs at import."""
    middles = []
    for a in ATTRIBUTES.values():
        if len(set(a.choices)) != len(a.choices) or any(TERMINATOR in v or not v.isascii() for v in a.choices):
            raise AssertionError(f"attribute {a.name}: choices must be distinct ASCII without {TERMINATOR!r}")
        if len(a.templates) != N_TEMPLATES:
            raise AssertionError(f"attribute {a.name}: expected {N_TEMPLATES} templates")
        for t in a.templates:
            if not (t.startswith("{n}") and t.endswith("{v}" + TERMINATOR) and t.count("{") == 2):
                raise AssertionError(f"template {t!r} must start with {{n}} and end with {{v}}{TERMINATOR}")
            middles.append(t[3:-4])
    for i, p in enumerate(middles):
        for j, q in enumerate(middles):
            if i != j and q.startswith(p):
                raise AssertionError(f"template text {p!r} is a prefix of {q!r}: the value's context is ambiguous")


_check_tables()


@dataclass
class KnowledgeConfig:
    """A knowledge base: how many entities, which attributes, how often each entity is seen.

    Attributes:
      n_entities: N, the number of entities.
      attributes: attribute names from ``ATTRIBUTES`` (birth_year, birth_city, employer,
        university, major).
      templates: how many of each attribute's templates are used (1 to 3), in training and in
        the measurement.
      exposure: ``uniform`` or ``zipf``: how training exposures are spread over entities.
      exposures: uniform: times each fact is seen in training; zipf: times for the entity of rank 1.
      zipf_exponent: s in ``exposures * rank**-s`` (zipf only).
      min_exposures: lower bound on any entity's exposures (zipf only).
      seed: seed of the names, the values and the Zipf ranks.
    """

    n_entities: int = 1000
    attributes: list[str] = field(default_factory=lambda: ["birth_year", "birth_city", "employer", "university"])
    templates: int = 2
    exposure: str = "uniform"
    exposures: int = 100
    zipf_exponent: float = 1.0
    min_exposures: int = 1
    seed: int = 0


def validate(cfg: KnowledgeConfig, where: str = "knowledge") -> None:
    """Range checks with one clear message each (raises :class:`ConfigError`)."""
    check_ranges(f"{where}.", {"n_entities": cfg.n_entities, "exposures": cfg.exposures,
                               "min_exposures": cfg.min_exposures},
                 {"seed": cfg.seed, "zipf_exponent": cfg.zipf_exponent})
    if cfg.n_entities > MAX_ENTITIES:
        raise ConfigError(f"{where}.n_entities must be at most {MAX_ENTITIES:,}, got {cfg.n_entities}")
    unknown = [a for a in cfg.attributes if a not in ATTRIBUTES]
    if unknown or not cfg.attributes:
        raise ConfigError(f"{where}.attributes: unknown or empty {unknown or cfg.attributes}; "
                          f"known: {', '.join(ATTRIBUTES)}")
    if len(set(cfg.attributes)) != len(cfg.attributes):
        raise ConfigError(f"{where}.attributes lists an attribute twice: {cfg.attributes}")
    if not 1 <= cfg.templates <= N_TEMPLATES:
        raise ConfigError(f"{where}.templates must be between 1 and {N_TEMPLATES}, got {cfg.templates}")
    if cfg.exposure not in EXPOSURES:
        raise ConfigError(f"{where}.exposure must be one of {', '.join(EXPOSURES)}, got {cfg.exposure!r}")


@dataclass
class KnowledgeBase:
    """The generated facts.

    Attributes:
      config: what generated them.
      attributes: the K attributes, in config order.
      names: the N entity names (unique, all of one length).
      values_NxK: index of entity n's value in ``attributes[k].choices``.
      exposures_N: planned training exposures of each of entity n's facts.
    """

    config: KnowledgeConfig
    attributes: list[Attribute]
    names: list[str]
    values_NxK: np.ndarray
    exposures_N: np.ndarray

    @property
    def n_entities(self) -> int:
        return len(self.names)

    @property
    def n_facts(self) -> int:
        return self.values_NxK.size

    @property
    def bits_K(self) -> np.ndarray:
        """log2 |choices| of each attribute."""
        return np.array([a.bits for a in self.attributes])

    @property
    def information_bits(self) -> float:
        """Exact information content of the values: N * sum_k log2 |choices_k| bits."""
        return float(self.n_entities * self.bits_K.sum())

    def statement(self, n: int, k: int, t: int) -> tuple[bytes, int]:
        """Entity n's fact k rendered with template t.

        Returns:
          (the statement's bytes, the offset where the value starts); the coded span is from that
          offset to the end (the value and its terminator).
        """
        a = self.attributes[k]
        head, _ = a.templates[t].split("{v}")
        prefix = head.format(n=self.names[n]).encode("ascii")
        return prefix + (a.choices[self.values_NxK[n, k]] + TERMINATOR).encode("ascii"), len(prefix)

    def text(self) -> bytes:
        """Every fact under every used template once, one statement per line: the KB as a file."""
        lines = [self.statement(n, k, t)[0] for n in range(self.n_entities)
                 for k in range(len(self.attributes)) for t in range(self.config.templates)]
        return b"\n".join(lines) + b"\n"

    def training_stream(self, rng: np.random.Generator) -> np.ndarray:
        """The shuffled training statements: every fact ``exposures_N[n]`` times, random templates.

        Args:
          rng: the caller's generator (the training seed), so the order is not part of the KB.

        Returns:
          int array S x 3 of (entity, attribute, template), S = K * sum(exposures_N).
        """
        k = len(self.attributes)
        reps = np.repeat(self.exposures_N, k)  # fact (n, k) in row-major order
        facts = np.repeat(np.arange(self.n_entities * k), reps)
        templates = rng.integers(0, self.config.templates, size=facts.size)
        order = rng.permutation(facts.size)
        facts, templates = facts[order], templates[order]
        return np.stack([facts // k, facts % k, templates], axis=1).astype(np.int64)


def _names(rng: np.random.Generator, count: int, taken: set[str]) -> list[str]:
    """``count`` unique two-word names of four letters each ("Kavo Tesu"), none in ``taken``.

    One fixed length puts the attribute text at the same position in every statement, so the
    position of a byte never hints at whose statement it is.
    """
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    out: list[str] = []
    seen = set(taken)
    while len(out) < count:
        need = count - len(out)
        idx = rng.integers(0, len(syllables), size=(need, 4))
        for row in idx:
            s = [syllables[i] for i in row]
            name = (s[0] + s[1]).capitalize() + " " + (s[2] + s[3]).capitalize()
            if name not in seen:
                seen.add(name)
                out.append(name)
    return out


def _exposures(cfg: KnowledgeConfig, rng: np.random.Generator) -> np.ndarray:
    if cfg.exposure == "uniform":
        return np.full(cfg.n_entities, cfg.exposures, dtype=np.int64)
    rank_N = rng.permutation(cfg.n_entities) + 1  # entity n has rank rank_N[n]
    planned = np.rint(cfg.exposures * rank_N.astype(np.float64) ** -cfg.zipf_exponent).astype(np.int64)
    return np.maximum(planned, cfg.min_exposures)


def generate(cfg: KnowledgeConfig) -> KnowledgeBase:
    """The knowledge base ``cfg`` describes, deterministic from ``cfg.seed``.

    Raises:
      ConfigError: an invalid setting.
    """
    validate(cfg)
    rng = np.random.default_rng([cfg.seed, 0])
    attrs = [ATTRIBUTES[a] for a in cfg.attributes]
    names = _names(rng, cfg.n_entities, set())
    values = np.stack([rng.integers(0, len(a.choices), size=cfg.n_entities) for a in attrs], axis=1)
    return KnowledgeBase(cfg, attrs, names, values.astype(np.int64), _exposures(cfg, rng))


def heldout(kb: KnowledgeBase, count: int) -> KnowledgeBase:
    """``count`` fresh entities with the same attributes and templates, never in ``kb``.

    A model trained on ``kb`` has seen none of their facts, so what it is credited on them is what
    the measure credits by chance (the control of ``mdlbench.capacity``). Drawn from its own
    stream of the same seed, so it does not change ``kb``.
    """
    cfg = kb.config
    rng = np.random.default_rng([cfg.seed, 1])
    names = _names(rng, count, set(kb.names))
    values = np.stack([rng.integers(0, len(a.choices), size=count) for a in kb.attributes], axis=1)
    return KnowledgeBase(cfg, kb.attributes, names, values.astype(np.int64), np.zeros(count, dtype=np.int64))
