"""template.yaml: the SAM transform succeeds offline and the deployed shape is what the code
relies on. (cfn-lint ≥ 1.54 no longer runs the SAM transform, so a transform test is the only
place broken GetAtts or event properties in AWS::Serverless resources would show.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from phonon_outbound.settings import Settings
from phonon_outbound_dev.local.cfn import load_template
from tools.sam_translate import translate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template(ROOT / "template.yaml")


@pytest.fixture(scope="module")
def transformed() -> dict:
    return translate(ROOT / "template.yaml", region="ap-south-1")


def _esm(transformed: dict, queue: str) -> dict:
    esm = [r["Properties"] for r in transformed["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"
           and r["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [queue, "Arn"]}]
    assert len(esm) == 1, queue
    return esm[0]


def test_the_dispatch_event_source_reports_partial_failures_and_caps_concurrency(transformed):
    esm = _esm(transformed, "ChunkQueue")
    assert esm["FunctionName"] == {"Ref": "DispatchFunction"}
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "DispatchMaxConcurrency"}


def test_the_chunk_queue_outlives_six_dispatch_timeouts_and_redrives_to_a_dlq(template):
    res = template["Resources"]
    timeout = res["DispatchFunction"]["Properties"].get("Timeout", template["Globals"]["Function"]["Timeout"])
    queue = res["ChunkQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * timeout
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["ChunkDeadLetterQueue", "Arn"]}


def test_every_function_environment_variable_is_a_setting(template):
    names = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for res in template["Resources"].values():
        if res["Type"] == "AWS::Serverless::Function":
            names |= set(res["Properties"].get("Environment", {}).get("Variables", {}))
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
    # by-client-identifier only: a request-id names a whole chunk (up to 500 calls, a hot key),
    # every row's request-id is in the report and its chunk's outcome item, and an index entry
    # is one more write unit per accepted call (docs/benchmarks.md, "Cost per million calls")
    assert {g["IndexName"] for g in props["GlobalSecondaryIndexes"]} == {"by-client-identifier"}


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


# ---------------------------------------------------------------- alarms can notify (#1)
def _alarms(template: dict) -> dict[str, dict]:
    return {n: r["Properties"] for n, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}


def test_the_alarm_topic_uses_a_rotated_customer_managed_key_that_cloudwatch_may_use(template):
    topic = template["Resources"]["AlarmTopic"]["Properties"]
    key_ref = topic["KmsMasterKeyId"]
    assert key_ref != "alias/aws/sns" and "Fn::GetAtt" in key_ref, key_ref
    key = template["Resources"][key_ref["Fn::GetAtt"][0]]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["EnableKeyRotation"] is True
    grants = {}
    for st in key["Properties"]["KeyPolicy"]["Statement"]:
        principal = st["Principal"].get("Service") or st["Principal"].get("AWS")
        grants[str(principal)] = (st["Effect"], set([st["Action"]] if isinstance(st["Action"], str) else st["Action"]))
    assert grants["cloudwatch.amazonaws.com"] == ("Allow", {"kms:Decrypt", "kms:GenerateDataKey*"})
    root = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    assert grants[str(root)] == ("Allow", {"kms:*"})  # the account keeps control through IAM


def test_every_alarm_notifies_the_alarm_topic(template):
    alarms = _alarms(template)
    assert alarms
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name


def test_the_operational_metrics_have_alarms(template):
    metrics = {(a["Namespace"], a["MetricName"]) for a in _alarms(template).values()}
    for metric in ("IngestFailed", "StaleJobs", "ChunksFailed", "WebhooksUnauthorized", "AccountRefusals"):
        assert ("PhononOutbound", metric) in metrics, metric
    silent = [a for a in _alarms(template).values() if a["MetricName"] == "StaleJobs"
              and a["TreatMissingData"] == "breaching"]
    assert len(silent) == 1 and silent[0]["ComparisonOperator"] == "LessThanThreshold"  # the watchdog stopped
    queues = {a["Dimensions"][0]["Value"]["Fn::GetAtt"][0] for a in _alarms(template).values()
              if a["Namespace"] == "AWS/SQS"}
    assert queues == {"ChunkDeadLetterQueue", "IngestFailureDeadLetterQueue", "EventDeadLetterQueue", "IntakeDeadLetterQueue",
                      "ReportDeadLetterQueue"}


# ---------------------------------------------------------------- a file never vanishes (#2)
def test_failed_ingest_invocations_go_to_a_queue_that_ingest_reads_back(template, transformed):
    props = template["Resources"]["IngestFunction"]["Properties"]
    on_failure = props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure == {"Type": "SQS", "Destination": {"Fn::GetAtt": ["IngestFailureQueue", "Arn"]}}
    esm = _esm(transformed, "IngestFailureQueue")
    assert esm["FunctionName"] == {"Ref": "IngestFunction"} and esm["BatchSize"] == 1
    queue = template["Resources"]["IngestFailureQueue"]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["VisibilityTimeout"] >= 6 * props["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["IngestFailureDeadLetterQueue", "Arn"]}
    assert template["Resources"]["IngestFailureDeadLetterQueue"]["Properties"]["SqsManagedSseEnabled"] is True


def test_deleted_contact_files_reach_ingest(template):
    events = template["Resources"]["IngestFunction"]["Properties"]["Events"]
    deleted = [e["Properties"] for e in events.values()
               if e["Type"] == "EventBridgeRule" and e["Properties"]["Pattern"]["detail-type"] == ["Object Deleted"]]
    assert len(deleted) == 1
    detail = deleted[0]["Pattern"]["detail"]
    assert detail["object"]["key"] == [{"prefix": "incoming/"}]
    assert detail["bucket"]["name"] == [{"Ref": "ContactsBucket"}]
    assert deleted[0]["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["EventDeadLetterQueue", "Arn"]}}


STACK = {"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012",
         "AWS::StackName": "outbound"}


def _sub(value: object, params: dict[str, str]) -> str:
    """A string, a `Ref` to a parameter or a pseudo parameter, or a `Fn::Sub` of those."""
    if isinstance(value, str):
        return value
    assert isinstance(value, dict), value
    if "Ref" in value:
        return params[value["Ref"]]
    return re.sub(r"\$\{([^}]+)\}", lambda m: params[m.group(1)], value["Fn::Sub"])


def _arn_like(pattern: str, arn: str) -> bool:
    """IAM's ArnLike: `*` any run of characters, `?` one, the rest literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, arn) is not None


def _dlq_admits(template: dict, params: dict[str, str], source_arn: str) -> bool:
    """Whether EventDeadLetterQueuePolicy lets events.amazonaws.com send from `source_arn`."""
    for st in template["Resources"]["EventDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]:
        if st["Effect"] != "Allow" or st["Principal"] != {"Service": "events.amazonaws.com"}:
            continue
        assert set(st["Condition"]) <= {"ArnEquals", "ArnLike"}, st["Condition"]
        for operator, cond in st["Condition"].items():
            values = cond["aws:SourceArn"]
            patterns = [_sub(v, params) for v in (values if isinstance(values, list) else [values])]
            match = (lambda p, a: p == a) if operator == "ArnEquals" else _arn_like
            if any(match(p, source_arn) for p in patterns):
                return True
    return False


def _rules_with_event_dlq(template: dict) -> list[dict]:
    rules = []
    for res in template["Resources"].values():
        for event in (res.get("Properties", {}).get("Events") or {}).values():
            p = event["Properties"]
            if p.get("DeadLetterConfig", {}).get("Arn") == {"Fn::GetAtt": ["EventDeadLetterQueue", "Arn"]}:
                assert event["Type"] in ("EventBridgeRule", "Schedule"), event["Type"]
                rules.append(p)
    return rules


@pytest.mark.parametrize("bus", ["default", "campaigns"])
def test_every_rule_with_the_event_dlq_may_write_to_it_on_the_default_bus_or_a_custom_one(template, bus):
    """A rule's ARN is rule/<name> on the default bus, rule/<bus>/<name> on a custom one
    (IntakeEventBusName): the queue policy must admit each rule that names the queue as its
    dead-letter queue, or EventBridge drops the undelivered event."""
    params = {**STACK, **{k: str(v.get("Default", "")) for k, v in template["Parameters"].items()},
              "IntakeEventBusName": bus}
    rules = _rules_with_event_dlq(template)
    # object-created, object-deleted, watchdog, intake, suppression-requested, outbound-control, reconcile
    assert len(rules) == 7
    prefix = "arn:aws:events:eu-west-1:123456789012:rule/"
    for p in rules:
        name = _sub(p.get("RuleName") or p.get("Name"), params)
        on = _sub(p.get("EventBusName", "default"), params)
        arn = prefix + (name if on == "default" else f"{on}/{name}")
        assert _dlq_admits(template, params, arn), arn
    # and only this stack's rules: not another stack's of a similar name, on any bus
    for foreign in ("xoutbound-outbound-control", "other-outbound-control", f"{bus}/xoutbound-calls-requested",
                    "outbound-something-else", f"{bus}/outbound-object-created-2"):
        assert not _dlq_admits(template, params, prefix + foreign), foreign


# ---------------------------------------------------------------- stale jobs (#12)
def test_the_state_table_has_the_sparse_active_jobs_index(template):
    props = template["Resources"]["StateTable"]["Properties"]
    index = {g["IndexName"]: g for g in props["GlobalSecondaryIndexes"]}["active-jobs"]
    assert index["KeySchema"] == [{"AttributeName": "active_shard", "KeyType": "HASH"},
                                  {"AttributeName": "updated_at", "KeyType": "RANGE"}]
    assert index["Projection"] == {"ProjectionType": "ALL"}
    types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert types["active_shard"] == "S" and types["updated_at"] == "N"


def test_the_watchdog_runs_every_five_minutes_with_the_stale_job_threshold(template):
    props = template["Resources"]["WatchdogFunction"]["Properties"]
    assert props["CodeUri"] == "functions/watchdog/" and props["Handler"] == "watchdog_handler.handler"
    assert props["Environment"]["Variables"]["STALE_JOB_MINUTES"] == {"Ref": "StaleJobMinutes"}
    (event,) = props["Events"].values()
    assert event["Type"] == "Schedule" and event["Properties"]["Schedule"] == "rate(5 minutes)"


# ---------------------------------------------------------------- the report function (issue 12)
def test_the_report_function_reads_its_queue_on_a_schedule_too_and_the_requesters_know_the_queue(template, transformed):
    props = template["Resources"]["ReportFunction"]["Properties"]
    esm = _esm(transformed, "ReportQueue")
    assert esm["FunctionName"] == {"Ref": "ReportFunction"} and esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = template["Resources"]["ReportQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * props["Timeout"]  # AWS's advice for SQS event sources
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["ReportDeadLetterQueue", "Arn"]}
    # the schedule that fires the final writes when no outcome comes any more (reporting.py)
    assert props["Events"]["FinalWrites"]["Type"] == "Schedule"
    # the sweep books its request one period ahead (reporting.SWEEP_BOOKING_S): the same period
    from phonon_outbound.reporting import SWEEP_PERIOD_S

    assert props["Events"]["FinalWrites"]["Properties"]["Schedule"] == f"rate({SWEEP_PERIOD_S // 60} minutes)"
    globals_env = template["Globals"]["Function"]["Environment"]["Variables"]
    for fn in ("IngestFunction", "DispatchFunction", "WebhookFunction", "ReportFunction", "WatchdogFunction"):
        own = template["Resources"][fn]["Properties"].get("Environment", {}).get("Variables", {})
        env = {**globals_env, **own}  # SAM merges Globals into each function's environment
        assert env["REPORT_QUEUE_URL"] == {"Ref": "ReportQueue"}, fn
    assert "ReportQueueUrl" in template["Outputs"]


# ---------------------------------------------------------------- retention (#7)
def test_every_function_logs_to_its_own_log_group_with_the_retention_parameter(template):
    functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    groups = set()
    for res in functions:
        group = res["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        props = template["Resources"][group]["Properties"]
        assert props["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert props["KmsKeyId"] == {"Fn::GetAtt": ["EncryptionKey", "Arn"]}
        groups.add(group)
    assert len(groups) == len(functions) == 7  # one log group each, none shared


def test_contact_data_in_dynamodb_expires_and_the_tables_cannot_be_deleted(template):
    assert template["Globals"]["Function"]["Environment"]["Variables"]["DATA_RETENTION_DAYS"] == \
        {"Ref": "DataRetentionDays"}
    assert template["Parameters"]["DataRetentionDays"]["Default"] == 90
    for table in ("StateTable", "ResultsTable"):
        res = template["Resources"][table]
        assert res["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
        assert res["Properties"]["DeletionProtectionEnabled"] is True
        assert res["DeletionPolicy"] == "Retain"


def test_contact_files_and_reports_expire_and_old_versions_too(template):
    rules = template["Resources"]["ContactsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    by_prefix = {r.get("Prefix"): r for r in rules}
    assert by_prefix["incoming/"]["ExpirationInDays"] == {"Ref": "IncomingRetentionDays"}
    assert by_prefix["reports/"]["ExpirationInDays"] == {"Ref": "ReportRetentionDays"}
    noncurrent = [r for r in rules if "NoncurrentVersionExpiration" in r]
    assert [r.get("Prefix") for r in noncurrent] == [None]  # every prefix
    assert noncurrent[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] == {"Ref": "NoncurrentVersionRetentionDays"}


def test_the_contacts_bucket_logs_access_to_a_private_encrypted_expiring_bucket(template):
    logging = template["Resources"]["ContactsBucket"]["Properties"]["LoggingConfiguration"]
    target = template["Resources"][logging["DestinationBucketName"]["Ref"]]["Properties"]
    assert target["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert all(target["PublicAccessBlockConfiguration"].values()) and len(target["PublicAccessBlockConfiguration"]) == 4
    assert target["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == {"Ref": "AccessLogRetentionDays"}


# ---------------------------------------------------------------- abuse (#9)
def test_webhook_and_dispatch_have_reserved_concurrency(template):
    res, params = template["Resources"], template["Parameters"]
    assert res["WebhookFunction"]["Properties"]["ReservedConcurrentExecutions"] == {"Ref": "WebhookReservedConcurrency"}
    assert res["DispatchFunction"]["Properties"]["ReservedConcurrentExecutions"] == {"Ref": "DispatchReservedConcurrency"}
    # the SQS event source never asks for more than dispatch may run
    assert params["DispatchReservedConcurrency"]["Default"] >= params["DispatchMaxConcurrency"]["Default"]


def test_the_api_url_must_be_https(template):
    spec = template["Parameters"]["ApiUrl"]
    pattern = re.compile(spec["AllowedPattern"])
    assert pattern.fullmatch(spec["Default"])
    for bad in ("http://central-api.phonon.io/kairos-apis/outbound/create", "ftp://x", "https://", "",
                "HTTP://x.example", " https://x.example"):
        assert not pattern.fullmatch(bad), bad


# ---------------------------------------------------------------- checks
def test_every_checkov_skip_is_justified_next_to_its_resource(template):
    skips = 0
    for name, res in template["Resources"].items():
        for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), name
            assert len(skip.get("comment", "").split()) >= 8, f"{name}: {skip['id']} needs a reason"
            skips += 1
    assert skips


# ---------------------------------------------------------------- events in (#11)
def test_requests_arrive_by_eventbridge_on_a_configurable_bus_and_not_from_aws_sources(template):
    events = template["Resources"]["IntakeFunction"]["Properties"]["Events"]
    rule = events["CallsRequested"]["Properties"]
    assert rule["EventBusName"] == {"Ref": "IntakeEventBusName"}
    assert template["Parameters"]["IntakeEventBusName"]["Default"] == "default"
    assert rule["Pattern"]["detail-type"] == ["Outbound Calls Requested"]
    assert rule["Pattern"]["source"] == {"Fn::If": ["HasIntakeSourcePrefix", [{"prefix": {"Ref": "IntakeSourcePrefix"}}],
                                                    [{"anything-but": {"prefix": "aws."}}]]}
    assert rule["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["EventDeadLetterQueue", "Arn"]}}


@pytest.mark.parametrize(("rule_name", "detail_type"), [("OutboundControl", "Outbound Control"),
                                                        ("SuppressionRequested", "Suppression Requested")])
def test_steering_events_come_from_the_same_bus_and_sources_as_sends_never_from_anyone_on_the_default_bus(
        template, rule_name, detail_type):
    sends = template["Resources"]["IntakeFunction"]["Properties"]["Events"]["CallsRequested"]["Properties"]
    rules = {name: ev["Properties"] for res in template["Resources"].values()
             for name, ev in res.get("Properties", {}).get("Events", {}).items() if ev["Type"] == "EventBridgeRule"}
    rule = rules[rule_name]
    assert rule["Pattern"]["detail-type"] == [detail_type]
    assert rule["EventBusName"] == sends["EventBusName"]
    assert rule["Pattern"]["source"] == sends["Pattern"]["source"]


def test_the_intake_queue_is_encrypted_outlives_six_timeouts_and_redrives_to_its_dlq(template, transformed):
    res = template["Resources"]
    queue, dlq = res["IntakeQueue"]["Properties"], res["IntakeDeadLetterQueue"]["Properties"]
    timeout = res["IntakeFunction"]["Properties"]["Timeout"]
    assert queue["VisibilityTimeout"] >= 6 * timeout
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["IntakeDeadLetterQueue", "Arn"]}
    assert queue["KmsMasterKeyId"] == dlq["KmsMasterKeyId"] == {"Ref": "EncryptionKey"}
    esm = _esm(transformed, "IntakeQueue")
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    on_failure = res["IntakeFunction"]["Properties"]["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure["Destination"] == {"Fn::GetAtt": ["IntakeDeadLetterQueue", "Arn"]}


def test_sns_topics_of_the_account_may_send_to_the_intake_queue_and_use_its_key(template):
    res = template["Resources"]
    [st] = res["IntakeQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert st["Principal"] == {"Service": "sns.amazonaws.com"} and st["Action"] == "sqs:SendMessage"
    assert st["Condition"]["ArnLike"]["aws:SourceArn"] == {
        "Fn::Sub": "arn:${AWS::Partition}:sns:${AWS::Region}:${AWS::AccountId}:*"}
    key = [s for s in res["EncryptionKey"]["Properties"]["KeyPolicy"]["Statement"]
           if s.get("Principal") == {"Service": "sns.amazonaws.com"}]
    assert key and key[0]["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
