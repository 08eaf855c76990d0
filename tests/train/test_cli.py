"""The console script: unknown choices fail in one line that lists what exists."""
import subprocess
import sys

import pytest

from gdn.config import CONF_DIR, check_group_overrides, group_choices


@pytest.mark.parametrize("group", ["model", "data", "optim"])
def test_unknown_choice_lists_the_choices(group):
    choices = group_choices(CONF_DIR, group)
    assert check_group_overrides([f"{group}=nope"], CONF_DIR) == f"unknown {group} 'nope'; choices: {', '.join(choices)}"


def test_known_choices_and_plain_overrides_pass():
    assert check_group_overrides(["model=gdn", "model.d_model=64", "-m", "model=gdn,transformer"], CONF_DIR) is None
    assert check_group_overrides(["model=gdn,nope"], CONF_DIR).startswith("unknown model 'nope'")


def test_console_script_prints_one_line_and_exits_2():
    proc = subprocess.run([sys.executable, "-m", "gdn.train", "model=mamba9"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: unknown model 'mamba9'; choices: {', '.join(group_choices(CONF_DIR, 'model'))}"
    ]
