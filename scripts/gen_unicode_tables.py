#!/usr/bin/env python3
"""Writes engine/unicode_tables.c: the Unicode data the CLIP tokenizer (engine/tokenizer.c) needs
to reproduce transformers' CLIPTokenizer without ftfy, taken from the very code and data it runs on.

Run with the reference environment: `.venv/bin/python scripts/gen_unicode_tables.py`. Each property
is read off the reference itself: the cleaning predicates of transformers' BasicTokenizer, Python's
str.isspace, str.lower and unicodedata (NFC), and the `regex` module's classes as compiled with the
tokenizer's IGNORECASE flag. The output records the Unicode versions; tests/test_tokenizer.py
regenerates it and fails when the committed file differs.
"""
import os
import sys
import unicodedata

import regex
from transformers.models.clip.tokenization_clip import BasicTokenizer
from transformers.tokenization_utils import _is_control, _is_whitespace

# Property bits; engine/unicode_tables.h defines the same values.
DROP, BLANK, CJK, PYSPACE, CASED, CASE_IGNORABLE, NFC_TOUCH = (1 << i for i in range(7))
CLASS_SHIFT = 7  # two bits: 0 skipped by the pre-tokenisation regex, 1 letter, 2 number, 3 other
CLASS_L, CLASS_N, CLASS_O = 1, 2, 3

N_CP = 0x110000
SURROGATES = range(0xD800, 0xE000)
ALL_CHARS = "".join(chr(cp) for cp in range(N_CP))  # index i holds U+i

HANGUL_S, HANGUL_L, HANGUL_V, HANGUL_T = 0xAC00, 0x1100, 0x1161, 0x11A7
HANGUL_LCOUNT, HANGUL_VCOUNT, HANGUL_TCOUNT = 19, 21, 28
HANGUL_SCOUNT = HANGUL_LCOUNT * HANGUL_VCOUNT * HANGUL_TCOUNT

# The literal characters of CLIPTokenizer's pattern (special tokens and contractions).
PATTERN_LITERALS = "<|startoftext|><|endoftext|>'s't're've'm'll'd"


def canonical_decomposition(c):
    """The one-level canonical decomposition of c as a list of code points, or None."""
    d = unicodedata.decomposition(c)
    if not d or d.startswith("<"):
        return None
    return [int(x, 16) for x in d.split()]


def full_decomposition(cp):
    d = canonical_decomposition(chr(cp))
    if d is None:
        return [cp]
    out = []
    for x in d:
        out += full_decomposition(x)
    return out


def regex_classes():
    """Which alternative of the pre-tokenisation pattern each single code point can start."""
    cls = [0] * N_CP
    classes = ((CLASS_L, r"[\p{L}]"), (CLASS_N, r"[\p{N}]"), (CLASS_O, r"[^\s\p{L}\p{N}]"))
    for k, pattern in classes:
        for m in regex.finditer(pattern, ALL_CHARS, regex.IGNORECASE):
            cp = m.start()
            if cls[cp]:
                sys.exit(f"U+{cp:04X} matches several classes")
            cls[cp] = k
    return cls


def sigma_context():
    """Cased and Case_Ignorable as Python's str.lower() sees them in its Final_Sigma rule, probed
    through lower() itself: 'A' is cased, '1' is neither, and Σ lowers to ς only in final
    position. Casedness matters only for characters that are not case-ignorable."""
    cased = [False] * N_CP
    ignorable = [False] * N_CP
    for cp in range(N_CP):
        if cp in SURROGATES:
            continue
        c = chr(cp)
        after_a = ("A" + c + "\u03a3").lower()[-1] == "\u03c2"
        after_1 = ("1" + c + "\u03a3").lower()[-1] == "\u03c2"
        alone = (c + "\u03a3").lower()[-1] == "\u03c2"
        ignorable[cp] = after_a and not after_1 and not alone
        cased[cp] = not ignorable[cp] and alone
        if not ignorable[cp] and after_1 != alone:
            sys.exit(f"U+{cp:04X}: inconsistent Final_Sigma probes")
        # The look-ahead half of the rule must agree.
        ahead = ("A\u03a3" + c).lower()[1] == "\u03c2"
        if ahead != (ignorable[cp] or not cased[cp]):
            sys.exit(f"U+{cp:04X}: Final_Sigma look-ahead disagrees")
    return cased, ignorable


def properties():
    basic = BasicTokenizer(strip_accents=False, do_split_on_punc=False)
    cls = regex_classes()
    cased, ignorable = sigma_context()
    seconds = set()
    for cp in range(N_CP):
        d = canonical_decomposition(chr(cp))
        if d is not None and len(d) == 2:
            seconds.add(d[1])
    props = [0] * N_CP
    for cp in range(N_CP):
        c = chr(cp)
        p = cls[cp] << CLASS_SHIFT
        if cp not in SURROGATES:
            if cp == 0 or cp == 0xFFFD or _is_control(c):
                p |= DROP
            elif _is_whitespace(c):
                p |= BLANK
            if basic._is_chinese_char(cp):
                p |= CJK
            if c.isspace():
                p |= PYSPACE
            if cased[cp]:
                p |= CASED
            if ignorable[cp]:
                p |= CASE_IGNORABLE
            hangul = HANGUL_S <= cp < HANGUL_S + HANGUL_SCOUNT
            jamo = (HANGUL_V <= cp < HANGUL_V + HANGUL_VCOUNT
                    or HANGUL_T < cp < HANGUL_T + HANGUL_TCOUNT)
            if (canonical_decomposition(c) is not None or unicodedata.combining(c)
                    or cp in seconds or hangul or jamo):
                p |= NFC_TOUCH
        else:
            p |= DROP  # never produced by UTF-8 decoding; _is_control would drop them (Cs)
        props[cp] = p
    return props


def ranges(values, skip=0):
    """Runs of equal value as (first, last, value), leaving out runs whose value is skip."""
    out = []
    start = 0
    for cp in range(1, N_CP + 1):
        if cp == N_CP or values[cp] != values[start]:
            if values[start] != skip:
                out.append((start, cp - 1, values[start]))
            start = cp
    return out


def lowercase_tables():
    """Single-code-point mappings as runs (first, last, step, delta); longer ones listed whole."""
    singles, multi = [], []
    for cp in range(N_CP):
        if cp in SURROGATES:
            continue
        low = chr(cp).lower()
        if low == chr(cp):
            continue
        if len(low) == 1:
            singles.append((cp, ord(low) - cp))
        else:
            multi.append((cp, [ord(x) for x in low]))
    runs = []
    for cp, delta in singles:
        if runs:
            first, last, step, d = runs[-1]
            if d == delta and (step == 0 or cp - last == step) and cp - last in (1, 2):
                runs[-1] = (first, cp, cp - last, d)
                continue
        runs.append((cp, cp, 0, delta))
    return [(f, l, s or 1, d) for f, l, s, d in runs], multi


def nfc_tables():
    """One-level canonical decompositions and the primary composites (pairs NFC recombines)."""
    decomp, compose = [], []
    max_len = 3  # a Hangul syllable decomposes to three jamo
    for cp in range(N_CP):
        if cp in SURROGATES or HANGUL_S <= cp < HANGUL_S + HANGUL_SCOUNT:
            continue
        d = canonical_decomposition(chr(cp))
        if d is None:
            continue
        if len(d) > 2:
            sys.exit(f"U+{cp:04X}: canonical decomposition longer than two")
        decomp.append((cp, d[0], d[1] if len(d) == 2 else 0))
        max_len = max(max_len, len(full_decomposition(cp)))
        composes = len(d) == 2 and unicodedata.normalize("NFC", chr(cp)) == chr(cp)
        if composes:
            if unicodedata.normalize("NFC", chr(d[0]) + chr(d[1])) != chr(cp):
                sys.exit(f"U+{cp:04X}: pair does not recompose")
            compose.append((d[0], d[1], cp))
    compose.sort()
    ccc = ranges([unicodedata.combining(chr(cp)) if cp not in SURROGATES else 0
                  for cp in range(N_CP)])
    return decomp, compose, ccc, max_len


def rows(items, fmt):
    """Table rows packed into lines of at most 100 columns."""
    lines, line = [], "   "
    for item in items:
        cell = " " + fmt(item) + ","
        if len(line) + len(cell) > 100:
            lines.append(line)
            line = "   "
        line += cell
    lines.append(line)
    return "\n".join(lines)


def literal_folds():
    """Code points other than c itself that the IGNORECASE pattern accepts for literal c."""
    out = []
    for c in sorted(set(PATTERN_LITERALS)):
        for m in regex.finditer(regex.escape(c), ALL_CHARS, regex.IGNORECASE):
            if m.start() != ord(c):
                out.append((ord(c), m.start()))
    # tokenizer.c tries the literals only where '<' or an apostrophe stands.
    if any(chr(lit) in "<'" for lit, _ in out):
        sys.exit("the pattern's first characters match more than themselves")
    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dst = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "engine", "unicode_tables.c")
    props = ranges(properties())
    low_runs, low_multi = lowercase_tables()
    decomp, compose, ccc, max_decomp = nfc_tables()
    folds = literal_folds()
    max_lower = max([1] + [len(m) for _, m in low_multi])

    text = f"""/* unicode_tables.c: Unicode data of the CLIP tokenizer (tokenizer.c), GENERATED by
 * scripts/gen_unicode_tables.py from the reference it must match; do not edit by hand.
 * Python unicodedata {unicodedata.unidata_version} (cleaning, str.isspace, str.lower, NFC);
 * regex {regex.__version__} (the pre-tokenisation classes \\p{{L}}, \\p{{N}}, \\s, IGNORECASE).
 */
#include "engine/unicode_tables.h"

#if SDXS_UCD_MAX_DECOMPOSITION != {max_decomp} || SDXS_UCD_MAX_LOWER != {max_lower}
#error "engine/unicode_tables.h disagrees with the generated tables"
#endif

const sdxs_ucd_range sdxs_ucd_props[] = {{
{rows(props, lambda r: "{0x%X, 0x%X, 0x%X}" % r)}
}};
const size_t sdxs_ucd_props_len = SDXS_ARRAY_LEN(sdxs_ucd_props);

const sdxs_ucd_range sdxs_ucd_ccc[] = {{
{rows(ccc, lambda r: "{0x%X, 0x%X, %d}" % r)}
}};
const size_t sdxs_ucd_ccc_len = SDXS_ARRAY_LEN(sdxs_ucd_ccc);

const sdxs_ucd_lower_run sdxs_ucd_lower[] = {{
{rows(low_runs, lambda r: "{0x%X, 0x%X, %d, %d}" % r)}
}};
const size_t sdxs_ucd_lower_len = SDXS_ARRAY_LEN(sdxs_ucd_lower);

const sdxs_ucd_lower_multi sdxs_ucd_lower_long[] = {{
{rows(low_multi, lambda m: "{0x%X, %d, {%s}}" % (m[0], len(m[1]),
                                                  ", ".join("0x%X" % x for x in m[1])))}
}};
const size_t sdxs_ucd_lower_long_len = SDXS_ARRAY_LEN(sdxs_ucd_lower_long);

const sdxs_ucd_decomposition sdxs_ucd_decompositions[] = {{
{rows(decomp, lambda d: "{0x%X, 0x%X, 0x%X}" % d)}
}};
const size_t sdxs_ucd_decompositions_len = SDXS_ARRAY_LEN(sdxs_ucd_decompositions);

const sdxs_ucd_composition sdxs_ucd_compositions[] = {{
{rows(compose, lambda d: "{0x%X, 0x%X, 0x%X}" % d)}
}};
const size_t sdxs_ucd_compositions_len = SDXS_ARRAY_LEN(sdxs_ucd_compositions);

const sdxs_ucd_fold sdxs_ucd_literal_folds[] = {{
{rows(folds, lambda f: "{0x%X, 0x%X}" % f)}
}};
const size_t sdxs_ucd_literal_folds_len = SDXS_ARRAY_LEN(sdxs_ucd_literal_folds);
"""
    with open(dst, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{dst}: {len(props)} property ranges, {len(ccc)} combining-class ranges, "
          f"{len(low_runs)} lowercase runs, {len(low_multi)} long lowercase mappings, "
          f"{len(decomp)} decompositions, {len(compose)} compositions, {len(folds)} folds")


if __name__ == "__main__":
    main()
