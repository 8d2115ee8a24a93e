"""Least privilege, one statement at a time, read from the SAM-translated template (what
CloudFormation deploys, including whatever SAM would add to a role by itself).

Each function has its own role; every action it may call is on the allow-list below, which
names why the code needs it. A new boto3 call in a function needs a new line here and in
template.yaml (and docs/deploy.md), on purpose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.sam_translate import translate

ROOT = Path(__file__).resolve().parents[2]

LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}  # its own log group (LoggingConfig.LogGroup)
XRAY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}  # Tracing: Active
# A Step Functions request's job answers its task token (events_out.py): the call names a token,
# not a state machine, so these are granted on "*"
TASK_ANSWERS = {"states:SendTaskSuccess", "states:SendTaskFailure"}
NO_RESOURCE_LEVEL = TASK_ANSWERS  # a task token names the task; IAM cannot scope it

ALLOWED: dict[str, set[str]] = {
    # Ingest writes no results report, publishes no completion event and answers no task token:
    # every report of its jobs (done, rejected, failed, cancelled, a cancel/ file, a control
    # event) is a request on ReportQueue (reporting.ReportRequests.settled, REPORT_QUEUE_URL
    # from Globals); the report function writes it. Hence no TASK_ANSWERS, no events:PutEvents.
    "IngestFunction": LOGS | XRAY | {
        "s3:GetObject", "s3:GetObjectVersion",  # the contact file (a version, when the event names one); HeadObject
        "s3:ListBucket",  # a deleted file reads as 404, not 403
        "s3:PutObject",  # a suppress/ file's small report, under reports/suppress/ only (suppress_intake.py)
        # the state table: jobs, object claims, report-name claims, the key index, pause / resume /
        # cancel (GetItem, PutItem, UpdateItem, Query); rejected and suppressed rows (BatchWriteItem)
        "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query", "dynamodb:BatchWriteItem",
        "sqs:SendMessage",  # chunks; report requests; and the on-failure destination
        "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",  # failure queue event source
        "secretsmanager:DescribeSecret",  # the flow exists (never its security-id)
        "lambda:InvokeFunction",  # continue a long file in a fresh invocation (itself)
        # the suppression list: check rows (BatchGetItem), fill it from suppress/ files and events
        # (GetItem, UpdateItem); its salt (GetSecretValue, decrypted through Secrets Manager only)
        "dynamodb:BatchGetItem", "secretsmanager:GetSecretValue", "kms:Decrypt",
    },
    "IntakeFunction": LOGS | XRAY | {
        "s3:PutObject",  # a request's contact file, under incoming/requests/ only
        "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",  # intake queue event source
        "sqs:SendMessage",  # failed EventBridge invocations to the intake DLQ (on-failure destination)
        "kms:Decrypt", "kms:GenerateDataKey",  # the intake queues are encrypted with the stack's key (via SQS only)
        "events:PutEvents",  # a rejected request's completion event
        "states:SendTaskFailure",  # a rejected request's task token
    },
    # Dispatch, like ingest, only asks for a settled job's report (ReportQueue): no S3 at all,
    # no events:PutEvents, no TASK_ANSWERS.
    "DispatchFunction": LOGS | XRAY | {
        "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility",
        "sqs:SendMessage",  # requeue with a delay; report requests
        "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query",
        "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem",  # chunk ledger, dedupe claims, limiter, outcomes
        "secretsmanager:GetSecretValue",  # flow security-ids
        "kms:Decrypt",  # flow secrets encrypted with the stack's key, through Secrets Manager only
    },
    "WebhookFunction": LOGS | XRAY | {
        "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query",
        "secretsmanager:GetSecretValue",  # its own credentials; the suppression list's salt
        "kms:Decrypt",  # the credentials' key, through Secrets Manager only
        "dynamodb:BatchGetItem",  # an opt-out's numbers onto the suppression list (with GetItem, UpdateItem)
        "events:PutEvents",  # "Outbound Call Completed" (docs/events-out.md)
        "sqs:SendMessage",  # a report rewrite requested once outcomes arrive (reporting.py)
    },
    "ReportFunction": LOGS | XRAY | TASK_ANSWERS | {
        "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",  # report queue event source
        "sqs:SendMessage",  # a request a busy writer could not carry out, asked again when its lease ends
        "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query",  # the job, its outcomes, the lease
        "dynamodb:PutItem", "dynamodb:DeleteItem",  # the awaiting-outcomes index item
        "s3:PutObject", "s3:AbortMultipartUpload",  # the report
        "events:PutEvents",  # its completion event (once)
    },
    "ReconcileFunction": LOGS | XRAY | {  # only with PullApiUrl set (Condition ReconcileOn)
        "dynamodb:GetItem", "dynamodb:Query",  # the jobs awaiting outcomes, their rows and chunk outcomes
        "dynamodb:UpdateItem",  # a pulled record stored as a push is: the row, the results item
        "secretsmanager:GetSecretValue",  # flow security-ids (the pull API's authentication); the salt
        "kms:Decrypt",  # flow secrets encrypted with the stack's key, through Secrets Manager only
        "dynamodb:BatchGetItem",  # a pulled opt-out onto the suppression list (as the webhook's)
        "events:PutEvents",  # "Outbound Call Completed" for a pulled outcome
        "sqs:SendMessage",  # a report rewrite requested once outcomes arrive (reporting.py)
    },
    "WatchdogFunction": LOGS | XRAY | {
        "dynamodb:Query",  # the active-jobs index
        "dynamodb:GetItem",  # a stale job's item, its and its flow's pause
        "sqs:SendMessage",  # the report of a job whose writer died, asked of the report function (reporting.py)
    },
}

# Never, for any function: the audit's findings.
FORBIDDEN = {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutLifecycleConfiguration", "s3:PutObjectAcl",
             "s3:PutBucketPolicy", "dynamodb:Scan", "dynamodb:DeleteTable", "iam:PassRole"}

VPC_POLICY = "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"


@pytest.fixture(scope="module")
def cfn() -> dict:
    return translate(ROOT / "template.yaml")


def _role_of(cfn: dict, function: str) -> tuple[str, dict]:
    role = cfn["Resources"][function]["Properties"]["Role"]
    assert isinstance(role, dict) and "Fn::GetAtt" in role, f"{function}: role must be one of ours"
    name = role["Fn::GetAtt"][0]
    return name, cfn["Resources"][name]


def _statements(cfn: dict, role_name: str, role: dict) -> list[dict]:
    out = []
    for policy in role["Properties"].get("Policies", []):
        assert "Fn::If" not in policy, "a conditional inline policy would hide from this test"
        out += policy["PolicyDocument"]["Statement"]
    for res in cfn["Resources"].values():  # separate policies attached to the role
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and \
                {"Ref": role_name} in res["Properties"].get("Roles", []):
            out += res["Properties"]["PolicyDocument"]["Statement"]
    return out


def _actions(statement: dict) -> list[str]:
    assert "NotAction" not in statement and "NotResource" not in statement, statement
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else list(actions)


def _resources(statement: dict) -> list[str]:
    res = statement["Resource"]
    return [json.dumps(r, sort_keys=True) for r in (res if isinstance(res, list) else [res])]


def _grants(cfn: dict, function: str) -> dict[str, list[str]]:
    """action -> the resources (as JSON text) it is allowed on."""
    name, role = _role_of(cfn, function)
    grants: dict[str, list[str]] = {}
    for st in _statements(cfn, name, role):
        assert st["Effect"] == "Allow", st
        for action in _actions(st):
            grants.setdefault(action, []).extend(_resources(st))
    return grants


def test_every_function_has_a_role_of_its_own_and_only_those_roles_exist(cfn):
    functions = sorted(n for n, r in cfn["Resources"].items() if r["Type"] == "AWS::Lambda::Function")
    assert functions == sorted(ALLOWED)
    roles = [_role_of(cfn, f)[0] for f in functions]
    assert len(set(roles)) == len(roles)
    assert sorted(n for n, r in cfn["Resources"].items() if r["Type"] == "AWS::IAM::Role") == sorted(roles)


@pytest.mark.parametrize("function", sorted(ALLOWED))
def test_no_wildcard_action_and_nothing_off_the_allow_list(cfn, function):
    grants = _grants(cfn, function)
    wild = [a for a in grants if "*" in a or "?" in a]
    assert not wild, f"{function}: wildcard actions {wild}"
    extra = set(grants) - ALLOWED[function]
    assert not extra, f"{function}: actions not on its allow-list: {sorted(extra)}"
    assert not set(grants) & FORBIDDEN


@pytest.mark.parametrize("function", sorted(ALLOWED))
def test_no_managed_policy_except_the_vpc_one_and_only_with_static_egress(cfn, function):
    _, role = _role_of(cfn, function)
    managed = role["Properties"].get("ManagedPolicyArns")
    if function not in ("DispatchFunction", "ReconcileFunction"):  # both ask Phonon from the static address
        assert managed is None, f"{function}: {managed}"
        return
    assert managed == {"Fn::If": ["UseStaticEgress", [{"Fn::Sub": VPC_POLICY}], {"Ref": "AWS::NoValue"}]}


def test_the_public_webhook_cannot_scan_delete_batch_write_or_touch_s3(cfn):
    grants = _grants(cfn, "WebhookFunction")
    for action in ("dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:PutItem"):
        assert action not in grants, action
    # results: only the conditional update of one item
    assert [a for a, res in grants.items() if any("ResultsTable" in r for r in res)] == ["dynamodb:UpdateItem"]
    assert not [a for a in grants if a.startswith(("s3:", "lambda:", "states:"))]
    # SQS: only asking the report function for a rewrite, on its queue (reporting.py)
    assert {a: res for a, res in grants.items() if a.startswith("sqs:")} == {"sqs:SendMessage": grants["sqs:SendMessage"]}
    assert all("ReportQueue" in r for r in grants["sqs:SendMessage"])
    assert grants["events:PutEvents"] == [json.dumps(
        {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default"})]
    assert sorted(grants["secretsmanager:GetSecretValue"]) == ['{"Ref": "SuppressionSalt"}', '{"Ref": "WebhookSecret"}']
    # the suppression list: read and conditional update only (no Put, Delete, BatchWrite)
    assert sorted(a for a, res in grants.items() if any("SuppressionTable" in r for r in res)) == [
        "dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:UpdateItem"]


def test_ingest_may_check_a_flow_but_never_read_a_security_id(cfn):
    ingest = _grants(cfn, "IngestFunction")
    assert ingest["secretsmanager:GetSecretValue"] == ['{"Ref": "SuppressionSalt"}']  # the salt, nothing else
    assert "secretsmanager:DescribeSecret" in ingest
    assert "secretsmanager:GetSecretValue" in _grants(cfn, "DispatchFunction")


def test_intake_writes_only_request_files_and_decrypts_only_through_sqs(cfn):
    grants = _grants(cfn, "IntakeFunction")
    assert grants["s3:PutObject"] == ['{"Fn::Sub": "${ContactsBucket.Arn}/incoming/requests/*"}']
    assert not [a for a in grants if a.startswith(("s3:Get", "dynamodb:", "secretsmanager:"))]
    name, role = _role_of(cfn, "IntakeFunction")
    for st in _statements(cfn, name, role):
        if any(a.startswith("kms:") for a in _actions(st)):
            assert st["Resource"] == {"Fn::GetAtt": ["EncryptionKey", "Arn"]}
            assert st["Condition"] == {"StringEquals": {"kms:ViaService": {"Fn::Sub": "sqs.${AWS::Region}.amazonaws.com"}}}


def test_ingest_reads_contact_and_suppression_files_and_writes_only_suppression_file_reports(cfn):
    grants = _grants(cfn, "IngestFunction")
    for action in ("s3:GetObject", "s3:GetObjectVersion"):  # contact files, and suppression files
        assert sorted(grants[action]) == ['{"Fn::Sub": "${ContactsBucket.Arn}/cancel/*"}',
                                          '{"Fn::Sub": "${ContactsBucket.Arn}/incoming/*"}',
                                          '{"Fn::Sub": "${ContactsBucket.Arn}/suppress/*"}'], grants[action]
    # suppress_intake.import_object's one PutObject (reports/<suppress/ key>.<time>.suppress.json);
    # a contact file's results report is the report function's (no multipart upload here)
    assert grants["s3:PutObject"] == ['{"Fn::Sub": "${ContactsBucket.Arn}/reports/suppress/*"}']
    assert "s3:AbortMultipartUpload" not in grants


@pytest.mark.parametrize("function", ["IngestFunction", "DispatchFunction"])
def test_ingest_and_dispatch_only_ask_for_reports(cfn, function):
    """REPORT_QUEUE_URL is set for every function (Globals), so `wiring.reports()` sends a
    request to ReportQueue and the report function writes the report, publishes `Outbound Job
    Completed` and answers the task token: neither function may do any of those itself."""
    grants = _grants(cfn, function)
    assert grants["sqs:SendMessage"] and any("ReportQueue" in r for r in grants["sqs:SendMessage"])
    assert not [a for a in grants if a.startswith(("events:", "states:"))], function
    assert not [r for a, res in grants.items() if a.startswith("s3:Put") for r in res if "/reports/*" in r]
    assert function == "IngestFunction" or not [a for a in grants if a.startswith("s3:")]
    # the premise: the deployed function has the report queue (SAM merges it in from Globals)
    env = cfn["Resources"][function]["Properties"]["Environment"]["Variables"]
    assert env["REPORT_QUEUE_URL"] == {"Ref": "ReportQueue"}


def test_ingest_batch_reads_only_the_suppression_list(cfn):
    grants = _grants(cfn, "IngestFunction")
    assert grants["dynamodb:BatchGetItem"] == ['{"Fn::GetAtt": ["SuppressionTable", "Arn"]}']


def test_only_the_report_function_writes_results_reports_and_answers_job_completion(cfn):
    for function in ALLOWED:
        grants = _grants(cfn, function)
        writes_reports = any("/reports/*" in r for r in grants.get("s3:PutObject", []))
        assert writes_reports == (function == "ReportFunction"), function
        answers = "states:SendTaskSuccess" in grants
        assert answers == (function == "ReportFunction"), function


def test_no_resource_wildcard_but_for_actions_without_resource_level_permissions(cfn):
    for function in ALLOWED:
        for action, resources in _grants(cfn, function).items():
            if action in XRAY | NO_RESOURCE_LEVEL:
                continue
            for r in resources:
                assert r != '"*"', f"{function}: {action} on *"
                assert "index/*" not in r, f"{function}: {action} on every index"


@pytest.mark.parametrize("function", ["WebhookFunction", "DispatchFunction", "IngestFunction", "ReconcileFunction"])
def test_the_key_decrypts_only_through_secrets_manager(cfn, function):
    name, role = _role_of(cfn, function)
    decrypt = [s for s in _statements(cfn, name, role) if "kms:Decrypt" in _actions(s)]
    assert decrypt
    for st in decrypt:
        assert st["Resource"] == {"Fn::GetAtt": ["EncryptionKey", "Arn"]}
        assert st["Condition"] == {"StringEquals": {
            "kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}}}


def test_the_watchdog_reads_the_active_jobs_index_and_asks_for_reports_but_writes_none(cfn):
    grants = _grants(cfn, "WatchdogFunction")
    assert grants["dynamodb:Query"] == ['{"Fn::Sub": "${StateTable.Arn}/index/active-jobs"}']
    assert grants["dynamodb:GetItem"] == ['{"Fn::GetAtt": ["StateTable", "Arn"]}']
    # a report is the report function's to write (minutes for a large file; this function has
    # 60 s): the watchdog only sends it a request, on its queue
    assert grants["sqs:SendMessage"] == ['{"Fn::GetAtt": ["ReportQueue", "Arn"]}']
    assert not [a for a in grants if a.startswith(("s3:", "events:", "states:", "kms:"))
                or a in ("dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:DeleteItem")]
    # ReportQueue is encrypted with SQS-managed keys: sending to it needs no KMS grant
    queue = cfn["Resources"]["ReportQueue"]["Properties"]
    assert queue.get("SqsManagedSseEnabled") is True and "KmsMasterKeyId" not in queue


def test_each_function_writes_only_its_own_log_group(cfn):
    for function in ALLOWED:
        log_group = cfn["Resources"][function]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        grants = _grants(cfn, function)
        for action in LOGS:
            assert grants[action] == [json.dumps({"Fn::GetAtt": [log_group, "Arn"]}, sort_keys=True)]
