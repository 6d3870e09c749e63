"""What every nada command shares: user mistakes print one line and exit 2, never a traceback."""

from __future__ import annotations

import logging
import sys
import warnings

import typer

from nada_train.errors import NadaError


def run_app(app: typer.Typer, prog: str) -> None:
    """Run a typer app; NadaError -> 'prog: error: message' on stderr, exit status 2."""
    warnings.filterwarnings("once", category=UserWarning)
    logging.getLogger("root").setLevel(logging.ERROR)  # open_clip's "initialized randomly" notice; we warn ourselves
    try:
        app(prog_name=prog, standalone_mode=False)
    except NadaError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code)
    except Exception as exc:  # click usage errors arrive here with standalone_mode=False
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


def typer_app(help_text: str) -> typer.Typer:
    return typer.Typer(help=help_text, add_completion=False, no_args_is_help=False,
                       context_settings={"help_option_names": ["-h", "--help"]}, pretty_exceptions_enable=False)

