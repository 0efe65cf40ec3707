"""Running the ``mde-pyg`` command line in the tests."""

import pytest

from mde_pyg.cli import main


def usage_error(capsys, argv):
    """Run ``main(argv)``; return its one-line error (exit status 2), the
    ``mde-pyg COMMAND: error: `` prefix included."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"mde-pyg {argv[0]}: error: ")  # its usage
    return last
