"""`gdn-models`: every architecture in conf/model at one scale: layer pattern, parameters, FLOPs per token.

    gdn-models                                         # the models at their own config sizes (no scale)
    gdn-models scale=1.3b                              # at conf/scale/1.3b (every model parameter-matched)
    gdn-models scale=1.3b format=json                  # the same as a JSON list (name, params, flops_per_token, pattern)
    gdn-models scale=1.3b data.vocab_size=32000 data.seq_len=4096    # any other key=value is a Hydra override

Each model is composed from the real Hydra config (conf/train.yaml with model=NAME [scale=NAME]) and built on the
meta device (no memory); FLOPs per token are the forward count of gdn.models.flops at the configured data.seq_len.
Parameters count the embedding at the configured data.vocab_size (MQAR's 64 by default; the paper's is 32000).
"""
from __future__ import annotations

import json
import sys

import torch
from hydra import compose
from hydra.utils import instantiate

from gdn.config import CONF_DIR, config_tree, group_choices, missing_scale_size
from gdn.models.flops import UnknownMixerError, flops_per_token

FORMATS = ("table", "json")
USAGE = "usage: gdn-models [scale=NAME] [format=table|json] [hydra.key=value ...]"


def parse_args(argv: list[str]) -> dict:
    """`scale=NAME` (default: none), `format=table|json`; every other `key=value` is kept as a Hydra override."""
    args: dict = {"scale": None, "format": "table", "overrides": []}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise SystemExit(f"error: unknown argument {arg!r}; {USAGE}")
        if key in ("scale", "format"):
            args[key] = value
        else:
            args["overrides"].append(arg)
    if args["format"] not in FORMATS:
        raise SystemExit(f"error: format must be one of {', '.join(FORMATS)}, got {args['format']!r}")
    if args["scale"] is not None and args["scale"] not in group_choices(CONF_DIR, "scale"):
        raise SystemExit(f"error: unknown scale {args['scale']!r}; choices: {', '.join(group_choices(CONF_DIR, 'scale'))}")
    return args


def describe_model(name: str, scale: str | None, overrides: list[str]) -> dict:
    """Compose model=NAME at the scale (inside initialize_config_dir), build it on the meta device, count its
    parameters and forward FLOPs per token."""
    error = missing_scale_size({"scale": scale, "model": name}, CONF_DIR)
    if error:
        raise SystemExit(f"error: {error}")
    scale_override = [] if scale is None else [f"scale={scale}"]
    cfg = compose(config_name="train", overrides=[f"model={name}", "logging=none", *scale_override, *overrides])
    with torch.device("meta"):
        model = instantiate(cfg.model, _convert_="all")
    try:
        flops = flops_per_token(model, cfg.data.seq_len)
    except UnknownMixerError as error:
        print(f"warning: model {name}: {error}", file=sys.stderr)
        flops = None
    return {"name": name, "params": model.num_parameters(), "flops_per_token": flops,
            "pattern": list(cfg.model.layers), "n_layers": cfg.model.n_layers, "d_model": cfg.model.d_model,
            "seq_len": cfg.data.seq_len}


def format_table(rows: list[dict]) -> str:
    header = ("model", "pattern", "layers", "d_model", "params", "FLOPs/token", "seq_len")
    lines = [header] + [
        (row["name"], "[" + ", ".join(row["pattern"]) + "]", str(row["n_layers"]), str(row["d_model"]),
         f"{row['params']:,}",
         "n/a" if row["flops_per_token"] is None else f"{row['flops_per_token']:,}", str(row["seq_len"]))
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with config_tree():
        rows = [describe_model(name, args["scale"], args["overrides"]) for name in group_choices(CONF_DIR, "model")]
    if args["format"] == "json":
        print(json.dumps([{key: row[key] for key in ("name", "params", "flops_per_token", "pattern")}
                          for row in rows], indent=2))
    else:
        print(f"scale={args['scale'] or 'none (the model configs)'}  {' '.join(args['overrides'])}  "
              "(forward FLOPs per token; training = 3x)")
        print(format_table(rows))


if __name__ == "__main__":
    main()
