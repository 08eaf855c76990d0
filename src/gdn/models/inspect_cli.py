"""`gdn-models`: every architecture in conf/model at one scale: layer pattern, parameters, FLOPs per token.

    gdn-models                      # the models at their config sizes (scale=default)
    gdn-models scale=tiny           # with conf/scale/tiny.yaml applied
    gdn-models scale=tiny format=json

Each model is composed from the real Hydra config (conf/train.yaml with model=NAME) and built on the meta device
(no memory); FLOPs per token are the forward count of gdn.models.flops at the configured data.seq_len.
"""
from __future__ import annotations

import json
import sys

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gdn.models.flops import UnknownMixerError, flops_per_token
from gdn.train.cli import group_choices
from gdn.train.main import CONF_DIR, register_resolvers

DEFAULT_SCALE = "default"
FORMATS = ("table", "json")


def parse_args(argv: list[str]) -> dict[str, str]:
    """`key=value` arguments: scale (default "default") and format (table or json)."""
    args = {"scale": DEFAULT_SCALE, "format": "table"}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in args:
            raise SystemExit(f"error: unknown argument {arg!r}; usage: gdn-models [scale=NAME] [format=table|json]")
        args[key] = value
    if args["format"] not in FORMATS:
        raise SystemExit(f"error: format must be one of {', '.join(FORMATS)}, got {args['format']!r}")
    return args


def scale_overrides(scale: str) -> list[str]:
    """The Hydra override that applies conf/scale/NAME.yaml, or none for the config sizes (scale=default).
    Exits with the available scales when NAME has no file."""
    if scale == DEFAULT_SCALE:
        return []
    if not (CONF_DIR / "scale").is_dir():
        print(f"note: there is no conf/scale/ yet; listing the models at their config sizes (scale={DEFAULT_SCALE})",
              file=sys.stderr)
        return []
    choices = group_choices(CONF_DIR, "scale")
    if scale not in choices:
        raise SystemExit(f"error: unknown scale {scale!r}; choices: {', '.join(choices) or '(none)'}")
    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "train.yaml").defaults)
    in_defaults = any(isinstance(entry, dict) and "scale" in entry for entry in defaults)
    return [f"scale={scale}" if in_defaults else f"+scale={scale}"]  # override the default, or add the group


def describe_model(name: str, overrides: list[str]) -> dict:
    """Compose model=NAME (inside initialize_config_dir), build it on the meta device, count its parameters and
    forward FLOPs per token."""
    cfg = compose(config_name="train", overrides=[f"model={name}", "logging=none", *overrides])
    with torch.device("meta"):
        model = instantiate(cfg.model, _convert_="all")
    try:
        flops = flops_per_token(model, cfg.data.seq_len)
    except UnknownMixerError as error:
        print(f"warning: model {name}: {error}", file=sys.stderr)
        flops = None
    return {"name": name, "params": model.num_parameters(), "flops_per_token": flops,
            "pattern": list(cfg.model.layers), "n_layers": cfg.model.n_layers, "seq_len": cfg.data.seq_len}


def format_table(rows: list[dict]) -> str:
    header = ("model", "pattern", "layers", "params", "FLOPs/token", "seq_len")
    lines = [header] + [
        (row["name"], "[" + ", ".join(row["pattern"]) + "]", str(row["n_layers"]), f"{row['params']:,}",
         "n/a" if row["flops_per_token"] is None else f"{row['flops_per_token']:,}", str(row["seq_len"]))
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    overrides = scale_overrides(args["scale"])
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        rows = [describe_model(name, overrides) for name in group_choices(CONF_DIR, "model")]
    if args["format"] == "json":
        print(json.dumps([{key: row[key] for key in ("name", "params", "flops_per_token", "pattern")}
                          for row in rows], indent=2))
    else:
        print(f"scale={args['scale']}  (forward FLOPs per token; training = 3x)")
        print(format_table(rows))


if __name__ == "__main__":
    main()
