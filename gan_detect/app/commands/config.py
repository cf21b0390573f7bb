"""``gan-detect config show``: the resolved config, or every key with its type and default."""

from __future__ import annotations

import argparse
from typing import Any

from gan_detect.app.commands._common import (
    add_command_parser,
    add_config_args,
    config_epilog,
    config_files_and_overrides,
)

NAME = "config"
SUMMARY = "print the resolved config: config show CONFIG.yaml... [--keys]"
DESCRIPTION = """\
Print the resolved config (YAML) of config files + key=value overrides, as fit would use it, or
with --keys every key with its type, default and value. Without files, the defaults of
variant.name=tiny_face / data.name=wider_face (override them to see another variant's keys)."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command_parser(subparsers, NAME, SUMMARY, DESCRIPTION, config_epilog())
    p.add_argument("action", choices=["show"], help="show: print the resolved config")
    add_config_args(p)
    p.add_argument(
        "--keys", action="store_true", help="list every key with its type, default and value"
    )
    return p


def run(args: argparse.Namespace) -> int:
    from gan_detect.config.show import format_keys, resolved_yaml

    files, overrides = config_files_and_overrides(args.args)
    print(format_keys(files, overrides) if args.keys else resolved_yaml(files, overrides), end="")
    return 0
