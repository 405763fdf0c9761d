"""deploy/template.yaml: deployed on moto's CloudFormation, every resource checked.

moto's CloudFormation does not implement AWS::CloudWatch::Alarm,
AWS::Scheduler::Schedule, AWS::SNS::Subscription or AWS::SNS::TopicPolicy (it skips
them); cfn-lint checks those in ``make lint``, and the test asserts that the template
declares them with the settings the README promises. The events rule is deployed: events
credflip builds are put on its bus and only the alarming ones of its env get through.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
import zipfile
from pathlib import Path
from typing import Any

import boto3
import yaml

from credflip.aws_lambda import _halt_after, _window
from credflip.events import ALARMING, DETAIL_TYPES
from credflip.events import entry as event_entry
from credflip.rotation import Milestone
from credflip.rotation.events import MilestoneKind
from credflip.stores import open_store
from credflip.stores.ssm import SsmStore
from credflip.windows import Windows

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "template.yaml"


def client(name: str, endpoint: str) -> Any:
    return boto3.client(name, region_name="us-east-1", endpoint_url=endpoint)


class _Loader(yaml.SafeLoader):
    """Reads CloudFormation's short tags (!Ref, !Sub...) as plain values."""


_Loader.add_multi_constructor("!", lambda _loader, _suffix, _node: None)


def test_the_template_deploys_on_moto_with_the_promised_properties(
    moto_endpoint: str, tmp_path: Path
) -> None:
    ec2 = client("ec2", moto_endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    name = f"rotator-{secrets.token_hex(3)}"
    group = ec2.create_security_group(GroupName=name, Description="x", VpcId=vpc)["GroupId"]
    s3 = client("s3", moto_endpoint)
    bucket = f"credflip-artifacts-{secrets.token_hex(3)}"
    s3.create_bucket(Bucket=bucket)
    code = tmp_path / "rotator.zip"
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("credflip/__init__.py", "")
    s3.put_object(Bucket=bucket, Key="credflip-rotator.zip", Body=code.read_bytes())
    key = client("kms", moto_endpoint).create_key()["KeyMetadata"]["Arn"]
    bus = f"ops-{secrets.token_hex(3)}"
    client("events", moto_endpoint).create_event_bus(Name=bus)

    cfn = client("cloudformation", moto_endpoint)
    env = f"prod{secrets.token_hex(3)}"  # one stack per run: moto's server lives on
    stack_name = f"credflip-{env}"
    parameters = {
        "Env": env,
        "CodeBucket": bucket,
        "SubnetIds": subnet,
        "SecurityGroupIds": group,
        "KmsKeyArn": key,
        "LogRetentionDays": "30",
        # moto cannot evaluate Fn::If to AWS::NoValue in a list: take the other branch.
        "AuroraDiscovery": "true",
        "RdsProxyName": "app-proxy",
        "Window": "Mon-Fri 09:00-16:00 Asia/Seoul, Sat 22:00-02:00 Europe/Berlin",
        "HaltAfter": "2",
        "EventBusName": bus,
    }
    cfn.create_stack(
        StackName=stack_name,
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    resources = {
        r["LogicalResourceId"]: r
        for r in cfn.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
    }
    assert {"RotatorLogGroup", "RotatorRole", "RotatorFunction", "SchedulerRole", "AlarmTopic"} <= (
        set(resources)
    ), sorted(resources)

    function = client("lambda", moto_endpoint).get_function(FunctionName=f"credflip-rotator-{env}")
    config = function["Configuration"]
    assert config["Runtime"] == "python3.12"
    assert config["Handler"] == "credflip.aws_lambda.handler"
    assert config["Timeout"] == 900
    assert config["Environment"]["Variables"] == {
        "CREDFLIP_STORE": f"ssm://us-east-1?kms_key_id={key}",
        "CREDFLIP_PREFIX": "/db",
        "CREDFLIP_EVENTS": bus,
    }
    # The rotator's store writes every URL under the stack's key, and names it again.
    spec = config["Environment"]["Variables"]["CREDFLIP_STORE"]
    with open_store(spec.replace("?", f"?endpoint_url={moto_endpoint}&")) as store:
        assert isinstance(store, SsmStore) and store.kms_key_id == key
        store.put(f"/db/{env}/blue/writer-db-url", "mysql://a:b@h/d", secure=True)
        assert store.url == spec.replace("?", f"?endpoint_url={moto_endpoint}&")
        described = store.client.describe_parameters(
            ParameterFilters=[{"Key": "Path", "Values": [f"/db/{env}/blue"]}]
        )["Parameters"]
        assert [p["KeyId"] for p in described] == [key]
    assert config["VpcConfig"]["SubnetIds"] == [subnet]
    assert config["VpcConfig"]["SecurityGroupIds"] == [group]
    role_name = config["Role"].rsplit("/", 1)[1]

    iam = client("iam", moto_endpoint)
    policies = {
        name: iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
        for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    }
    statements = {s.get("Sid"): s for doc in policies.values() for s in _as_dict(doc)["Statement"]}
    ssm = statements["CredflipParametersOfOneEnv"]
    assert sorted(ssm["Action"]) == ["ssm:DeleteParameter", "ssm:GetParameters", "ssm:PutParameter"]
    assert ssm["Resource"].endswith(f":parameter/db/{env}/*"), ssm["Resource"]
    assert statements["CredflipSecureStringKey"]["Resource"] == key
    assert sorted(statements["AuroraClusterMembers"]["Action"]) == [
        "rds:DescribeDBClusters",
        "rds:DescribeDBInstances",
    ]
    # Behind RDS Proxy: the env's two secrets only, the proxy's Auth list, the key via
    # Secrets Manager only; and the schedule names the proxy.
    proxy_secrets = statements["CredflipProxySecretsOfOneEnv"]
    assert sorted(proxy_secrets["Action"]) == [
        "secretsmanager:CreateSecret",
        "secretsmanager:DescribeSecret",
        "secretsmanager:PutSecretValue",
        "secretsmanager:TagResource",
    ]
    assert proxy_secrets["Resource"].endswith(f":secret:credflip/db/{env}/*")
    assert statements["CredflipDescribeTheProxy"]["Action"] == "rds:DescribeDBProxies"
    proxy_key = statements["CredflipProxySecretsKey"]
    assert proxy_key["Resource"] == key
    assert sorted(proxy_key["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert proxy_key["Condition"] == {
        "StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}
    }
    events = statements["CredflipEventsOnOneBus"]
    assert events["Action"] == "events:PutEvents"
    assert events["Resource"].endswith(f":event-bus/{bus}"), events["Resource"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    assert outputs["RdsProxySecretNames"] == f"credflip/db/{env}/blue credflip/db/{env}/green"
    check_status_policy(iam, outputs["StatusPolicyArn"], env)

    groups = client("logs", moto_endpoint).describe_log_groups(
        logGroupNamePrefix=f"/aws/lambda/credflip-rotator-{env}"
    )["logGroups"]
    assert [g["retentionInDays"] for g in groups] == [30]

    sns = client("sns", moto_endpoint)
    (topic,) = [
        t["TopicArn"]
        for t in sns.list_topics()["Topics"]
        if t["TopicArn"].endswith(f":credflip-alarms-{env}")
    ]
    # The topic's own key (not alias/aws/sns, whose policy lets neither alarms nor events in).
    topic_key = resources["AlarmTopicKey"]["PhysicalResourceId"]
    attributes = sns.get_topic_attributes(TopicArn=topic)["Attributes"]
    assert attributes["KmsMasterKeyId"].endswith(topic_key), attributes
    check_alarm_events_rule(moto_endpoint, bus, env, topic, outputs["AlarmEventsRuleArn"])


def check_alarm_events_rule(endpoint: str, bus: str, env: str, topic: str, arn: str) -> None:
    """The rule sends the env's Rotation Failed, Env Halted and Drain Timeout to the topic;
    checked with events credflip builds, delivered to a queue in the topic's place (moto
    delivers to no SNS topic)."""
    events = client("events", endpoint)
    name = f"credflip-{env}-alarm-events"
    rule = events.describe_rule(Name=name, EventBusName=bus)
    assert rule["Arn"] == arn and rule["State"] == "ENABLED"
    assert json.loads(rule["EventPattern"]) == {
        "source": ["credflip"],
        "detail-type": ["Rotation Failed", "Env Halted", "Drain Timeout"],
        "detail": {"env": [env], "prefix": ["/db"]},
    }
    (target,) = events.list_targets_by_rule(Rule=name, EventBusName=bus)["Targets"]
    assert target["Arn"] == topic
    sqs = client("sqs", endpoint)
    queue = sqs.create_queue(QueueName=f"instead-{env}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    events.remove_targets(Rule=name, EventBusName=bus, Ids=[target["Id"]])
    events.put_targets(
        Rule=name,
        EventBusName=bus,
        Targets=[{"Id": "queue", "Arn": queue_arn["Attributes"]["QueueArn"]}],
    )
    kinds: list[MilestoneKind] = list(DETAIL_TYPES)
    sent = [(kind, e) for kind in kinds for e in (env, "other")]
    for kind, of_env in sent:
        entry = event_entry(Milestone(kind, of_env, "/db", reason="x"), bus)
        assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    received = sorted(json.loads(m["Body"])["detail-type"] for m in got)
    assert received == sorted(ALARMING), received


def check_status_policy(iam: Any, arn: str, env: str) -> None:
    """On-call's read-only policy: list the prefix (status --all), read the env (history)."""
    policy = iam.get_policy(PolicyArn=arn)["Policy"]
    assert policy["PolicyName"] == f"credflip-status-{env}"
    version = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"])[
        "PolicyVersion"
    ]
    status = {s["Sid"]: s for s in _as_dict(version["Document"])["Statement"]}
    listing = status["CredflipListThePrefix"]
    assert listing["Action"] == "ssm:GetParametersByPath"
    assert [r.rsplit(":", 1)[1] for r in listing["Resource"]] == ["parameter/db", "parameter/db/*"]
    assert status["CredflipReadTheEnv"]["Action"] == "ssm:GetParameters"
    assert status["CredflipReadTheEnv"]["Resource"].endswith(f":parameter/db/{env}/*")
    assert len(status) == 2  # no write, no KMS


def _as_dict(document: Any) -> dict[str, Any]:
    """A policy document as IAM returns it (moto: sometimes the template's dict as text)."""
    if isinstance(document, dict):
        return document
    try:
        return dict(json.loads(document))
    except ValueError:
        return dict(ast.literal_eval(document))


def test_the_template_declares_what_moto_cannot_deploy() -> None:
    # A SafeLoader that reads intrinsic functions as None.
    template = yaml.load(TEMPLATE.read_text(), Loader=_Loader)  # noqa: S506
    resources = template["Resources"]
    schedule = resources["RotationSchedule"]
    assert schedule["Type"] == "AWS::Scheduler::Schedule"
    assert schedule["Properties"]["FlexibleTimeWindow"] == {"Mode": "OFF"}
    # Without a proxy name nothing of the proxy's is deployed.
    assert template["Parameters"]["RdsProxyName"]["Default"] == ""
    assert resources["RotatorRdsProxyPolicy"]["Condition"] == "HasRdsProxy"
    assert template["Outputs"]["RdsProxySecretNames"]["Condition"] == "HasRdsProxy"
    alarms = {
        name: r["Properties"]
        for name, r in resources.items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    metrics = sorted((a["Namespace"], a["MetricName"]) for a in alarms.values())
    assert metrics == [
        ("AWS/Lambda", "Errors"),
        ("credflip", "DrainTimeouts"),
        ("credflip", "Halts"),
        ("credflip", "RotationsFailed"),
    ]
    assert all(
        a["Threshold"] == 1 and a["TreatMissingData"] == "notBreaching" for a in alarms.values()
    )
    assert resources["AlarmEventsRule"]["Condition"] == "HasEventBus"
    assert resources["RotatorEventsPolicy"]["Condition"] == "HasEventBus"
    assert template["Parameters"]["EventBusName"]["Default"] == "default"


class _TagLoader(yaml.SafeLoader):
    """Reads a short tag as ``{"Fn::Tag": value}`` (``!Ref`` as ``{"Ref": value}``)."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    key = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        return {key: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {key: loader.construct_sequence(node, deep=True)}
    return {key: loader.construct_mapping(node, deep=True)}


_TagLoader.add_multi_constructor("!", _tagged)


def test_only_the_envs_alarms_and_its_events_rule_may_publish_to_the_topic() -> None:
    template = yaml.load(TEMPLATE.read_text(), Loader=_TagLoader)  # noqa: S506
    resources = template["Resources"]
    policy = resources["AlarmTopicPolicy"]["Properties"]
    assert policy["Topics"] == [{"Ref": "AlarmTopic"}]
    alarms, conditional = policy["PolicyDocument"]["Statement"]
    assert alarms["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert alarms["Action"] == "sns:Publish" and alarms["Resource"] == {"Ref": "AlarmTopic"}
    source = alarms["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
    assert source.endswith(":alarm:credflip-${Env}-*")
    condition, events, absent = conditional["Fn::If"]
    assert condition == "HasEventBus" and absent == {"Ref": "AWS::NoValue"}
    assert events["Principal"] == {"Service": "events.amazonaws.com"}
    assert events["Action"] == "sns:Publish" and events["Resource"] == {"Ref": "AlarmTopic"}
    assert events["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": "AlarmEventsRule.Arn"}}
    }
    # The topic's key lets both services in (alias/aws/sns cannot).
    topic = resources["AlarmTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": "AlarmTopicKey.Arn"}
    key = resources["AlarmTopicKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    services = key["KeyPolicy"]["Statement"][1]
    assert services["Principal"]["Service"] == ["cloudwatch.amazonaws.com", "events.amazonaws.com"]
    assert services["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]


class _SubLoader(yaml.SafeLoader):
    """Reads ``!Sub`` as its text, the other short tags as None."""


_SubLoader.add_multi_constructor(
    "!", lambda loader, suffix, node: loader.construct_scalar(node) if suffix == "Sub" else None
)


def schedule_event(**parameters: str) -> dict[str, Any]:
    """The event the schedule sends, with the template's defaults and *parameters*."""
    template = yaml.load(TEMPLATE.read_text(), Loader=_SubLoader)  # noqa: S506
    values = {k: str(p.get("Default", "")) for k, p in template["Parameters"].items()}
    values.update(Env="prod", **parameters)
    for name, value in parameters.items():
        pattern = template["Parameters"][name].get("AllowedPattern")
        assert pattern is None or re.fullmatch(pattern, value), (name, value)
    text = template["Resources"]["RotationSchedule"]["Properties"]["Target"]["Input"]
    return dict(json.loads(re.sub(r"\$\{(\w+)\}", lambda m: values[m[1]], text)))


def test_the_schedule_sends_the_window_and_halt_after_as_the_handler_reads_them() -> None:
    blank = schedule_event()
    assert blank["window"] == "" and blank["halt_after"] == 3
    assert _window(blank) == Windows() and _halt_after(blank) == 3
    spec = "Mon-Fri 09:00-16:00 Asia/Seoul, Sat 22:00-02:00 Europe/Berlin"
    event = schedule_event(Window=spec, HaltAfter="0")
    assert str(_window(event)) == spec and _halt_after(event) == 0
