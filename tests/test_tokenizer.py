"""Parity of the C CLIP tokenizer (engine/tokenizer.c, driven through sdxs-tokenize) with
transformers' slow CLIPTokenizer as diffusers uses it (no ftfy), on real CLIP tokenizer folders
(tests/ref/tokenizer_files.py) with both pad tokens: '<|endoftext|>' (CLIP-L) and '!' (SD 2.x).

- Over 6,000 deterministic strings (every kind of text the brief lists) must give the same 77 ids
  as CLIPTokenizer(padding="max_length", max_length=77, truncation=True); invalid UTF-8 is compared
  with the reference fed bytes.decode("utf-8", errors="replace").
- Every code point, in several contexts, must give the same pre-tokenisation pieces, which checks
  the generated Unicode tables entry by entry.
- A bad folder must fail with exit status 3 and a message naming the file.
- engine/unicode_tables.c must be what scripts/gen_unicode_tables.py writes in this environment.
"""
import json
import os
import random
import shutil
import subprocess
import sys

import pytest
import regex

from conftest import DATA, ROOT, exe, run
from ref.tokenizer_files import write_tokenizer

PADS = {"clip_l": "<|endoftext|>", "sd2": "!"}
MAX_TEXT_BYTES = 65536  # SDXS_TOKENIZER_MAX_TEXT_BYTES


@pytest.fixture(scope="module")
def folders(data_dir):
    out = {}
    for name, pad in PADS.items():
        path = os.path.join(data_dir, "tokenizer", name)
        write_tokenizer(path, pad)
        out[name] = path
    return out


@pytest.fixture(scope="module")
def references(folders):
    from transformers import CLIPTokenizer
    refs = {}
    for name, path in folders.items():
        tok = CLIPTokenizer.from_pretrained(path)
        # With ftfy installed the reference would clean text another way.
        assert tok.fix_text is None, "ftfy is installed: the reference is not the one diffusers uses"
        refs[name] = tok
    return refs


def write_records(path, texts):
    with open(path, "wb") as f:
        for b in texts:
            f.write(b"%d\n" % len(b) + b + b"\n")


def drive(folder, texts, tmp_path, *flags):
    path = os.path.join(tmp_path, "records")
    write_records(path, texts)
    proc = run([exe("sdxs-tokenize"), *flags, folder, path])
    lines = proc.stdout.split("\n")
    assert lines[-1] == ""
    assert len(lines) - 1 == len(texts)
    return lines[:-1]


# ---- the corpus ----

WORDS = ("a photo of an astronaut riding horse on mars cat dog portrait highly detailed "
         "digital painting artstation concept art smooth sharp focus illustration by greg "
         "rutkowski 4k 8k hdr cinematic lighting octane render unreal engine trending "
         "beautiful landscape sunset mountains river city night neon cyberpunk watercolor "
         "the and with in of at by for from van gogh monet style oil canvas").split()
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["...", "!!", "?!", "--", "''", "``"]
ACCENTED = ("café naïve résumé crème brûlée Ærøskøbing Ångström façade jalapeño Straße "
            "Łódź Dvořák Ñandú œuvre ÉCOLE ÎLE Škoda Ħal Ġorġ żółć Ďábel ǅemal ǈ ǋ ǲ ĳ").split()
GREEK_CYRILLIC = ("ΟΔΥΣΣΕΥΣ Σοφία ΣΟΦΟΣ λόγος ΑΘΗΝΑ Σ σ ς ΣΣ ΌΣΟΣ. ΣΑΣ' Σ. αΣ1 Ἀθῆναι ᾅδης "
                  "Москва ПРИВЕТ мир Ёлка Україна ЇЖАК Ђорђе Ӂ").split()
CJK = ["東京タワー", "北京", "你好世界", "漢字かな交じり文", "한국어 텍스트", "ひらがな", "カタカナ",
       "中文English混合", "𠀀𠀁𪜀", "\uf900\uf901\ufa0e", "\u3400\u4dbf", "\u2f800\u2fa1d"]
INDIC_ARABIC = ["مرحبا بالعالم", "العَرَبِيَّة", "नमस्ते दुनिया", "हिन्दी", "ক্ষ", "தமிழ்",
                "שָׁלוֹם", "ภาษาไทย", "ພາສາລາວ", "ខ្មែរ", "각", "\u1100\u1161\u11a8"]
EMOJI = ["👍", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇺🇸🇫🇷", "❤️", "✌🏿", "🧑🏻‍🚀", "👩‍❤️‍💋‍👨",
         "😀😃😄", "🔥💯", "#️⃣", "©️", "™", "🫠", "🪐"]
COMBINING = ["e\u0301", "a\u0308", "o\u0302\u0323", "o\u0323\u0302", "A\u030a", "\u212b",
             "\u2126", "n\u0303", "c\u0327\u0301", "\u0345", "\u03b1\u0345", "\u1fb3",
             "\u0344", "\u0f73", "i\u0307", "\u0301", "x\u0301\u0301\u0301",
             "\u0915\u093c", "\u09c7\u09be", "\u0b47\u0b3e", "\u1100\u1161", "\uac00\u11a8",
             "a\u0316\u0301\u0323\u0300", "\u0300" * 20 + "\u0316" * 20, "Ω\u0301"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\u2028", "\u2029", "\u2003",
          "\u202f", "\u205f", "\x0b", "\x0c", "\x1c", "\x85", "\u200b", " \t\n "]
CONTROLS = ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x85", "\x9f", "\u200b", "\u200d",
            "\u200e", "\ufeff", "\ufffd", "\ue000", "\U000f0000", "\U0010ffff", "\u0378",
            "\U000e0001", "\u00ad", "\u2060", "\u061c"]
CONTRACTIONS = ["it's", "IT'S", "we're", "WE'RE", "they've", "I'm", "you'll", "he'd", "'s",
                "''s", "'ſ", "'ſtartoftext", "don't", "rock'n'roll", "o'clock", "'ll've",
                "'D", "x'S", "’s", "it’s", "'", "''", "'''t", "'1", "'ss", "'re'"]
SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|ENDOFTEXT|>", "<|EndOfText|>",
            "a<|endoftext|>b", "<|endoftext|", "|endoftext|>", "<|startoftext|><|endoftext|>",
            "<|ſtartoftext|>", "< |endoftext|>", "<<|endoftext|>>", "<|endoftext|>!!",
            "!<|startoftext|>!", "<|endoftext|>" * 3, "x <|endoftext|> y", "<|endof<|endoftext|>"]
CASE_EDGES = ["İstanbul", "İ", "ıi", "ẞ", "ß", "STRASSE", "ΣΑΣ", "ΌΣΟΣ.", "Σ'", "'Σ", "AΣ",
              "AΣB", "A.Σ", "A'Σ", "A\u0301Σ", "AΣ\u0301", "AΣ\u0301B", "1Σ", "ǅ", "Ǆǅǆ",
              "ﬁ", "ﬀ", "\u212a", "\u212b", "Ⅻ", "ⅻ", "Ⓐ", "ⓐ", "ᾼ", "ᾳ", "ΐ", "ǰ", "ŉ",
              "Ꭰ", "ꭰ", "𐐀", "𞤀", "ᲀ", "Ɐ", "Ⱥ", "Ȿ", "ᏸ", "ꟻ", "ꞵ", "ǈΣ", "ǅΣ"]
NUMBERS = ["0", "42", "3.14159", "1,000,000", "2nd", "4K", "1080p", "½", "²³", "٣٤", "१२३",
           "Ⅻ", "①②", "𝟙𝟚", "0x1F", "1e-5", "-7", "+3", "12:30", "2024-05-01"]


def random_text(rnd, pools):
    parts = []
    for _ in range(rnd.randint(1, 12)):
        pool = rnd.choice(pools)
        item = rnd.choice(pool)
        if pool is WORDS and rnd.random() < 0.3:
            item = item.upper() if rnd.random() < 0.5 else item.capitalize()
        parts.append(item)
        parts.append(rnd.choice([" ", " ", " ", "", ", ", "\t", "  ", "\n", "!"]))
    return "".join(parts)


def random_code_points(rnd, n):
    """Random characters from every plane, mostly assigned ones."""
    out = []
    while len(out) < n:
        r = rnd.random()
        if r < 0.4:
            cp = rnd.randint(0x20, 0x2FFF)
        elif r < 0.7:
            cp = rnd.randint(0x3000, 0xFFFF)
        elif r < 0.95:
            cp = rnd.randint(0x10000, 0x2FFFF)
        else:
            cp = rnd.randint(0x30000, 0x10FFFF)
        if not 0xD800 <= cp < 0xE000:
            out.append(chr(cp))
    return "".join(out)


def corpus():
    """The test strings, as bytes (a few not UTF-8); deterministic."""
    rnd = random.Random(20240501)
    texts = ["", " ", "  \t\n ", "a", "A", "!", "!!!!", "hello!! world", "a ! b", "!hello!",
             "wow!!!", "hi!<|endoftext|>!", "\x00", "a\x00b", "\ufffd", "a\ufffdb"]
    fixed = (WORDS + PUNCT + ACCENTED + GREEK_CYRILLIC + CJK + INDIC_ARABIC + EMOJI + COMBINING
             + SPACES + CONTROLS + CONTRACTIONS + SPECIALS + CASE_EDGES + NUMBERS)
    texts += fixed
    texts += ["x" + t + "y" for t in fixed] + [t + " " + t.upper() for t in fixed]
    pools = [WORDS, WORDS, WORDS, PUNCT, ACCENTED, GREEK_CYRILLIC, CJK, INDIC_ARABIC, EMOJI,
             COMBINING, SPACES, CONTROLS, CONTRACTIONS, SPECIALS, CASE_EDGES, NUMBERS]
    # Prompts of every kind and length, some far past 77 tokens.
    for _ in range(3000):
        texts.append(random_text(rnd, pools))
    for _ in range(300):
        texts.append(" ".join(random_text(rnd, pools) for _ in range(rnd.randint(5, 40))))
    for _ in range(150):
        texts.append(" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(60, 200))))
    # Random characters from all planes, alone and mixed with text.
    for _ in range(1500):
        texts.append(random_code_points(rnd, rnd.randint(1, 30)))
    for _ in range(500):
        texts.append(random_text(rnd, pools) + random_code_points(rnd, 5) + random_text(rnd, pools))
    # Long single words and runs (BPE on long pieces), digits, repeated marks.
    for n in (1, 2, 3, 10, 77, 100, 500, 3000):
        texts += ["a" * n, "ab" * n, "!" * n, "1" * n, "é" * n, "漢" * n, "👍🏽" * n, " " * n]
    for n in [rnd.randint(20, 300) for _ in range(100)] + [1000, 2000, 4000]:
        texts.append("".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n)))
    # Near and past the 4096-byte prompt limit of the engine, and up to the tokenizer's cap.
    for n in (4095, 4096, 4097, 20000, MAX_TEXT_BYTES - 1):
        base = random_text(rnd, pools)
        texts.append((base * (n // max(1, len(base.encode())) + 1)).encode()[:n]
                     .decode("utf-8", "ignore"))
    out = [t.encode("utf-8") for t in texts]
    # Invalid UTF-8: truncated, overlong, surrogates, stray continuation bytes, random bytes.
    bad = [b"\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
           b"\xe4\xb8", b"\xe4\xb8A", b"a\x80b", b"\xf0\x9f\x91", b"\xf0\x9f\x91 x",
           b"caf\xe9", b"\xc3", b"\xc3\xc3\xa9", b"<|endoftext|>\xff<|endoftext|>",
           b"it\xe2\x80s", b"\xf8\x88\x80\x80\x80", b"\xfe\xfe"]
    for _ in range(400):
        b = bytearray(rnd.choice(out))
        for _ in range(rnd.randint(1, 4)):
            b.insert(rnd.randint(0, len(b)), rnd.randint(0x80, 0xFF))
        bad.append(bytes(b))
    for _ in range(200):
        bad.append(bytes(rnd.randint(0, 255) for _ in range(rnd.randint(1, 40))))
    return out + bad


def reference_ids(tok, b):
    text = b.decode("utf-8", errors="replace")
    return tok(text, padding="max_length", max_length=77, truncation=True).input_ids


@pytest.mark.parametrize("name", sorted(PADS))
def test_ids_match_transformers(name, folders, references, tmp_path):
    texts = corpus()
    assert len(texts) >= 5000
    lines = drive(folders[name], texts, tmp_path)
    tok = references[name]
    bad = []
    for b, line in zip(texts, lines):
        want = reference_ids(tok, b)
        got = [int(x) for x in line.split()] if not line.startswith("error") else line
        assert len(want) == 77
        if got != want:
            bad.append(f"{b[:200]!r}\n  want {want}\n  got  {got}")
    assert not bad, f"{len(bad)} of {len(texts)} differ, e.g.\n" + "\n".join(bad[:5])


def reference_pieces(tok, text):
    """What CLIPTokenizer hands to bpe(), checked against its own tokenize()."""
    pieces = []
    for chunk in tok.tokens_trie.split(text):
        if chunk in tok._added_tokens_encoder:
            pieces.append(chunk)
        elif chunk:
            pieces += regex.findall(tok.pat, " ".join(tok.nlp.tokenize(chunk)))
    return pieces


def pieces_hex(pieces):
    return " ".join(p.encode("utf-8").hex() for p in pieces)


def test_reference_pieces_helper(references):
    """reference_pieces() must be what tokenize() really does, or the next test proves nothing."""
    tok = references["sd2"]
    for b in corpus()[:3000]:
        text = b.decode("utf-8", errors="replace")
        bpe = []
        for p in reference_pieces(tok, text):
            if p in tok._added_tokens_encoder:
                bpe.append(p)
            else:
                bpe += tok.bpe("".join(tok.byte_encoder[x] for x in p.encode("utf-8"))).split(" ")
        assert bpe == tok.tokenize(text), repr(text)


def every_code_point_texts():
    """Each code point in contexts that exercise the tables: alone, inside a word, around a
    final sigma, before combining marks, after an apostrophe and between digits. Those that
    the cleaning drops (most of them: unassigned, private use, controls) need only show that
    they vanish, so they go many to a string."""
    from transformers.tokenization_utils import _is_control
    cps = [cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000]
    dropped = [cp for cp in cps if cp in (0, 0xFFFD) or _is_control(chr(cp))]
    kept = sorted(set(cps) - set(dropped))
    texts = []
    for i in range(0, len(kept), 12):
        parts = []
        for cp in kept[i:i + 12]:
            c = chr(cp)
            parts.append(f"{c} x{c}y A{c}\u03a3 A\u03a3{c} {c}\u0301\u0316 '{c} 1{c}2 <|{c}")
        texts.append(" ".join(parts))
    for i in range(0, len(dropped), 400):
        texts.append("x".join(chr(cp) for cp in dropped[i:i + 400]) + " a\u03a3")
    return texts


def test_pieces_every_code_point(folders, references, tmp_path):
    texts = every_code_point_texts()
    lines = drive(folders["clip_l"], [t.encode("utf-8") for t in texts], tmp_path, "--pieces")
    tok = references["clip_l"]
    bad = [t for t, line in zip(texts, lines) if line != pieces_hex(reference_pieces(tok, t))]
    assert not bad, f"{len(bad)} of {len(texts)} differ; first: {bad[0]!r}"


def test_pieces_corpus(folders, references, tmp_path):
    texts = corpus()
    for name in sorted(PADS):
        lines = drive(folders[name], texts, tmp_path, "--pieces")
        tok = references[name]
        for b, line in zip(texts, lines):
            want = pieces_hex(reference_pieces(tok, b.decode("utf-8", errors="replace")))
            assert line == want, repr(b[:200])


def test_text_over_cap_is_refused(folders, references, tmp_path):
    texts = [b"a" * MAX_TEXT_BYTES, b"a" * (MAX_TEXT_BYTES + 1), b"\xff" * (1 << 20)]
    lines = drive(folders["clip_l"], texts, tmp_path)
    assert [int(x) for x in lines[0].split()] == reference_ids(references["clip_l"], texts[0])
    for line in lines[1:]:
        assert line.startswith("error 2 ") and str(MAX_TEXT_BYTES) in line, line


# ---- bad folders ----

def edit_json(name, fn):
    def apply(folder):
        path = os.path.join(folder, name)
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        data = fn(data)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)
    return apply


def write_file(name, content):
    def apply(folder):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(content)
    return apply


def edit_merges(fn):
    def apply(folder):
        path = os.path.join(folder, "merges.txt")
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(fn(lines)))
    return apply


def remove(name):
    return lambda folder: os.remove(os.path.join(folder, name))


def vocab_without(key):
    return edit_json("vocab.json", lambda v: {k: i for k, i in v.items() if k != key})


BAD_FOLDERS = {
    "vocab_missing": (remove("vocab.json"), "vocab.json", "missing"),
    "vocab_not_json": (write_file("vocab.json", b'{"a": 1,'), "vocab.json", "not valid JSON"),
    "vocab_a_list": (write_file("vocab.json", b'["a", "b"]'), "vocab.json", "not a JSON object"),
    "vocab_string_id": (edit_json("vocab.json", lambda v: dict(v, hello="7")), "vocab.json",
                        "hello"),
    "vocab_negative_id": (edit_json("vocab.json", lambda v: dict(v, hello=-1)), "vocab.json",
                          "not a token id"),
    "vocab_float_id": (edit_json("vocab.json", lambda v: dict(v, hello=1.5)), "vocab.json",
                       "not a token id"),
    "vocab_empty": (write_file("vocab.json", b"{}"), "vocab.json", "entries"),
    "byte_symbol_missing": (vocab_without("Ā"), "vocab.json", "byte symbol"),
    "merges_missing": (remove("merges.txt"), "merges.txt", "missing"),
    "merge_three_fields": (edit_merges(lambda ls: ls[:5] + ["i n g"] + ls[5:]), "merges.txt",
                           "line 6"),
    "merge_one_field": (edit_merges(lambda ls: ls[:2] + ["x"] + ls[2:]), "merges.txt",
                        "line 3"),
    "merge_blank_line": (edit_merges(lambda ls: ls[:9] + [""] + ls[9:]), "merges.txt",
                         "line 10"),
    "merge_unknown_symbol": (edit_merges(lambda ls: ls[:4] + ["qq zz"] + ls[4:]), "merges.txt",
                             "not in vocab.json"),
    "merge_result_missing": (vocab_without("in"), "merges.txt", "merge result \"in\""),
    "merges_not_utf8": (write_file("merges.txt", b"#version: 0.2\ni n\xff\n"), "merges.txt",
                        "not UTF-8"),
    "pad_not_in_vocab": (edit_json("special_tokens_map.json", lambda m: dict(m, pad_token="<pad>")),
                         "special_tokens_map.json", "<pad>"),
    "config_not_json": (write_file("tokenizer_config.json", b"{nope"), "tokenizer_config.json",
                        "not valid JSON"),
    "special_map_bad_token": (edit_json("special_tokens_map.json", lambda m: dict(m, bos_token=5)),
                              "special_tokens_map.json", "bos_token"),
    "special_map_null_pad": (edit_json("special_tokens_map.json", lambda m: dict(m, pad_token=None)),
                             "special_tokens_map.json", "pad_token is null"),
    "rstrip_token": (edit_json("special_tokens_map.json", lambda m: dict(
        m, eos_token={"content": "<|endoftext|>", "rstrip": True})), "special_tokens_map.json",
        "rstrip"),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_bad_folder(case, folders, tmp_path):
    folder = os.path.join(tmp_path, "tokenizer")
    shutil.copytree(folders["sd2"], folder)
    mutate, file, words = BAD_FOLDERS[case]
    mutate(folder)
    records = os.path.join(tmp_path, "records")
    write_records(records, [b"a photo of a cat"])
    proc = run([exe("sdxs-tokenize"), folder, records], check=False)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert file in proc.stderr and words in proc.stderr, proc.stderr


def test_folder_variants(folders, references, tmp_path):
    """Folders as other transformers versions save them: special tokens as AddedToken objects,
    added_tokens_decoder in tokenizer_config.json, only one of the two config files, CRLF
    merges, split_special_tokens, additional_special_tokens; each must give the reference's
    ids."""
    from transformers import CLIPTokenizer
    base = folders["sd2"]
    texts = [b"Hello!! <|endoftext|> world's best PIZZA 1234", b"wow!!!", b"a<|startoftext|>b",
             b"concatenate a cat, CAT!cat"]
    cases = {
        "objects": edit_json("special_tokens_map.json", lambda m: {
            k: {"content": v, "lstrip": False, "normalized": True, "rstrip": False,
                "single_word": False} for k, v in m.items()}),
        "decoder": edit_json("tokenizer_config.json", lambda c: dict(c, added_tokens_decoder={
            "0": {"content": "!", "special": True},
            "49406": {"content": "<|startoftext|>", "special": True},
            "49407": {"content": "<|endoftext|>", "special": True}})),
        "no_special_map": remove("special_tokens_map.json"),
        "split_special": edit_json("tokenizer_config.json",
                                   lambda c: dict(c, split_special_tokens=True)),
        "additional": edit_json("special_tokens_map.json",
                                lambda m: dict(m, additional_special_tokens=["cat"])),
        "no_config": remove("tokenizer_config.json"),
        "crlf": edit_merges(lambda ls: [l + "\r" for l in ls]),
    }
    for case, mutate in cases.items():
        folder = os.path.join(tmp_path, case)
        shutil.copytree(base, folder)
        mutate(folder)
        tok = CLIPTokenizer.from_pretrained(folder)
        lines = drive(folder, texts, tmp_path)
        for b, line in zip(texts, lines):
            assert [int(x) for x in line.split()] == reference_ids(tok, b), (case, b)


def test_merge_order_matches_reference(references, tmp_path):
    """A merge list whose ranks do not follow the order in which symbols come to exist (a pair
    holding "ab" ranks before the merge making "ab"): the reference merges the best pair at every
    place before it looks at newly formed pairs, and so must the engine."""
    from transformers import CLIPTokenizer
    from ref.tokenizer_files import bytes_to_unicode
    merges = [("ab", "a"), ("a", "b"), ("ab", "ab"), ("a", "a"), ("aa", "a"), ("a", "b</w>"),
              ("x", "a"), ("ab", "x</w>"), ("b", "b"), ("aba", "b</w>"), ("x", "x"),
              ("bb", "a"), ("bba", "b")]
    symbols = list(bytes_to_unicode().values())
    vocab = {}
    for s in symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [
            "<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(s, len(vocab))
    folder = os.path.join(tmp_path, "tiny")
    os.makedirs(folder)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{l} {r}\n" for l, r in merges))
    tok = CLIPTokenizer.from_pretrained(folder)
    rnd = random.Random(7)
    texts = [" ".join("".join(rnd.choice("aabx") for _ in range(rnd.randint(1, 40)))
                      for _ in range(rnd.randint(1, 4))).encode() for _ in range(1000)]
    lines = drive(folder, texts, tmp_path)
    bad = [b for b, line in zip(texts, lines)
           if [int(x) for x in line.split()] != reference_ids(tok, b)]
    assert not bad, f"{len(bad)} of {len(texts)} differ, e.g. {bad[:3]}"


def test_unicode_tables_are_current(tmp_path):
    """The committed tables are what the generator makes from this environment's reference
    (its Python unicodedata and regex versions)."""
    out = os.path.join(tmp_path, "unicode_tables.c")
    run([sys.executable, os.path.join(ROOT, "scripts", "gen_unicode_tables.py"), out])
    with open(out, encoding="utf-8") as f:
        fresh = f.read()
    with open(os.path.join(ROOT, "engine", "unicode_tables.c"), encoding="utf-8") as f:
        assert f.read() == fresh, "engine/unicode_tables.c is stale: run scripts/gen_unicode_tables.py"
