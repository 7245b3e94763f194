"""Argument helpers shared by the ``structvpr`` subcommands (and benchmarks, scripts).

Lives at the bottom of the house: the subcommand modules import it, it imports no
subcommand, and ``structvpr_core/cli.py`` (the dispatcher) sits on top of both.
"""

from __future__ import annotations

import argparse

from structvpr_core.config import ConfigError
from structvpr_core.retrieval.sequence import NORMALIZATIONS, SequenceConfig, normalization_for


class CliError(RuntimeError):
    """A user-facing error: printed as one line, exit code 2, no traceback."""


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"640x480"`` -> (640, 480) as (width, height); None stays None."""
    if text is None:
        return None
    w, sep, h = text.lower().partition("x")
    try:
        size = (int(w), int(h))
        if not sep or min(size) < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"size must look like WxH with positive integers, e.g. 640x480, got {text!r}") from None
    return size


def parse_frame_range(text: str | None) -> tuple[int, int] | None:
    """``"29000:35760"`` -> (29000, 35760), inclusive; None stays None."""
    if text is None:
        return None
    lo, sep, hi = text.partition(":")
    try:
        if not sep:
            raise ValueError
        rng = (int(lo), int(hi))
    except ValueError:
        raise ValueError(f"frame range must look like A:B with integers A <= B, got {text!r}") from None
    if rng[0] > rng[1]:
        raise ValueError(f"frame range {text!r}: start is after end")
    return rng


def add_sequence_arguments(parser: argparse.ArgumentParser, from_params: bool = False) -> None:
    """Sequence-matching options shared by ``eval`` and ``replay``.

    ``from_params``: every default is None, meaning "the node parameters file's value"
    (``fill_sequence_arguments``), so a flag overrides the file only when it is given.
    """
    defaults = SequenceConfig()
    def default(value):
        return None if from_params else value
    note = " (default: the params file's)" if from_params else " (default %(default)s)"
    group = parser.add_argument_group("sequence matching (structvpr_core.retrieval.sequence)")
    group.add_argument("--sequence-length", type=int, default=default(1),
                       help="match the last L queries as a sequence; 1 = single frame" + note)
    group.add_argument("--sequence-velocity", metavar="MIN:MAX",
                       default=default(f"{defaults.min_velocity:g}:{defaults.max_velocity:g}"),
                       help="velocity range, map keyframes per query" + note)
    group.add_argument("--sequence-velocity-steps", type=int, default=default(defaults.velocity_steps),
                       help="velocities tried over the range" + note)
    group.add_argument("--sequence-reverse", action="store_true", default=default(False),
                       help="also match the map driven backwards" + (note if from_params else ""))
    group.add_argument("--sequence-normalization", choices=("auto", *NORMALIZATIONS), default=default("auto"),
                       help="similarity-row normalisation; auto = the measured one for the model "
                            "(local_contrast for raw-pixel, none for learned descriptors)" + note)


def fill_sequence_arguments(args: argparse.Namespace, params: dict) -> None:
    """Sequence options not given on the command line take the node parameters' values."""
    if args.sequence_length is None:
        args.sequence_length = int(params["sequence_length"])
    if args.sequence_velocity is None:
        args.sequence_velocity = f"{params['sequence_min_velocity']}:{params['sequence_max_velocity']}"
    if args.sequence_velocity_steps is None:
        args.sequence_velocity_steps = int(params["sequence_velocity_steps"])
    if args.sequence_reverse is None:
        args.sequence_reverse = bool(params["sequence_reverse"])
    if args.sequence_normalization is None:
        args.sequence_normalization = str(params["sequence_normalization"])


def sequence_config_from_args(args: argparse.Namespace, model: str) -> SequenceConfig:
    lo, sep, hi = args.sequence_velocity.partition(":")
    try:
        velocities = (float(lo), float(hi))
        if not sep:
            raise ValueError
    except ValueError:
        raise CliError(f"--sequence-velocity must look like MIN:MAX, e.g. 0.8:1.25, got {args.sequence_velocity!r}") from None
    normalization = (normalization_for(model) if args.sequence_normalization == "auto"
                     else args.sequence_normalization)
    try:
        return SequenceConfig(length=args.sequence_length, min_velocity=velocities[0], max_velocity=velocities[1],
                              velocity_steps=args.sequence_velocity_steps, reverse=args.sequence_reverse,
                              normalization=normalization)
    except ConfigError as e:
        raise CliError(f"sequence matching: {e}") from None
