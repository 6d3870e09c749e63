"""What every nada command shares: user mistakes print one line and exit 2, never a traceback."""

from __future__ import annotations

import errno
import logging
import sys
import warnings

import typer

from nada_core.errors import NadaError


def run_app(app: typer.Typer, prog: str, flags: dict[str, str] | None = None) -> None:
    """Run a typer app; NadaError -> 'prog: error: message' on stderr, exit status 2, the fields the
    library names written as this command's options (--field-name, or as `flags` maps them)."""
    warnings.filterwarnings("once", category=UserWarning)
    # open_clip's "initialized randomly" notice; we warn ourselves
    logging.getLogger("root").setLevel(logging.ERROR)
    try:
        app(prog_name=prog, standalone_mode=False)
    except NadaError as exc:
        message = exc.for_command_line(flags)
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code)
    except ModuleNotFoundError as exc:
        exit_for_missing_module(exc, prog)
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(
            f"{prog}: error: the disk is full{where} ({exc.strerror}); free space or write elsewhere. Nothing "
            "was left half-written: outputs are written under temporary names and renamed when complete",
            file=sys.stderr,
        )
        sys.exit(1)
    except usage_error_types() as exc:  # unknown option, a value of the wrong type, a missing argument
        print(f"{prog}: error: {one_line(exc.format_message())} (see {prog} --help)", file=sys.stderr)
        sys.exit(exc.exit_code)


# no space on the device, over the file-size limit, over the disk quota
DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}

# a module the command needs -> the extra that installs it (pyproject.toml)
MISSING_MODULE_EXTRA = {
    "torch": "train",
    "torchvision": "train",
    "open_clip": "train",
    "safetensors": "train",
    "tqdm": "train",
    "onnx": "export",
    "onnxruntime": "export",
    "onnxscript": "export",
    "tritonclient": "client",
    "pytriton": "serve",
    "gradio": "app",
}


def exit_for_missing_module(exc: ModuleNotFoundError, prog: str) -> None:
    """A dependency of another role (pyproject's extras) is not installed: say which extra brings it."""
    extra = MISSING_MODULE_EXTRA.get((exc.name or "").split(".")[0])
    if extra is None:
        raise exc
    print(
        f"{prog}: error: it needs {exc.name}, which this installation lacks; install it with: pip install "
        f"'nada[{extra}]'",
        file=sys.stderr,
    )
    sys.exit(2)


def usage_error_types() -> tuple[type[Exception], ...]:
    """The click exception classes typer raises for usage errors with standalone_mode=False.

    typer up to 0.15 raises those of the `click` package; later typer carries its own copy of click
    (`typer._click`), whose classes are not click's. Both are found from typer's public
    BadParameter, whose bases include its ClickException, and click's where click is installed.
    """
    found = [base for base in typer.BadParameter.__mro__ if base.__name__ == "ClickException"]
    try:
        import click

        found.append(click.ClickException)
    except ImportError:
        pass
    return tuple(dict.fromkeys(found))


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def typer_app(help_text: str) -> typer.Typer:
    return typer.Typer(
        help=help_text,
        add_completion=False,
        no_args_is_help=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        pretty_exceptions_enable=False,
    )
