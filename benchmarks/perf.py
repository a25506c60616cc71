"""Performance, side by side in one process: the shared loop against Seq2SeqTrainer + peft,
batched against per-example generation, the metrics, and peak memory per method.

Model: a randomly initialised model of codet5-small's shape (nothing downloaded). Data: the
bundled sample's real docstrings and code (long-tailed lengths), tokenised with the demo
tokenizer, batch 8. Prints a table and writes JSON.

FLOPs are counted as matmul work: a linear layer with P weights costs 2*P per token forward and
4*P per token backward (gradient of the input, which every layer above a trained one needs, and
of the weight, for trained weights only: 2*P); encoder layers see source tokens, decoder layers
and the LM head see target tokens; attention-score matmuls (short sequences) are left out, so
the figure is a slight underestimate. The peak is the best fp32 `torch.mm` rate measured here.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import methods  # noqa: E402
from benchmark.config import DataConfig, TrainConfig  # noqa: E402
from benchmark.data import load_tasks  # noqa: E402
from benchmark.evaluation import generate  # noqa: E402
from benchmark.models import DEMO_TOKENIZER  # noqa: E402
from benchmark.training import encode, make_accelerator, train  # noqa: E402

CODET5_CONFIG = ROOT / "tests" / "fixtures" / "codet5-small-config.json"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """Best fp32 matmul FLOP/s over a few sizes."""
    best = 0.0
    for n in (size // 2, size, size * 2 if device.type == "cuda" else size):
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        torch.mm(a, b)
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        sync(device)
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start))
    return best


def base_model(device: torch.device):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config.from_json_file(CODET5_CONFIG)).to(device)


def features(tokenizer, count: int):
    config = DataConfig(source="sample", train_size=count, val_size=0, eval_size=1)
    task = load_tasks(["python"], config)["python"]
    return encode(task.train, tokenizer, 64, 128), task


def step_flops(model, feats, n_steps: int, batch: int) -> float:
    """Matmul FLOPs of the training steps that saw `feats[: n_steps * batch]` (see module doc)."""
    enc = dec = head = enc_trained = dec_trained = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            weights = module.weight.numel()
            trained = module.weight.requires_grad
            if "lm_head" in name:
                head += weights
            elif ".encoder." in f".{name}":
                enc += weights
                enc_trained += weights * trained
            else:
                dec += weights
                dec_trained += weights * trained
    seen = feats[: n_steps * batch]
    src = sum(len(f.input_ids) for f in seen)
    tgt = sum(len(f.labels) for f in seen)
    return (
        src * (4 * enc + 2 * enc_trained)
        + tgt * (4 * dec + 2 * dec_trained)
        + tgt * 4 * head  # the tied LM head: logits and the gradient flowing back
    )


def fresh_model(method_name: str, device: torch.device):
    """The method applied to a new base, in a new accelerate state (the precision is fixed per
    process state, so each measurement starts its own)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    return methods.get_method(method_name).apply(base_model(device))


def bench_loop(
    method_name: str, feats, steps: int, device: torch.device, warmup: int = 2, **options
) -> dict:
    """The loop's figures; `options` are TrainConfig settings (compile, mixed_precision)."""
    model = fresh_model(method_name, device)
    common = dict(epochs=1, batch_size=8, learning_rate=1e-4, **options)
    config = TrainConfig(max_steps=steps, seed=42, **common)
    warm = TrainConfig(max_steps=warmup, seed=1, **common)
    # Warm-up: allocator, kernels, and for `compile` the compilation (timed apart).
    started = time.perf_counter()
    train(model, feats, [], 0, warm, make_accelerator(warm))
    warmup_s = time.perf_counter() - started
    losses: list[float] = []
    result = train(
        model,
        feats,
        [],
        0,
        config,
        make_accelerator(config),
        log=lambda m, s: losses.append(m["train/loss"]) if "train/loss" in m else None,
    )
    return {
        "samples_per_s": result.samples_per_s,
        "tokens_per_s": result.tokens_per_s,
        "seconds": result.train_time_s,
        "mean_loss": sum(losses) / len(losses),
        "flops": step_flops(model, feats, steps, 8),
        "warmup_s": warmup_s,
    }


# Profiler op names by what they do; everything else (elementwise ops, layer norms, the
# optimizer's arithmetic, copies) is "other".
OP_GROUPS = {
    "matmul": ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"),
    "dropout masks (random numbers)": ("aten::bernoulli_", "aten::uniform_", "aten::rand_like"),
    "softmax and cross-entropy": (
        "aten::_log_softmax",
        "aten::_log_softmax_backward_data",
        "aten::_softmax",
        "aten::_softmax_backward_data",
        "aten::nll_loss_forward",
        "aten::nll_loss_backward",
    ),
}


def profile_loop(method_name: str, feats, steps: int, device: torch.device) -> dict:
    """Where the loop's time goes: a few steps of the real loop under torch.profiler, its ops'
    self time grouped by kind (shares of the profiled total). Matmul FLOPs are the profiler's
    own count of the executed matmuls (padding included), so `matmul_gflops` is the rate the
    matmuls themselves reach at these shapes: the loop cannot beat it even with every other op
    taking no time. `uncounted_share` is the part of that executed work the loop's FLOP count
    leaves out: padding, and the attention-score matmuls."""
    from torch.profiler import ProfilerActivity, profile

    model = fresh_model(method_name, device)
    seen = feats[: steps * 8]  # one epoch over exactly these, so the useful FLOPs are exact
    config = TrainConfig(epochs=1, batch_size=8, learning_rate=1e-4, seed=42)
    warm = TrainConfig(epochs=1, batch_size=8, max_steps=2, seed=1)
    train(model, seen, [], 0, warm, make_accelerator(warm))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, with_flops=True) as prof:
        train(model, seen, [], 0, config, make_accelerator(config))
    on_device = device.type == "cuda"
    times = {group: 0.0 for group in OP_GROUPS} | {"other": 0.0}
    matmul_flops = 0.0
    for event in prof.key_averages():
        seconds = (event.self_device_time_total if on_device else event.self_cpu_time_total) / 1e6
        group = next((g for g, names in OP_GROUPS.items() if event.key in names), "other")
        times[group] += seconds
        if group == "matmul":
            matmul_flops += event.flops
    total = sum(times.values())
    counted = step_flops(model, seen, steps, 8)
    return {
        "seconds_profiled": total,
        "shares": {group: t / total for group, t in times.items()},
        "matmul_gflops": matmul_flops / times["matmul"] / 1e9,
        "uncounted_share": max(0.0, 1 - counted / matmul_flops),
    }


def bench_trainer(feats, steps: int, tokenizer, device: torch.device) -> dict:
    """Hugging Face's Seq2SeqTrainer with peft LoRA on the same data, defaults otherwise."""
    import datasets
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    model = methods.get_method("lora").apply(base_model(device))
    dataset = datasets.Dataset.from_list(
        [{"input_ids": f.input_ids, "labels": f.labels} for f in feats]
    )
    args = Seq2SeqTrainingArguments(
        output_dir=str(Path("/tmp") / "adaptbench-perf-trainer"),
        per_device_train_batch_size=8,
        max_steps=steps,
        learning_rate=1e-4,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        seed=42,
        use_cpu=device.type == "cpu",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, padding=True),
    )
    sync(device)
    start = time.perf_counter()
    output = trainer.train()
    sync(device)
    seconds = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "samples_per_s": steps * 8 / seconds,
        "seconds": seconds,
        "mean_loss": sum(losses) / len(losses) if losses else output.training_loss,
    }


def bench_generation(task, tokenizer, device: torch.device, count: int) -> dict:
    model = base_model(device).eval()
    prompts = [ex.docstring for ex in task.train[:count]]
    start = time.perf_counter()
    generate(model, tokenizer, prompts, 64, max_new_tokens=32, batch_size=32, progress=False)
    batched = time.perf_counter() - start
    start = time.perf_counter()
    for prompt in prompts:
        generate(model, tokenizer, [prompt], 64, max_new_tokens=32, batch_size=1, progress=False)
    single = time.perf_counter() - start
    return {
        "batched_examples_per_s": count / batched,
        "per_example_examples_per_s": count / single,
        "ratio": single / batched,
    }


def peak_memory(method_name: str, steps: int) -> float:
    """Peak RSS (MB) of a fresh process training `method_name` (a peak never goes down, so
    each method needs a process of its own)."""
    out = subprocess.run(
        [sys.executable, __file__, "--peak-rss-of", method_name, "--steps", str(steps)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per run")
    parser.add_argument("--generation-examples", type=int, default=48)
    parser.add_argument("--metric-pairs", type=int, default=5000)
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: profile,trainer,methods,generation,metrics,memory",
    )
    parser.add_argument(
        "--variants",
        default="",
        help="also time the LoRA loop with these options, comma-separated: compile (torch.compile, "
        "compilation timed apart), bf16 (autocast)",
    )
    parser.add_argument("--json", default="perf.json", help="where to write the figures")
    parser.add_argument("--peak-rss-of", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    from transformers import AutoTokenizer

    if args.peak_rss_of:  # a child process of peak_memory()
        tokenizer = AutoTokenizer.from_pretrained(DEMO_TOKENIZER)
        feats, _ = features(tokenizer, args.steps * 8 + 16)
        bench_loop(args.peak_rss_of, feats, args.steps, torch.device("cpu"))
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
        status = Path("/proc/self/status").read_text()
        peak_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")
        )
        print(peak_kb / 1024)
        return

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(DEMO_TOKENIZER)
    feats, task = features(tokenizer, args.steps * 8 + 16)
    report: dict = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor(),
    }
    report["matmul_peak_gflops"] = matmul_peak(device) / 1e9
    print(f"fp32 matmul peak: {report['matmul_peak_gflops']:.1f} GFLOP/s on {device}")

    loop = bench_loop("lora", feats, args.steps, device)
    loop["gflops"] = loop["flops"] / loop["seconds"] / 1e9
    loop["share_of_peak"] = loop["gflops"] / report["matmul_peak_gflops"]
    report["loop_lora"] = loop
    print(
        f"loop lora: {loop['samples_per_s']:.2f} samples/s, {loop['tokens_per_s']:.0f} tokens/s, "
        f"{loop['gflops']:.1f} GFLOP/s = {100 * loop['share_of_peak']:.0f} % of peak, "
        f"mean loss {loop['mean_loss']:.3f}"
    )
    variants = {"compile": {"compile": True}, "bf16": {"mixed_precision": "bf16"}}
    for name in [v for v in args.variants.split(",") if v]:
        if name not in variants:
            parser.error(f"unknown variant {name!r}: choose from {', '.join(variants)}")
        result = bench_loop("lora", feats, args.steps, device, warmup=4, **variants[name])
        result["gflops"] = result["flops"] / result["seconds"] / 1e9
        result["share_of_peak"] = result["gflops"] / report["matmul_peak_gflops"]
        result["vs_plain_loop"] = result["samples_per_s"] / loop["samples_per_s"]
        report[f"loop_lora_{name}"] = result
        print(
            f"loop lora + {name}: {result['samples_per_s']:.2f} samples/s "
            f"({result['vs_plain_loop']:.2f}x the plain loop), "
            f"{100 * result['share_of_peak']:.0f} % of peak, mean loss {result['mean_loss']:.3f}, "
            f"warm-up {result['warmup_s']:.0f} s"
        )
    if "profile" not in skip:
        prof = profile_loop("lora", feats, min(args.steps, 6), device)
        prof["matmul_share_of_peak"] = prof["matmul_gflops"] / report["matmul_peak_gflops"]
        report["loop_lora_profile"] = prof
        print(
            "where the loop's time goes (lora, profiled): "
            + ", ".join(f"{g} {100 * v:.0f} %" for g, v in prof["shares"].items())
            + f"; the matmuls alone run at {prof['matmul_gflops']:.1f} GFLOP/s = "
            f"{100 * prof['matmul_share_of_peak']:.0f} % of peak at these shapes; "
            f"{100 * prof['uncounted_share']:.0f} % of the executed matmul work is padding or "
            "attention scores (not counted)"
        )
    if "trainer" not in skip:
        trainer = bench_trainer(feats, args.steps, tokenizer, device)
        report["trainer_lora"] = trainer
        report["loop_vs_trainer"] = loop["samples_per_s"] / trainer["samples_per_s"]
        print(
            f"Seq2SeqTrainer + peft lora: {trainer['samples_per_s']:.2f} samples/s, mean loss "
            f"{trainer['mean_loss']:.3f}; loop / trainer = {report['loop_vs_trainer']:.2f}x"
        )
    if "methods" not in skip:
        for name in ("full_layer", "hybrid", "ffn_expansion"):
            result = bench_loop(name, feats, args.steps, device)
            result["gflops"] = result["flops"] / result["seconds"] / 1e9
            report[f"loop_{name}"] = result
            print(
                f"loop {name}: {result['samples_per_s']:.2f} samples/s, "
                f"{result['gflops']:.1f} GFLOP/s"
            )
    if "generation" not in skip:
        report["generation"] = bench_generation(task, tokenizer, device, args.generation_examples)
        g = report["generation"]
        print(
            f"generation: batched {g['batched_examples_per_s']:.2f} ex/s, per-example "
            f"{g['per_example_examples_per_s']:.2f} ex/s, ratio {g['ratio']:.1f}x"
        )
    if "metrics" not in skip:
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "bench_metrics.py"),
                "--pairs",
                str(args.metric_pairs),
                "--json",
                "/tmp/adaptbench-metrics.json",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        report["metrics"] = json.loads(Path("/tmp/adaptbench-metrics.json").read_text())
        seconds = report["metrics"]["seconds"]
        total = sum(sum(per_language.values()) for per_language in seconds.values())
        slowest = max(seconds, key=lambda name: sum(seconds[name].values()))
        print(
            f"metrics on {args.metric_pairs} pairs per language: {total:.1f} s for all of them "
            f"on both languages (slowest: {slowest}, {sum(seconds[slowest].values()):.1f} s)"
        )
    if "memory" not in skip and device.type == "cpu":
        report["peak_rss_mb"] = {
            name: peak_memory(name, 3) for name in ("lora", "full_layer", "hybrid", "ffn_expansion")
        }
        print("peak RSS (MB):", {k: round(v) for k, v in report["peak_rss_mb"].items()})
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
