"""Text mode of the synthetic generator: real prompts as topic clusters, and word edits drawn from their vocabulary.

The pool is every distinct prompt of NIRVANA's production log (query and cached columns), read from
the committed traces/pool/prompts.parquet (sim/synth/pool.py) or from the log itself. The log's
own matches — a query and the cached prompt it hit with CLIP similarity above
``popularity.link_above`` — are joined by union-find into topic clusters; unmatched prompts are
singletons. Words are classed by two closed lists below: STOPWORDS are never edited; MODIFIERS
(common adjectives, colours and style tags of text-to-image prompts) are the "adjectives"; every
other word counts as a noun (names and verbs included: a cheap, documented approximation).
Replacement and added words are drawn from the pool's words of the same class, weighted by how
often the pool uses them.
"""

from __future__ import annotations

import functools
import math
import random
import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.errors import ConfigError, InputError
from sim.paths import resolve
from sim.synth.config import SynthConfig
from sim.synth.skeleton import REFINE, REPEAT_CROSS, REPEAT_SESSION, Skeleton

STOP, NOUN, MODIFIER = 0, 1, 2
#: how each request's prompt was made (text mode)
ORIGINS = ("repeat", "refine", "start_verbatim", "start_remix", "start_personalised")
O_REPEAT, O_REFINE, O_VERBATIM, O_REMIX, O_PERSONAL = range(5)

STOPWORDS = frozenset("""
a an the of in on at by with and or for to from as is are was were be been being it its his her hers
their them they he she we you your our my me him this that these those into onto over under through
while like very no not but up out down off all any some one two three than then so if near behind
above below between inside around without within about after before during against across along
who what which whose where when how has have had do does did can will would could should may might
de la le el y di du des et und der die das x & - | + : ; , .
""".split())

MODIFIERS = frozenset("""
detailed highly intricate beautiful realistic photorealistic hyperrealistic hyperdetailed cinematic
dramatic epic dark bright colorful colourful vibrant cute young old ancient futuristic glowing golden
giant large small big tiny huge long short wide full high ultra hyper super sharp smooth soft
volumetric symmetrical ornate magical mystical stunning gorgeous elegant dynamic moody atmospheric
surreal abstract minimalist retro vintage modern medieval gothic dystopian cyberpunk steampunk neon
pastel professional award-winning 4k 8k hd uhd 3d 2d black white red blue green pink purple yellow
orange brown gray grey silver happy sad angry scary creepy evil dreamy ethereal cozy peaceful lush
foggy misty rainy sunny snowy stormy dusty rusty wet shiny matte glossy perfect fine extremely
insanely trending featured rendered painted illustrated psychedelic whimsical majestic mysterious
haunted fluffy furry tall thin fat muscular strange weird funny heroic iconic fantastic fantasy
hyper-realistic ultra-realistic ultra-detailed sci-fi photographic anime cartoonish gloomy serene
""".split())

_TOKEN = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*|[0-9]+[a-z]+")


@dataclass(frozen=True)
class PromptPool:
    prompts: list[str]  # distinct real prompts, sorted
    clusters: list[list[int]]  # member indices per cluster: largest first, members sorted
    nouns: list[str]
    noun_cum: list[float]  # cumulative pool frequency, for weighted draws
    modifiers: list[str]
    modifier_cum: list[float]


def word_class(core_lower: str) -> int:
    if core_lower in MODIFIERS:
        return MODIFIER
    if not core_lower or core_lower in STOPWORDS or not any(ch.isalpha() for ch in core_lower):
        return STOP
    return NOUN


def load_pool(cfg: SynthConfig) -> PromptPool:
    """The real prompt pool and its clusters: from the calibration CSV when ``cfg.calibration`` is set
    (clustered at ``popularity.link_above``), else from the committed pool file ``cfg.pool`` (built
    from that CSV by `python -m sim trace build-pool`). Read once per file version and settings;
    callers copy before they mutate."""
    if cfg.calibration is not None:
        path = Path(resolve(cfg.calibration))
        if not path.is_file():
            raise InputError(f"{path}: calibration file not found (synth config key 'calibration')")
        return _load_pool(path, path.stat().st_mtime_ns, "csv", cfg.popularity.link_above, cfg.edits.min_word_count)
    from sim.synth.pool import read_pool

    _, _, built_at = read_pool(cfg.pool)
    if built_at != cfg.popularity.link_above:
        raise ConfigError(
            f"popularity.link_above: the prompt pool {cfg.pool} was clustered at {built_at}, got "
            f"{cfg.popularity.link_above}; set 'calibration' to the log CSV to recluster, or rebuild the pool "
            f"(`python -m sim trace build-pool --link-above {cfg.popularity.link_above}`)")
    path = Path(resolve(cfg.pool))
    return _load_pool(path, path.stat().st_mtime_ns, "pool", built_at, cfg.edits.min_word_count)


@functools.lru_cache(maxsize=4)
def _load_pool(path: Path, _mtime_ns: int, kind: str, link_above: float, floor: int) -> PromptPool:
    if kind == "csv":
        from sim.synth.pool import clusters_from_calibration

        prompts, clusters = clusters_from_calibration(path, link_above)
    else:
        from sim.synth.pool import read_pool

        prompts, clusters, _ = read_pool(path)
    counts: Counter[str] = Counter()
    for p in prompts:
        for tok in p.split():
            core = _TOKEN.match(tok).group(2).lower()  # type: ignore[union-attr]
            if _WORD.fullmatch(core):
                counts[core] += 1
    nouns = sorted(w for w, c in counts.items() if c >= floor and word_class(w) == NOUN)
    mods = sorted(w for w, c in counts.items() if c >= floor and word_class(w) == MODIFIER)
    if not nouns or not mods:
        raise InputError(f"{path}: too few repeated words to draw edits from (edits.min_word_count = {floor})")
    return PromptPool(prompts, clusters, nouns, _cum([counts[w] for w in nouns]),
                      mods, _cum([counts[w] for w in mods]))


def _cum(weights: list[int]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


class TextRealiser:
    """Turns a skeleton into prompts in arrival order; every START or REFINE prompt is new."""

    def __init__(self, pool: PromptPool, cfg: SynthConfig, rnd: random.Random) -> None:
        self._pool = pool
        self._cfg = cfg
        self._rnd = rnd
        e = cfg.edits
        total = e.substitute + e.add + e.delete
        self._p_sub, self._p_add = e.substitute / total, (e.substitute + e.add) / total
        self._info: dict[str, tuple[int, str, str, str]] = {}

    def _token(self, tok: str) -> tuple[int, str, str, str]:
        info = self._info.get(tok)
        if info is None:
            pre, core, suf = _TOKEN.match(tok).groups()  # type: ignore[union-attr]
            info = self._info[tok] = (word_class(core.lower()), pre, core, suf)
        return info

    def _draw(self, cls: int, avoid: str = "") -> str:
        words, cum = (self._pool.nouns, self._pool.noun_cum) if cls == NOUN else (
            self._pool.modifiers, self._pool.modifier_cum)
        for _ in range(8):
            w = words[min(bisect_right(cum, self._rnd.random() * cum[-1]), len(words) - 1)]
            if w != avoid:
                return w
        return w

    def _substitute(self, tokens: list[str], i: int) -> None:
        cls, pre, core, suf = self._token(tokens[i])
        new = self._draw(cls, core.lower())
        tokens[i] = pre + (new.capitalize() if core[:1].isupper() else new) + suf

    def edit_once(self, tokens: list[str], touched: list[bool], target: int) -> None:
        """One word edit in place: substitute, add or delete a word of class ``target`` (or of the
        other editable class when the prompt has none), never touching a word this refinement
        already added or replaced — so each edit changes exactly one word position."""
        r = self._rnd.random()
        op = "sub" if r < self._p_sub else "add" if r < self._p_add else "del"
        if op != "add":
            cands = [i for i, t in enumerate(tokens) if not touched[i] and self._token(t)[0] == target]
            if not cands:
                cands = [i for i, t in enumerate(tokens) if not touched[i] and self._token(t)[0] != STOP]
            if op == "del" and len(tokens) < 3:
                op = "sub"
            if not cands:
                op = "add"
        if op == "sub":
            i = cands[self._rnd.randrange(len(cands))]
            self._substitute(tokens, i)
            touched[i] = True
        elif op == "del":
            i = cands[self._rnd.randrange(len(cands))]
            del tokens[i], touched[i]
        else:
            word = self._draw(target)
            pos = len(tokens)
            if target == MODIFIER:  # adjectives go before a noun
                nouns = [i for i, t in enumerate(tokens) if not touched[i] and self._token(t)[0] == NOUN]
                if nouns:
                    pos = nouns[self._rnd.randrange(len(nouns))]
            tokens.insert(pos, word)
            touched.insert(pos, True)

    def _edited(self, text: str, num_edits: int, target: int, seen: set[str]) -> tuple[str, int]:
        """``text`` with ``num_edits`` edits, plus more (counted) until the result is new."""
        tokens = text.split()
        touched = [False] * len(tokens)
        done = 0
        while True:
            while done < num_edits:
                self.edit_once(tokens, touched, target)
                done += 1
            out = " ".join(tokens)
            if out not in seen:
                return out, done
            num_edits += 1
            if done > 60:
                raise RuntimeError(f"cannot make a new prompt from {text[:60]!r}")

    def _remix(self, text: str, seen: set[str]) -> tuple[str, int]:
        """Replace ``starts.remix_fraction`` of the nouns: a new subject in the member's style."""
        tokens = text.split()
        nouns = [i for i, t in enumerate(tokens) if self._token(t)[0] == NOUN]
        k = max(1, math.ceil(self._cfg.starts.remix_fraction * len(nouns))) if nouns else 0
        for i in self._rnd.sample(nouns, k):
            self._substitute(tokens, i)
        if not nouns:
            tokens.append(self._draw(NOUN))
            k = 1
        out = " ".join(tokens)
        if out in seen:
            return self._edited(out, 1, NOUN, seen)[0], k + 1
        return out, k

    def realise(self, sk: Skeleton) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(prompt per request, edits applied per request, origin per request: an ORIGINS index)."""
        pool, rnd, cfg = self._pool, self._rnd, self._cfg
        n = len(sk)
        members = [list(m) for m in pool.clusters]
        for m in members:
            rnd.shuffle(m)
        next_member = [0] * len(members)
        kind, source, cluster = sk.kind.tolist(), sk.source.tolist(), sk.cluster.tolist()
        anchor = sk.anchor.tolist()
        copy = cfg.reuse.model == "copy"  # topics born in the trace: a new one draws its pool cluster
        edits, step = sk.edits.tolist(), sk.topic_step.tolist()
        noun_phase, remix = cfg.edits.noun_phase, cfg.starts.remix
        prompts: list[str] = [""] * n
        applied = np.zeros(n, dtype=np.int64)
        origin = np.full(n, O_REPEAT, dtype=np.int8)
        seen: set[str] = set()
        for i in range(n):
            k = kind[i]
            if k == REPEAT_SESSION or k == REPEAT_CROSS:
                prompts[i] = prompts[source[i]]
                continue
            if k == REFINE:
                target = NOUN if step[i] <= noun_phase else MODIFIER
                text, applied[i] = self._edited(prompts[source[i]], edits[i], target, seen)
                origin[i] = O_REFINE
            elif copy and anchor[i] >= 0:  # a reused topic: the anchor's prompt, personalised
                text, applied[i] = self._edited(prompts[anchor[i]], cfg.starts.personalise_edits, NOUN, seen)
                origin[i] = O_PERSONAL
            else:
                c = rnd.randrange(len(members)) if copy else cluster[i]
                ms = members[c]
                j = next_member[c]
                while j < len(ms) and pool.prompts[ms[j]] in seen:
                    j += 1
                next_member[c] = j
                if rnd.random() < remix:
                    text, applied[i] = self._remix(pool.prompts[ms[rnd.randrange(len(ms))]], seen)
                    origin[i] = O_REMIX
                elif j < len(ms):  # a real member nobody has used yet
                    text, origin[i] = pool.prompts[ms[j]], O_VERBATIM
                    next_member[c] = j + 1
                else:
                    base = pool.prompts[ms[rnd.randrange(len(ms))]]
                    text, applied[i] = self._edited(base, cfg.starts.personalise_edits, NOUN, seen)
                    origin[i] = O_PERSONAL
            seen.add(text)
            prompts[i] = text
        return prompts, applied, origin
