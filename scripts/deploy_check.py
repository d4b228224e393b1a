#!/usr/bin/env python3
"""Checks for `make build` and `make deploy` (README, "Deploy on AWS").

  deploy_check.py settings
      samconfig.toml keeps stack parameters where both `sam build` and `sam deploy`
      read them: [default.global.parameters]. `sam deploy --guided` saves its answers
      under [default.deploy.parameters], which `sam build` never reads, so an
      Architecture answered there would deploy a binary built for the other one.

  deploy_check.py architecture BUILD_DIR [PARAMETERS]
      Every bootstrap under BUILD_DIR is an ELF binary for the stack's Architecture:
      the one in PARAMETERS (the overrides given to make), else samconfig.toml's,
      else the template's default.
"""

import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
# ELF e_machine values: https://refspecs.linuxfoundation.org/elf/gabi4+/ch4.eheader.html
MACHINES = {62: "x86_64", 183: "arm64"}


def fail(message):
    print(f"deploy_check: {message}", file=sys.stderr)
    sys.exit(1)


def samconfig():
    with open(ROOT / "samconfig.toml", "rb") as f:
        return tomllib.load(f)


def check_settings():
    for env, commands in samconfig().items():
        if not isinstance(commands, dict):
            continue
        for command, section in commands.items():
            if command != "global" and "parameter_overrides" in section.get("parameters", {}):
                fail(
                    f"samconfig.toml sets parameter_overrides under [{env}.{command}.parameters], which "
                    f"only `sam {command}` reads (`sam deploy --guided` puts its answers there); move them "
                    f"to [{env}.global.parameters] so that build and deploy see the same parameters"
                )


def architecture(overrides):
    for text in (overrides, samconfig().get("default", {}).get("global", {}).get("parameters", {}).get("parameter_overrides", "")):
        if isinstance(text, list):
            text = " ".join(text)
        found = re.search(r"\bArchitecture=[\"']?(arm64|x86_64)", text or "")
        if found:
            return found.group(1)
    template = (ROOT / "template.yaml").read_text()
    return re.search(r"\n  Architecture:\n(?:    .*\n)*?    Default: (\S+)", template).group(1)


def check_architecture(build_dir, overrides):
    expected = architecture(overrides)
    bootstraps = sorted(pathlib.Path(build_dir).glob("*/bootstrap"))
    if not bootstraps:
        fail(f"no bootstrap under {build_dir}: run `make build` first")
    for path in bootstraps:
        header = path.read_bytes()[:20]
        if header[:4] != b"\x7fELF":
            fail(f"{path} is not an ELF binary")
        machine = MACHINES.get(int.from_bytes(header[18:20], "little"), "another instruction set")
        if machine != expected:
            fail(f"{path} is built for {machine}, but the stack's Architecture is {expected}")
        print(f"{path}: {machine}, as the stack's Architecture")


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["settings"]:
            check_settings()
        case ["architecture", build_dir, *overrides]:
            check_settings()
            check_architecture(build_dir, " ".join(overrides))
        case _:
            fail(__doc__)
