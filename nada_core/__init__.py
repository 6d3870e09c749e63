"""The torch-free foundation every nada package stands on: user errors, the seed convention, PNG files,
atomic file writes, the command-line runner and the console scripts' entry points. numpy, pillow and
typer only, so a machine that only asks a server for images installs nothing heavier."""

__version__ = "0.1.0"
