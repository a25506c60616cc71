"""Train the demo tokenizer: byte-level BPE on the bundled sample's training split only.

Byte-level BPE keeps every space, tab and newline, so decoding gives back code exactly. Special
tokens take codet5's ids (<pad>=0, <s>=1, </s>=2, <unk>=3); single sequences end with </s>.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmark.data import STRIPPERS, first_paragraph  # noqa: E402

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def training_texts(sample: Path) -> list[str]:
    """Docstring summaries and docstring-free code of the train split, in a fixed order."""
    texts = []
    for path in sorted(sample.glob("*/final/jsonl/train/*.jsonl.gz")):
        with gzip.open(path, "rt") as fh:
            for line in fh:
                row = json.loads(line)
                texts.append(first_paragraph(row["docstring"]))
                texts.append(STRIPPERS[row["language"]](row["code"]))
    return texts


def build(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sample", default=str(ROOT / "data" / "sample"), help="sample folder")
    parser.add_argument(
        "--out", default=str(ROOT / "benchmark" / "assets" / "demo-tokenizer"), help="output"
    )
    parser.add_argument("--vocab-size", type=int, default=8000, help="vocabulary size")
    args = parser.parse_args()
    start = time.perf_counter()
    texts = training_texts(Path(args.sample))
    tokenizer = build(texts, args.vocab_size)
    tokenizer.save_pretrained(args.out)
    codes = texts[1::2][:200]
    exact = sum(
        tokenizer.decode(tokenizer(c)["input_ids"], skip_special_tokens=True) == c for c in codes
    )
    print(f"{len(tokenizer)} tokens from {len(texts)} texts; round trip exact on {exact}/200")
    print(f"wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
