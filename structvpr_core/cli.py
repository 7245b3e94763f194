"""``structvpr`` command line: one subcommand per pipeline step.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Only the chosen module is imported, so ``structvpr --help``
is instant and a broken optional dependency only affects its own command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from structvpr_core.config import ConfigError
from structvpr_core.retrieval.sequence import NORMALIZATIONS, SequenceConfig, normalization_for

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "segment": ("structvpr_core.segmentation.segment", "segment an image folder into cached label PNGs"),
    "eval": ("structvpr_core.evaluation.evaluate", "Recall@N / PR evaluation of a model or baseline"),
    "benchmark": ("structvpr_core.evaluation.benchmark", "every model on every shared evaluation set: one table"),
    "train": ("structvpr_core.train.cli", "training: stage1-rgb | stage1-seg | partition | stage2"),
    "build-map": ("structvpr_core.retrieval.build_map",
                  "build a map database from an image folder or a bag's image topic (rosbag2 or ROS 1)"),
    # ROS-facing tools live in structvpr_ros (imported only when used)
    "make-bag": ("structvpr_ros.make_bag", "write a rosbag2 from an image sequence (+ poses)"),
    "replay": ("structvpr_ros.replay", "replay a bag through the live node and score its loop closures"),
}


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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="structvpr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    cmd_parser = argparse.ArgumentParser(prog=f"structvpr {name}", description=COMMANDS[name][1])
    module.add_arguments(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except (CliError, FileNotFoundError, ValueError) as e:
        print(f"structvpr {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"structvpr {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
