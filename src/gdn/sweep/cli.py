"""`gdn-sweep NAME [OVERRIDES...]`: run a sweep of sweeps/sweep/; the same as `gdn-train -m +sweep=NAME ...`.

    gdn-sweep baselines                      # CPU defaults of the sweep (tiny models, short budget)
    gdn-sweep baselines seed=0,1,2 scale=1.3b trainer.max_steps=20000
    gdn-sweep --list                         # the sweeps there are
"""
from __future__ import annotations

import sys

from gdn.config import SWEEPS_DIR

SWEEP_DIR = SWEEPS_DIR / "sweep"


def sweep_names() -> list[str]:
    return sorted(p.stem for p in SWEEP_DIR.glob("*.yaml"))


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    names = sweep_names()
    if not args or args[0] in ("-h", "--help", "--list"):
        print(__doc__.strip() + "\n\nsweeps: " + ", ".join(names))
        return
    name, overrides = args[0], args[1:]
    if name not in names:
        print(f"error: unknown sweep {name!r}; choices: {', '.join(names)}", file=sys.stderr)
        raise SystemExit(2)
    from gdn.train import main as train_main

    sys.argv = [sys.argv[0], "-m", f"+sweep={name}", *overrides]
    train_main.main()


if __name__ == "__main__":
    main()
