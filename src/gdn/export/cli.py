"""`gdn-export`: a trained run's model as one safetensors file, or as a folder that transformers loads.

    gdn-export outputs/runs/<date>/<time> model.safetensors      # the weights, LanguageModel names
    gdn-export outputs/runs/<date>/<time> --hf my-model          # config.json, modeling code, weights, tokenizer

RUN is a run folder, its checkpoints/ folder, one checkpoint, or a .safetensors export. The --hf folder loads with
AutoModelForCausalLM.from_pretrained("my-model", trust_remote_code=True) where the gdn package is installed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gdn.run_folder import locate, read_checkpoint


def export_safetensors(run_path: str | Path, output: str | Path) -> Path:
    """The model weights of a run (its latest checkpoint) or of one checkpoint, as one safetensors file."""
    from safetensors.torch import save_file

    _, checkpoint = locate(Path(run_path).expanduser().resolve())
    weights, info = read_checkpoint(checkpoint)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in weights.items()}, str(output),
              metadata={"checkpoint": str(info.path)})
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gdn-export", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("run", help="a run folder, its checkpoints/ folder, one checkpoint or a .safetensors file")
    parser.add_argument("output", nargs="?", help="the .safetensors file to write")
    parser.add_argument("--hf", metavar="DIR", help="write a transformers folder here instead")
    args = parser.parse_args(argv)
    if (args.output is None) == (args.hf is None):
        parser.error("give either an OUTPUT .safetensors file or --hf DIR (not both)")
    if args.hf is not None:
        try:
            from gdn.export.huggingface import export_huggingface
        except ModuleNotFoundError as error:
            if error.name != "transformers":
                raise
            parser.error("--hf needs transformers: pip install 'gdn[hf]'")
    try:
        if args.hf is not None:
            path = export_huggingface(args.run, args.hf)
            if not (path / "tokenizer.json").is_file():
                print("no tokenizer: this run trained on token ids (not text); generate() takes ids")
        else:
            path = export_safetensors(args.run, args.output)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
