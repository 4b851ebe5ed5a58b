"""The argument parser every `faseg-rt` command line is built with (imports nothing heavy, so
`faseg-rt --help` stays fast)."""

from __future__ import annotations

import argparse
import difflib
import re
import sys


class CLIParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors name the closest valid spelling of a misspelt option
    or choice ("--clases: did you mean --classes?"), which argparse before Python 3.14 does not.

    A misspelt required option is reported by argparse as the required one missing, so the
    suggestion is looked up from the words the parser was given, not from argparse's message.
    """

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message):
        message = re.sub(r", '_[^']*'", "", message)  # internal subcommands stay unlisted
        hints = self._option_hints() + _choice_hints(message)
        super().error("; ".join([message, *hints]))

    def _option_hints(self) -> list[str]:
        known = [o for p in self._parsed() for o in p._option_string_actions if o.startswith("--")]
        hints = []
        for word in getattr(self, "_given", []):
            name = word.split("=", 1)[0]
            if not name.startswith("--") or any(k.startswith(name) for k in known):
                continue  # a known option, or an abbreviation argparse accepts
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            if close:
                hints.append(f"{name}: did you mean {close[0]}?")
        return hints

    def _parsed(self):
        """This parser and the subcommand parsers that parsed words of this command line (their
        unrecognised words are reported by the top parser)."""
        yield self
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    if getattr(sub, "_given", None) is not None and isinstance(sub, CLIParser):
                        yield from sub._parsed()


def _choice_hints(message: str) -> list[str]:
    """From argparse's "invalid choice: 'segmnt' (choose from 'segment', ...)" the closest choice."""
    m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not m:
        return []
    close = difflib.get_close_matches(m.group(1), re.findall(r"'([^']*)'", m.group(2)), n=1)
    return [f"did you mean {close[0]}?"] if close else []
