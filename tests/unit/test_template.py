"""template.yaml: the SAM transform succeeds offline and the deployed shape is what the code
relies on. (cfn-lint ≥ 1.54 no longer runs the SAM transform, so a transform test is the only
place broken GetAtts or event properties in AWS::Serverless resources would show.)"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from phonon_outbound.local.cfn import load_template
from phonon_outbound.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template(ROOT / "template.yaml")


@pytest.fixture(scope="module")
def transformed() -> dict:
    import os

    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    class NoManagedPolicies:
        def load(self) -> dict:
            return {}

    doc = yaml_parse((ROOT / "template.yaml").read_text())
    for res in doc["Resources"].values():  # what `sam package` does with local code paths
        props = res.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = "s3://bucket/code.zip"
    old = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = "ap-south-1"
    try:
        return transform(copy.deepcopy(doc), {}, NoManagedPolicies())
    finally:
        if old is None:
            os.environ.pop("AWS_DEFAULT_REGION")
        else:
            os.environ["AWS_DEFAULT_REGION"] = old


def test_the_dispatch_event_source_reports_partial_failures_and_caps_concurrency(transformed):
    esm = [r["Properties"] for r in transformed["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert len(esm) == 1
    assert esm[0]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm[0]["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "DispatchMaxConcurrency"}


def test_the_chunk_queue_outlives_six_dispatch_timeouts_and_redrives_to_a_dlq(template):
    res = template["Resources"]
    timeout = res["DispatchFunction"]["Properties"].get("Timeout", template["Globals"]["Function"]["Timeout"])
    queue = res["ChunkQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * timeout
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["ChunkDeadLetterQueue", "Arn"]}


def test_every_function_environment_variable_is_a_setting(template):
    names = set(template["Globals"]["Function"]["Environment"]["Variables"])
    settings = {n.upper() for n in Settings.model_fields}
    unknown = {n for n in names - settings if not n.startswith("POWERTOOLS_")}
    assert not unknown, f"template sets variables no code reads: {unknown}"


def test_the_layer_is_built_by_sam_and_every_function_uses_python_3_13(template):
    layer = template["Resources"]["DomainLayer"]
    assert layer["Metadata"]["BuildMethod"] == "python3.13"
    assert (ROOT / layer["Properties"]["ContentUri"] / "requirements.txt").is_file()
    assert template["Globals"]["Function"]["Runtime"] == "python3.13"
    for name, res in template["Resources"].items():
        if res["Type"] == "AWS::Serverless::Function":
            module = res["Properties"]["Handler"].split(".")[0]
            assert (ROOT / res["Properties"]["CodeUri"] / f"{module}.py").is_file(), name


def test_the_results_table_is_keyed_by_phonon_uuid_with_lookup_indexes(template):
    props = template["Resources"]["ResultsTable"]["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "phonon-uuid", "KeyType": "HASH"}]
    assert {g["IndexName"] for g in props["GlobalSecondaryIndexes"]} == {"by-client-identifier", "by-request-id"}


def test_the_webhook_has_a_function_url_and_the_static_egress_option_exists(transformed):
    types = {r["Type"] for r in transformed["Resources"].values()}
    assert "AWS::Lambda::Url" in types
    assert "AWS::EC2::NatGateway" in types and "AWS::EC2::EIP" in types
    assert "EgressIp" in transformed["Outputs"] and "WebhookUrl" in transformed["Outputs"]


def test_no_secret_has_a_default_in_the_template(template):
    text = (ROOT / "template.yaml").read_text().lower()
    assert "security-id\":" not in text
    for name, spec in template["Parameters"].items():
        assert "secur" not in name.lower() or not spec.get("Default"), name
