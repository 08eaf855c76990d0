"""Helpers of benchmarks/product_check.sh (issue 13, items 5 and 6), one subcommand each:

    python3 benchmarks/product_check.py requirements NAME...        # unmet Requires-Dist of NAME and its needs
    python3 benchmarks/product_check.py corpus OUT.jsonl --max-mb 120  # site-packages' .py files, one per line
    python3 benchmarks/product_check.py tokenize CORPUS --cache-dir D --vocab-size V --seq-len L
    python3 benchmarks/product_check.py agree --tracking-uri URI [URI ...] --experiments agree [baselines] --out agree.json
"""
import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path


def unmet_requirements(roots: list[str]) -> list[str]:
    """Every requirement of `roots` and of their needs (extras left out) not met by what sys.path holds."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    problems, seen, stack = [], set(), list(roots)
    while stack:
        name = canonicalize_name(stack.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: not installed")
            continue
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                have = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                problems.append(f"{name} needs {req}: not installed")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{name} needs {req}: {have} installed")
            stack.append(req.name)
    return problems


def site_packages() -> Path:
    """The folder that holds torch: the image's packages on the GPU machine, also when this runs in the product
    venv (whose own site-packages hold only gdn's link)."""
    return Path(importlib.util.find_spec("torch").origin).parents[1]


def write_corpus(out: Path, max_mb: float, max_file_bytes: int = 1 << 20) -> tuple[int, int]:
    """The .py files under site-packages in sorted path order, one {"text": ...} line each, until max_mb of text.
    Files over max_file_bytes (generated tables) and files that are not UTF-8 are left out."""
    root, budget = site_packages(), int(max_mb * 1e6)
    documents = written = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for path in sorted(root.rglob("*.py")):
            if not path.is_file() or path.stat().st_size > max_file_bytes:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if not text.strip():
                continue
            f.write(json.dumps({"text": text}) + "\n")
            documents, written = documents + 1, written + len(text.encode())
            if written >= budget:
                break
    print(f"corpus: {documents} documents, {written / 1e6:.1f} MB of text from {root} -> {out}")
    return documents, written


def tokenize(corpus: str, cache_dir: str, vocab_size: int, seq_len: int) -> None:
    """Train the tokenizer and tokenise the corpus into data=text's cache, as the first training job would."""
    from gdn.data import TextData

    data = TextData(corpus, vocab_size=vocab_size, seq_len=seq_len, batch_size=1, eval_sequences=64,
                    cache_dir=cache_dir, num_proc=max(1, min(16, (os.cpu_count() or 2) - 2)))
    tokens = data.num_train_rows * seq_len
    print(f"tokenised: {data.num_train_rows} train rows of {seq_len} ({tokens / 1e6:.1f} M tokens), "
          f"vocab {data.vocab_size}, tokenizer {data.tokenizer_path}")


def agreement(tracking_uris: list[str], experiments: list[str], out: Path) -> dict:
    """Per model, the train loss of run `<model>-triton` against `<model>-torch`, and against `<model>-fp32` (the
    Triton run without bf16 autocast) where there is one: the newest run of each name over the stores and
    experiments given (the concurrent runs of product_check.sh agree each keep a store of their own). A sweep's
    child named after its architecture alone ("gdn", at the defaults) is that model's Triton run."""
    from mlflow.tracking import MlflowClient

    found_runs = []
    for uri in tracking_uris:
        client = MlflowClient(uri)
        for experiment in experiments:
            found = client.get_experiment_by_name(experiment)
            if found is not None:
                found_runs += [(client, run) for run in client.search_runs([found.experiment_id])]
    if not found_runs:
        raise SystemExit(f"no experiment {experiments} in {tracking_uris}: run the agree trainings first")
    losses = {}
    for client, run in sorted(found_runs, key=lambda pair: -pair[1].info.start_time):
        name = run.info.run_name if "-" in run.info.run_name else f"{run.info.run_name}-triton"
        if name not in losses:
            losses[name] = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    result = {}
    for name in sorted(losses):
        model, _, backend = name.rpartition("-")
        if backend != "triton" or f"{model}-torch" not in losses:
            continue
        result[model] = compare_curves(model, losses[name], losses[f"{model}-torch"], "torch")
        if f"{model}-fp32" in losses:  # the yardstick: how far bf16 alone moves the Triton run's curve
            result[model]["bf16_effect"] = compare_curves(model, losses[name], losses[f"{model}-fp32"], "fp32")
    if not result:
        raise SystemExit(f"no <model>-triton / <model>-torch pair of runs in {experiments}: found {sorted(losses)}")
    out.write_text(json.dumps(result, indent=2) + "\n")
    if any(entry["steps"] == 0 for entry in result.values()):
        raise SystemExit("a pair of runs has no common step: see the training logs")
    return result


def compare_curves(model: str, triton: dict[int, float], other: dict[int, float], label: str) -> dict:
    """The train loss of the Triton run against another run of the same model, seed and batches (`label`): the
    largest and mean differences, the mean over the logged steps of the last 50, and both curves every 20 steps."""
    steps = sorted(set(triton) & set(other))
    if not steps:
        print(f"{model}: no step logged by both runs (triton {len(triton)}, {label} {len(other)})")
        return {"steps": 0, "steps_triton": len(triton), f"steps_{label}": len(other)}
    diffs = [triton[s] - other[s] for s in steps]
    worst = max(range(len(steps)), key=lambda i: abs(diffs[i]))
    last = [d for d, s in zip(diffs, steps) if s > steps[-1] - 50]  # the logged steps of the last 50
    entry = {
        "steps": len(steps), "max_abs_diff": abs(diffs[worst]), "at_step": steps[worst],
        "mean_rel_diff": sum(abs(d) / abs(other[s]) for d, s in zip(diffs, steps)) / len(steps),
        "mean_diff_last_50": sum(last) / len(last), "final_loss_triton": triton[steps[-1]],
        f"final_loss_{label}": other[steps[-1]], "finite": all(v == v for v in [*triton.values(), *other.values()]),
        "curves": {str(s): [round(triton[s], 4), round(other[s], 4)] for s in steps if s == 1 or s % 20 == 0},
    }
    print(f"{model} triton vs {label}: {len(steps)} steps, max |difference| {entry['max_abs_diff']:.4f} at step "
          f"{steps[worst]}, mean relative {entry['mean_rel_diff']:.2e}, mean triton - {label} over the last 50 "
          f"steps {entry['mean_diff_last_50']:+.4f}, final {triton[steps[-1]]:.4f} / {other[steps[-1]]:.4f}")
    return entry


def sweep_runs(tracking_uris: list[str], out: Path) -> list[dict]:
    """Every run of the stores: name, status, steps, the last train loss, any non-finite loss, and the data-wait
    share of the step time (mean and max over the logged intervals; issue 14 asks for under 1%)."""
    from mlflow.tracking import MlflowClient

    rows = []
    for uri in tracking_uris:
        client = MlflowClient(uri)
        for experiment in client.search_experiments():
            for run in client.search_runs([experiment.experiment_id]):
                loss = client.get_metric_history(run.info.run_id, "train/loss")
                wait = [m.value for m in client.get_metric_history(run.info.run_id, "train/data_wait_share")]
                rows.append({
                    "run": run.info.run_name, "status": run.info.status,
                    "steps": max((m.step for m in loss), default=0), "last_train_loss": loss[-1].value if loss else None,
                    "non_finite_losses": sum(not (m.value == m.value and abs(m.value) != float("inf")) for m in loss),
                    "data_wait_share_mean": sum(wait) / len(wait) if wait else None,
                    "data_wait_share_max": max(wait, default=None), "tags_non_finite": run.data.tags.get("non_finite"),
                })
                print(json.dumps(rows[-1]))
    out.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    requirements = commands.add_parser("requirements")
    requirements.add_argument("names", nargs="+")
    corpus = commands.add_parser("corpus")
    corpus.add_argument("out", type=Path)
    corpus.add_argument("--max-mb", type=float, default=120)
    tok = commands.add_parser("tokenize")
    tok.add_argument("corpus")
    tok.add_argument("--cache-dir", required=True)
    tok.add_argument("--vocab-size", type=int, required=True)
    tok.add_argument("--seq-len", type=int, required=True)
    agree = commands.add_parser("agree")
    agree.add_argument("--tracking-uri", required=True, nargs="+")
    agree.add_argument("--experiments", nargs="+", default=["agree"])
    agree.add_argument("--out", type=Path, required=True)
    runs = commands.add_parser("runs")
    runs.add_argument("--tracking-uri", required=True, nargs="+")
    runs.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "runs":
        sweep_runs(args.tracking_uri, args.out)
    elif args.command == "requirements":
        problems = unmet_requirements(args.names)
        print("\n".join(problems) if problems else f"requirements of {', '.join(args.names)}: all met")
        sys.exit(1 if problems else 0)
    elif args.command == "corpus":
        write_corpus(args.out, args.max_mb)
    elif args.command == "tokenize":
        tokenize(args.corpus, args.cache_dir, args.vocab_size, args.seq_len)
    else:
        agreement(args.tracking_uri, args.experiments, args.out)


if __name__ == "__main__":
    main()
