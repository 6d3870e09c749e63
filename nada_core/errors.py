"""The exceptions a user can act on. The library's messages name its inputs as fields
(`iterations 0: must be at least 1`); a command-line tool prints the same message with its flags
(`--iterations 0: must be at least 1`) as one line, without a traceback."""

from __future__ import annotations

import re
from collections.abc import Mapping

FIELD = re.compile(r"\{([a-z][a-z0-9_]*)\}")


class NadaError(Exception):
    """A problem with the user's input: the message names the input and the fix."""

    def for_command_line(self, flags: Mapping[str, str] | None = None) -> str:
        """The message as a command prints it: each field as its option, --field-name unless `flags`
        names another (nada-export: names -> --name)."""
        return str(self)

    def in_words(self, names: Mapping[str, str]) -> str:
        """The message with each field named as `names` says (a page's labels), else by its own name."""
        return str(self)


class FieldError(NadaError):
    """A NadaError whose message names inputs as {field}: str() gives the field's name (what a Python
    caller passed), for_command_line() the option a command-line user typed."""

    def __init__(self, template: str):
        self.template = template
        super().__init__(FIELD.sub(lambda m: m.group(1), template))

    def for_command_line(self, flags: Mapping[str, str] | None = None) -> str:
        return FIELD.sub(lambda m: (flags or {}).get(m.group(1)) or option_of(m.group(1)), self.template)

    def in_words(self, names: Mapping[str, str]) -> str:
        return FIELD.sub(lambda m: names.get(m.group(1), m.group(1)), self.template)


def option_of(field: str) -> str:
    """The command-line option of a field: n_sample -> --n-sample."""
    return "--" + field.replace("_", "-")


class TrainingInterrupted(NadaError):
    """Ctrl-C or SIGTERM stopped training after its state was saved: the run can be resumed."""

    def __init__(self, run: str, iteration: int | None, resume_with: str):
        self.run, self.iteration = run, iteration
        at = f" at iteration {iteration}" if iteration is not None else ""
        super().__init__(f"interrupted{at}; state saved in {run}; continue with: {resume_with}")
        self._at = at

    def for_command_line(self, flags: Mapping[str, str] | None = None) -> str:
        return f"interrupted{self._at}; state saved, continue with: nada-train --resume {self.run}"
