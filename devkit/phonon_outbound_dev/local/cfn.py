"""Reads template.yaml and creates its storage resources in the embedded AWS (moto server).

The local pipeline must not restate the template by hand: queues (with their redrive policy
and visibility timeout), tables (keys, GSIs), the bucket and the webhook secret are created
from the template's own definitions, and the functions' environment comes from its Globals.
Only the intrinsic functions the template uses for these resources are resolved.
"""

from __future__ import annotations

import json
import re
import secrets as pysecrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REGION = "us-east-1"
ACCOUNT = "123456789012"


class _Loader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _tag)


def load_template(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - SafeLoader subclass


@dataclass
class LocalStack:
    """What the embedded AWS holds after `create_resources`."""

    template: dict
    root: Path
    stack: str = "phonon-outbound-local"
    params: dict[str, str] = field(default_factory=dict)
    physical: dict[str, dict[str, str]] = field(default_factory=dict)  # logical id → {Ref, Arn, QueueName…}

    # ------------------------------------------------------------ intrinsic functions
    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "Ref" in value:
            name = value["Ref"]
            if name in self.params:
                return self.params[name]
            if name in self.physical:
                return self.physical[name]["Ref"]
            return {"AWS::StackName": self.stack, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
                    "AWS::Partition": "aws"}.get(name, "")
        if "Fn::GetAtt" in value:
            res, attr = value["Fn::GetAtt"]
            return self.physical.get(res, {}).get(attr, "")
        if "Fn::FindInMap" in value:
            mapping, first, second = (self.resolve(v) for v in value["Fn::FindInMap"])
            return self.template.get("Mappings", {})[mapping][str(first)][str(second)]
        if "Fn::Sub" in value:
            text = value["Fn::Sub"]
            extra = {}
            if isinstance(text, list):
                text, extra = text[0], {k: self.resolve(v) for k, v in text[1].items()}

            def sub(m: re.Match) -> str:
                name = m.group(1)
                if name in extra:
                    return str(extra[name])
                if "." in name:
                    res, attr = name.split(".", 1)
                    return str(self.physical.get(res, {}).get(attr, ""))
                return str(self.resolve({"Ref": name}))
            return re.sub(r"\$\{([^}]+)\}", sub, text)
        return {k: self.resolve(v) for k, v in value.items()}

    def resources(self, kind: str) -> list[tuple[str, dict]]:
        return [(name, res.get("Properties", {}) or {}) for name, res in self.template["Resources"].items()
                if res["Type"] == kind and "Condition" not in res]

    # ------------------------------------------------------------ creation
    def create_resources(self, session: Any, overrides: dict[str, Any] | None = None) -> None:
        overrides = overrides or {}
        for name, spec in self.template.get("Parameters", {}).items():
            self.params.setdefault(name, str(spec.get("Default", "")))
        s3 = session.client("s3")
        for name, props in self.resources("AWS::S3::Bucket"):
            bucket = f"{self.stack}-{name.lower()}"
            s3.create_bucket(Bucket=bucket)
            if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
                s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
            self.physical[name] = {"Ref": bucket, "Arn": f"arn:aws:s3:::{bucket}"}

        sqs = session.client("sqs")
        queues = self.resources("AWS::SQS::Queue")
        for name, _props in queues:  # create all first: a redrive policy names another queue's ARN
            url = sqs.create_queue(QueueName=f"{self.stack}-{name}")["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            self.physical[name] = {"Ref": url, "Arn": arn, "QueueName": f"{self.stack}-{name}"}
        for name, props in queues:
            attrs: dict[str, str] = {}
            for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds"):
                if key in props:
                    attrs[key] = str(self.resolve(props[key]))
            if "VisibilityTimeout" in overrides:
                attrs["VisibilityTimeout"] = str(overrides["VisibilityTimeout"])
            if "RedrivePolicy" in props:
                policy = self.resolve(props["RedrivePolicy"])
                policy["maxReceiveCount"] = int(overrides.get("MaxReceiveCount", policy["maxReceiveCount"]))
                attrs["RedrivePolicy"] = json.dumps(policy)
            if attrs:
                sqs.set_queue_attributes(QueueUrl=self.physical[name]["Ref"], Attributes=attrs)

        ddb = session.client("dynamodb")
        for name, props in self.resources("AWS::DynamoDB::Table"):
            table = f"{self.stack}-{name}"
            kwargs: dict[str, Any] = {
                "TableName": table, "KeySchema": props["KeySchema"],
                "AttributeDefinitions": props["AttributeDefinitions"],
                "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
            }
            if props.get("GlobalSecondaryIndexes"):
                kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
            ddb.create_table(**kwargs)
            self.physical[name] = {"Ref": table, "Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}"}

        sm = session.client("secretsmanager")
        for name, props in self.resources("AWS::SecretsManager::Secret"):
            gen = props.get("GenerateSecretString") or {}
            value = props.get("SecretString")
            if gen:
                alphabet = string.ascii_letters + string.digits
                password = "".join(pysecrets.choice(alphabet) for _ in range(int(gen.get("PasswordLength", 32))))
                if gen.get("GenerateStringKey"):
                    doc = json.loads(gen.get("SecretStringTemplate", "{}"))
                    doc[gen["GenerateStringKey"]] = password
                    value = json.dumps(doc)
                else:  # a plain generated string (the suppression salt)
                    value = password
            arn = sm.create_secret(Name=f"{self.stack}/{name}", SecretString=value or "")["ARN"]
            self.physical[name] = {"Ref": arn}

    def function_environment(self) -> dict[str, str]:
        env = self.template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        return {k: str(self.resolve(v)) for k, v in env.items()}

    def handler_path(self, function: str) -> tuple[Path, str, str]:
        """(code directory, module name, function name) of a function, from CodeUri and Handler."""
        props = self.template["Resources"][function]["Properties"]
        module, func = props["Handler"].rsplit(".", 1)
        return self.root / props["CodeUri"], module, func
