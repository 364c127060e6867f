"""Tag text → Porter stems, exactly as the reference implementation's tag preprocessing does it.

It replaces every character outside ``[a-zA-Z0-9]`` with a space, collapses runs of spaces,
splits on single spaces, Porter-stems each token with NLTK (which lowercases it) and drops stems that
are empty or in NLTK's English stopword list (../shared/spec/movielens.md, §3). The list is embedded
below so nothing is downloaded.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd

# NLTK's English stopword list (nltk_data ``corpora/stopwords/english``, the 2025 edition with the
# pronoun contractions). Tokens never contain an apostrophe after filtering, so the older 179-word edition
# drops exactly the same stems.
STOPWORDS: frozenset[str] = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him
his himself she she's her hers herself it it's its itself they them their theirs themselves what which who
whom this that that'll these those am is are was were be been being have has had having do does did doing a
an the and but if or because as until while of at by for with about against between into through during
before after above below to from up down in out on off over under again further then once here there when
where why how all any both each few more most other some such no nor not only own same so than too very s t
can will just don don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't
doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't
shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't he'd he'll he's i'd i'll
i'm i've it'd it'll she'd she'll they'd they'll they're they've we'd we'll we're we've
""".split())

@functools.cache
def _stemmers() -> tuple[Any, Any]:
    """NLTK's Porter stemmer, and one without its table of irregular forms. Built on first use: importing
    NLTK takes ~1.5 s, which every run that loads a data set would otherwise pay.

    NLTK up to 3.8 looked the *unlowered* token up in that table (dying → die, sky → sky, howe → howe),
    so capitalised forms went through the plain algorithm ("Dying" → "dy"). The reference
    implementation's figures were made that way; the second stemmer reproduces it on any NLTK version.
    """
    from nltk.stem import PorterStemmer

    no_pool = PorterStemmer()
    if hasattr(no_pool, "pool"):
        no_pool.pool = {}
    return PorterStemmer(), no_pool


def stem(token: str) -> str:
    """The stem of one token, as the reference tag preprocessing makes it ('' for an empty token)."""
    with_pool, no_pool = _stemmers()
    return with_pool.stem(token) if token == token.lower() else no_pool.stem(token)


def tokens(text: str) -> list[str]:
    """Stems kept for one tag text, in order, repeats included."""
    return stem_series(pd.Series([text]), pd.Series([0]))[1].tolist()


def stem_series(texts: pd.Series, owners: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Stem every tag text; return (owner of each kept stem, the stem), in text order, repeats included.

    Vectorised over texts with pandas; the stemmer runs once per distinct token.
    """
    texts = pd.Series(np.asarray(texts, dtype=object)).astype(str)
    owners_arr = np.asarray(owners)
    if len(texts) == 0:
        return owners_arr[:0], np.array([], dtype=object)
    cleaned = texts.str.replace(r"[^a-zA-Z0-9]", " ", regex=True).str.replace(" +", " ", regex=True)
    exploded = cleaned.str.split(" ").explode()
    owner = owners_arr[exploded.index.to_numpy()]
    codes, uniques = pd.factorize(exploded.to_numpy(dtype=object))
    stems = np.array([stem(tok) for tok in uniques], dtype=object)
    keep_unique = np.array([bool(s) and s not in STOPWORDS for s in stems], dtype=bool)
    keep = keep_unique[codes]
    return owner[keep], stems[codes[keep]]
