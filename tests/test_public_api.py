"""The package's public names: every name in ``verity.__all__`` imports (``from verity import *``)."""

from __future__ import annotations

import subprocess
import sys


def test_star_import_binds_every_name_in_all():
    code = "from verity import *\nimport verity\nmissing = [n for n in verity.__all__ if n not in globals()]\n" \
           "assert not missing, missing\nprint(len(verity.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 20


def test_every_name_in_all_resolves():
    import verity

    for name in verity.__all__:
        assert getattr(verity, name) is not None, name
