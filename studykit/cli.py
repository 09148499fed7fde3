"""The ``studykit`` command line: ``studykit list | train | eval | study``.

``train`` and ``eval`` call ``run_experiment`` (``-p key=value`` sets any of its parameters,
values parsed as Python literals); ``study`` runs the notebook series with papermill.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any


def _cmd_list(args: argparse.Namespace) -> int:
    from studykit import corruptions, data, models

    sections: dict[str, list[str]] = {
        "datasets": data.list_datasets(),
        "models": models.list_models(),
        "corruptions (benchmark)": corruptions.list_corruptions("benchmark"),
        "corruptions (extra)": corruptions.list_corruptions("extra"),
    }
    try:  # methods and profiles exist from the training-loop issue on
        from studykit import methods

        sections["methods"] = methods.list_methods()
    except ImportError:
        pass
    try:
        from studykit import profiles

        sections["profiles"] = list(profiles.list_profiles())
    except ImportError:
        pass
    wanted = args.what
    for title, names in sections.items():
        if wanted and not title.startswith(wanted):
            continue
        print(f"{title}:")
        for n in names:
            print(f"  {n}")
    return 0


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``["epochs=3", "method=augmix"]`` -> ``{"epochs": 3, "method": "augmix"}``."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"bad parameter {pair!r}; write key=value, e.g. epochs=3")
        try:
            params[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            params[key] = raw  # a bare word such as augmix or cifar10
    return params


def _cmd_train(args: argparse.Namespace) -> int:
    from studykit.experiment import run_experiment

    params = parse_params(args.param)
    params.setdefault("profile", args.profile)
    if args.command == "train":
        params.setdefault("eval_corruptions", None)
        params.setdefault("eval_adversarial", None)
    r = run_experiment(**params)
    print(f"run: {r.run.dir}")
    print(json.dumps(r.metrics, indent=2, sort_keys=True))
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from studykit import study

    study.run_study(
        profile=args.profile,
        notebooks=args.notebooks,
        jobs=args.jobs,
        output_dir=args.output_dir,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="studykit", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    pl = sub.add_parser("list", help="list datasets, models, corruptions, methods, profiles")
    pl.add_argument(
        "what", nargs="?", default=None,
        help="only this section: datasets | models | corruptions | methods | profiles",
    )
    pl.set_defaults(func=_cmd_list)

    for name, helptext in (("train", "train (or load) one configuration"),
                           ("eval", "train or load, then evaluate clean / corruptions / PGD")):
        pt = sub.add_parser(name, help=helptext)
        pt.add_argument("--profile", default="quick", help="smoke | quick | paper")
        pt.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a run_experiment parameter, e.g. -p method=standard -p epochs=3")
        pt.set_defaults(func=_cmd_train)

    ps = sub.add_parser("study", help="run the notebook series with papermill")
    ps.add_argument("--profile", default="quick", help="smoke | quick | paper (default quick)")
    ps.add_argument("--notebooks", nargs="*", default=None,
                    help="notebook names or prefixes (default: all in notebooks/)")
    ps.add_argument("--jobs", type=int, default=1, help="notebooks run concurrently")
    ps.add_argument("--output-dir", default="runs/notebooks",
                    help="where executed notebooks go (default runs/notebooks)")
    ps.set_defaults(func=_cmd_study)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
