"""Writes a CLIP tokenizer folder (vocab.json, merges.txt, tokenizer_config.json,
special_tokens_map.json) from the BPE merge list shipped inside the open-clip-torch package.

The 49,408-entry vocabulary is: the 256 byte symbols of GPT-2's byte-to-unicode table, the same
256 with '</w>' appended, one entry per merge (the first 48,894 merges, each the two halves joined),
then <|startoftext|> and <|endoftext|>. This is how the public CLIP tokenizer files were built, so
token ids here are the real ones.
"""
import gzip
import importlib.util
import json
import os

N_MERGES = 49408 - 256 * 2 - 2


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable unicode characters."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def bpe_merges():
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        raise RuntimeError("open-clip-torch is not installed (scripts/setup installs it)")
    path = os.path.join(spec.submodule_search_locations[0], "bpe_simple_vocab_16e6.txt.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    # The first line is a version header; then one merge per line.
    return [tuple(line.split()) for line in lines[1:1 + N_MERGES]]


def write_tokenizer(dst, pad_token="<|endoftext|>"):
    """Writes the four tokenizer files into dst; pad_token is '<|endoftext|>' for CLIP-L
    models and '!' for the SD 2.x (OpenCLIP ViT-H) text tower."""
    os.makedirs(dst, exist_ok=True)
    merges = bpe_merges()
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    with open(os.path.join(dst, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({tok: i for i, tok in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(dst, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
    }
    with open(os.path.join(dst, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    config = dict(special, tokenizer_class="CLIPTokenizer", model_max_length=77,
                  do_lower_case=True, errors="replace", add_prefix_space=False)
    with open(os.path.join(dst, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)


if __name__ == "__main__":
    import sys
    write_tokenizer(sys.argv[1], *(sys.argv[2:3]))
