"""`tol`: one entry point for every stage of the TreeOfLife build.

    tol sample-kit demo-out/kit --seed 0
    tol serve-kit demo-out/kit/eol/images --port 8765 --faults "429=0.1,latency=0.05"

Each subcommand lives in its own module, exposing `configure(parser)` and `run(args) -> int`; modules are
imported only when their command is the one given, so `tol --help` and the build's commands never pay for the
training stack's imports (torch, open_clip).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# (command, module, one-line help). Only commands that work are listed.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("sample-kit", "pipeline.samplekit.kit", "write a small raw-data tree in the real sources' formats"),
    ("serve-kit", "pipeline.serve_kit", "serve the kit's EOL images on loopback, with injectable faults"),
    ("download", "pipeline.download", "fetch EOL images politely into resumable parquet parts"),
    ("taxonomy", "taxonomy.build", "resolve every source label to seven ranks and a common name"),
    ("query", "pipeline.query", "run SQL (DuckDB) over a build's manifests and taxonomy outputs"),
    ("build", "pipeline.build", "build the webdataset shards and manifests from sources, taxa and exclusions"),
    ("rare-species", "rare_species.curate", "curate the Rare Species benchmark and the exclusion list the build honours"),
    ("eval", "training.evaluate", "zero-shot, few-shot and per-rank evaluation of a model on the paper's tasks or yours"),
    ("report", "pipeline.report", "write a data card (markdown + PNG figures) for a build"),
    ("train", "training.train", "train a CLIP model on the build's shards with open_clip (torchrun for many GPUs)"),
    ("predict", "training.predict", "top-k species and per-rank predictions for images, from a model and taxa.parquet"),
)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the command, the flag and the bad value."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The `tol` parser; only the `selected` command's module is imported and its flags added."""
    parser = OneLineErrorParser(
        prog="tol",
        description=(
            "Rebuild the BioCLIP TreeOfLife corpus (iNat21 + BIOSCAN-1M + EOL) reproducibly, politely and fast, "
            "and train and evaluate on it. Run 'tol COMMAND --help' for a command's options."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    sub.required = True
    for name, module_name, help_text in COMMANDS:
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            module = importlib.import_module(module_name)
            command.description = module.__doc__.split("\n\n")[0]
            module.configure(command)
            command.set_defaults(run=module.run)
    return parser


def beam_script_args(prog: str, doc: str, configure, argv: Sequence[str] | None) -> argparse.Namespace:
    """A Beam command's arguments when run as a script: its own flags; unknown `--flag=value` ones join `--beam`."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    configure(parser)
    args, unknown = parser.parse_known_args(argv)
    args.beam = [*unknown, *args.beam]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    # Configure logging before the command modules are imported: importing Beam logs through the root logger,
    # which would otherwise install its own default handler first.
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # its INFO lines are about Beam, not the data
    # ERROR while the command modules import: importing Beam warns about optional cloud clients nobody asked for.
    arguments = sys.argv[1:] if argv is None else list(argv)
    names = {name for name, _, _ in COMMANDS}
    parser = build_parser(next((word for word in arguments if word in names), None))
    logging.getLogger().setLevel(logging.INFO)
    args = parser.parse_args(argv)
    if args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
        logging.getLogger("apache_beam").setLevel(logging.INFO)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
