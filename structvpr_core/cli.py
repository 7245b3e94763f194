"""``structvpr`` command line: one subcommand per pipeline step.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Only the chosen module is imported, so ``structvpr --help``
is instant and a broken optional dependency only affects its own command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from structvpr_core.arguments import CliError

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
