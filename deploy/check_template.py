"""Offline checks of deploy/template.yaml that the generic linters cannot make:

1. every IAM policy in it (role policies, trust policies, bucket policies) goes through
   parliament, with CloudFormation intrinsics resolved to example values;
2. the Glue tables' columns equal what `cryptolake catalog ddl --engine athena` generates from
   the writers' schemas (so the template can never drift from the Parquet files).

usage: check_template.py TEMPLATE ATHENA_DDL_FILE
Exits non-zero naming each finding.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

TEMPLATE, DDL = Path(sys.argv[1]), Path(sys.argv[2])
VALUES = {
    "AWS::Partition": "aws",
    "AWS::Region": "eu-west-1",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "cryptolake",
    "Name": "cryptolake",
    "LakePrefix": "lake",
    "GitHubRepository": "example/cryptolake",
    "DeployBranch": "main",
}


class Tagged:
    def __init__(self, tag, value):
        self.tag, self.value = tag, value


def construct(loader, tag_suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return Tagged(tag_suffix, value)


yaml.SafeLoader.add_multi_constructor("!", construct)
template = yaml.safe_load(TEMPLATE.read_text())
resources = template["Resources"]


def arn_of(name):
    r = resources[name]
    kind, props = r["Type"], r.get("Properties", {})
    n = lambda key: resolve(props.get(key, name))  # noqa: E731
    return {
        "AWS::S3::Bucket": lambda: f"arn:aws:s3:::{n('BucketName')}",
        "AWS::IAM::Role": lambda: f"arn:aws:iam::123456789012:role/{n('RoleName')}",
        "AWS::Serverless::Function": lambda: f"arn:aws:lambda:eu-west-1:123456789012:function:{n('FunctionName')}",
        "AWS::SQS::Queue": lambda: f"arn:aws:sqs:eu-west-1:123456789012:{n('QueueName')}",
    }[kind]()


def ref_of(name):
    if name in VALUES:
        return VALUES[name]
    r = resources.get(name)
    if r and r["Type"] == "AWS::S3::Bucket":
        return resolve(r["Properties"]["BucketName"])
    return name


def resolve(v):
    if isinstance(v, Tagged):
        if v.tag == "Sub":
            def sub(m):
                key = m.group(1)
                if key.startswith("!"):
                    return "${" + key[1:] + "}"
                if key.endswith(".Arn"):
                    return arn_of(key[:-4])
                return ref_of(key)
            return re.sub(r"\$\{([^}]+)\}", sub, v.value)
        if v.tag == "GetAtt":
            target = v.value if isinstance(v.value, str) else ".".join(v.value)
            return arn_of(target.split(".")[0])
        if v.tag == "Ref":
            return ref_of(v.value)
        return resolve(v.value)
    if isinstance(v, dict):
        return {k: resolve(x) for k, x in v.items()}
    if isinstance(v, list):
        return [resolve(x) for x in v]
    return v


def policies():
    for name, r in resources.items():
        props = r.get("Properties", {})
        if r["Type"] == "AWS::IAM::Role":
            for p in props.get("Policies", []):
                yield f"{name}.{p['PolicyName']}", resolve(p["PolicyDocument"])
        if r["Type"] == "AWS::S3::BucketPolicy":
            yield f"{name}", resolve(props["PolicyDocument"])


failures = 0
checked = 0
with tempfile.TemporaryDirectory() as tmp:
    for name, doc in policies():
        path = Path(tmp) / f"{name}.json"
        path.write_text(json.dumps(doc, indent=1))
        out = subprocess.run(
            [str(Path(sys.executable).parent / "parliament"), "--file", str(path), "--json"],
            capture_output=True,
            text=True,
        )
        findings = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        # Bucket policies deny with Principal "*": parliament audits identity policies, so a
        # resource policy's principal is not a finding; everything else is.
        findings = [f for f in findings if not (name.endswith("BucketPolicy") and f.get("issue") in ("UNKNOWN_PRINCIPAL",))]
        checked += 1
        for f in findings:
            failures += 1
            print(f"parliament: {name}: {f.get('issue')} {f.get('title', '')} {json.dumps(f.get('detail'))}")
print(f"parliament: {checked} policies checked, {failures} findings")

ddl = DDL.read_text()
for resource, table in (("SilverTable", "ohlcv_1h"), ("GoldTable", "ohlcv_1d")):
    cols = resources[resource]["Properties"]["TableInput"]["StorageDescriptor"]["Columns"]
    declared = [(c["Name"], c["Type"]) for c in cols]
    m = re.search(r"\." + table + r" \((.*?)\n\)", ddl, re.S)
    generated = [tuple(line.strip().rstrip(",").replace("`", "").split(" ", 1)) for line in m.group(1).strip().splitlines()]
    if declared != generated:
        failures += 1
        print(f"template {resource} columns differ from catalog ddl:\n  template  {declared}\n  generated {generated}")
    else:
        print(f"template {resource}: {len(declared)} columns match catalog ddl")
sys.exit(1 if failures else 0)
