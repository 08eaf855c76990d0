"""Imports point down the flow: config -> data / models -> train -> eval / report / sweep. Configuration imports
nothing of gdn below it, and no command reaches into the trainer's entry point to read a config or a run."""
import json
import subprocess
import sys

import pytest

MODULES = {  # module -> gdn modules it must not load (gdn.eval.cli loads gdn.eval.loading and gdn.run_folder)
    "gdn.config": ("gdn.data", "gdn.models", "gdn.train", "gdn.eval", "gdn.sweep", "gdn.report"),
    "gdn.eval.cli": ("gdn.train.main",),
    "gdn.models.inspect_cli": ("gdn.train",),
}


@pytest.mark.parametrize("module", list(MODULES))
def test_a_module_loads_nothing_above_it(module):
    code = f"import json, sys, {module}; print(json.dumps([m for m in sys.modules if m.startswith('gdn')]))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                       timeout=120).stdout)
    assert not [m for m in loaded for bad in MODULES[module] if m == bad or m.startswith(bad + ".")], loaded
