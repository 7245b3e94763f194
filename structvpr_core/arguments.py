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


def add_sequence_arguments(parser: argparse.ArgumentParser) -> None:
    """Sequence-matching options shared by ``eval`` and ``replay``."""
    defaults = SequenceConfig()
    group = parser.add_argument_group("sequence matching (structvpr_core.retrieval.sequence)")
    group.add_argument("--sequence-length", type=int, default=1,
                       help="match the last L queries as a sequence (default 1 = single frame)")
    group.add_argument("--sequence-velocity", metavar="MIN:MAX",
                       default=f"{defaults.min_velocity:g}:{defaults.max_velocity:g}",
                       help="velocity range, map keyframes per query (default %(default)s)")
    group.add_argument("--sequence-velocity-steps", type=int, default=defaults.velocity_steps,
                       help="velocities tried over the range (default %(default)s)")
    group.add_argument("--sequence-reverse", action="store_true", help="also match the map driven backwards")
    group.add_argument("--sequence-normalization", choices=("auto", *NORMALIZATIONS), default="auto",
                       help="similarity-row normalisation; auto = the measured one for the model "
                            "(local_contrast for raw-pixel, none for learned descriptors)")


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
