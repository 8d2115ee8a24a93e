"""Translate template.yaml with the SAM translator, offline, into the CloudFormation that AWS
would deploy (the same transform `sam validate` and CloudFormation's SAM macro run).

checkov and cfn-lint only see part of what an `AWS::Serverless::*` resource becomes (roles,
event source mappings, permissions, rule targets), so they scan this output, and the IAM tests
read the roles from it.

    python tools/sam_translate.py template.yaml build/template.json
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any


class _NoManagedPolicies:
    """The template names managed policies by ARN only; nothing needs looking up in IAM."""

    def load(self) -> dict:
        return {}


def translate(path: Path | str, region: str = "us-east-1") -> dict[str, Any]:
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    doc = yaml_parse(Path(path).read_text())
    for res in doc.get("Resources", {}).values():  # what `sam package` does with local code paths
        props = res.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = f"s3://deployment-bucket/{props[key].strip('/')}.zip"
    old = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = region
    try:
        return transform(copy.deepcopy(doc), {}, _NoManagedPolicies())
    finally:
        if old is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = old


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: sam_translate.py TEMPLATE OUT.json", file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(translate(argv[0]), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
