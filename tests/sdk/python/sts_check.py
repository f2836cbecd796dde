"""Checks the STS emulator against independent signers: Alibaba Cloud's own Python SDKs.

Run by tests/emulator/tests/sdk_signers.rs against a running metadata emulator and STS emulator
(`ecs_metadata_emulator::sts`). Configured by environment variables (all required):

  ECA_METADATA_ENDPOINT  http://127.0.0.1:PORT of the metadata emulator (hardened mode)
  ECA_STS_ENDPOINT       127.0.0.1:PORT of the STS emulator (HTTPS; no scheme, as the SDKs take it)
  ECA_STS_CA_FILE        the STS emulator's CA certificate (PEM)
  ECA_STS_ROLE_ARN       a role both the instance role and the user below may assume
  ECA_STS_USER_AK        a RAM user's long-term AccessKey the emulator knows, `ID:SECRET`

Checks, each printing one JSON line `{"check": NAME, ...}` and failing (exit 1, the reason on
stderr) when STS's answer is not as expected:

  v3-sts20150401   the generated client `alibabacloud-sts20150401` (ACS3-HMAC-SHA256, its
                   default) calls AssumeRole with the instance role's STS credentials read from
                   the metadata emulator (AccessKeyId, AccessKeySecret, SecurityToken).
  v2-ram-role-arn  `alibabacloud-credentials`' RamRoleArnCredentialsProvider (HMAC-SHA1) with
                   the user's long-term AccessKey.
  v2-chained       the same provider with the instance role's STS credentials (SecurityToken
                   signed as a V2 parameter).
  v3-tampered      the generated client with one byte of the query changed after signing
                   (RoleSessionName's last letter): SignatureDoesNotMatch.
  v2-tampered-*    a request signed with alibabacloud-credentials' own V2 helpers: untampered it
                   is accepted; with one byte of `Signature` changed, or one byte of a signed
                   parameter changed after signing, it is SignatureDoesNotMatch.

Trusting the emulator's CA. The generated client takes it as the `ca` runtime option. The
credentials provider has no such option (its HttpOptions are proxy and timeouts), and both SDKs
send through `requests.Session.send`, which never reads REQUESTS_CA_BUNDLE (only
`Session.request` merges the environment): their sole trust input is `certifi.where()`, read by
`requests` at import and by their TLS adapters. So before importing them this program points
`certifi.where()` at a bundle of certifi's roots plus the emulator's CA.
"""

import atexit
import datetime
import json
import os
import sys
import tempfile
import urllib.parse
import urllib.request

import certifi

ROLE_ARN = os.environ["ECA_STS_ROLE_ARN"]
STS_ENDPOINT = os.environ["ECA_STS_ENDPOINT"]
CA_FILE = os.environ["ECA_STS_CA_FILE"]
METADATA = os.environ["ECA_METADATA_ENDPOINT"]
USER_AK_ID, USER_AK_SECRET = os.environ["ECA_STS_USER_AK"].split(":", 1)
DURATION = 1800


def trust_emulator_ca():
    with open(certifi.where(), encoding="ascii") as roots, open(CA_FILE, encoding="ascii") as ca:
        bundle = roots.read() + "\n" + ca.read()
    handle, path = tempfile.mkstemp(suffix=".pem", prefix="sts-check-ca-")
    with os.fdopen(handle, "w", encoding="ascii") as out:
        out.write(bundle)
    atexit.register(os.remove, path)
    certifi.where = lambda: path


trust_emulator_ca()

# Imported only now: `requests` reads certifi.where() at import.
import requests  # noqa: E402
from alibabacloud_credentials.provider.ram_role_arn import RamRoleArnCredentialsProvider  # noqa: E402
from alibabacloud_credentials.utils import parameter_helper as ph  # noqa: E402
from alibabacloud_sts20150401.client import Client as StsClient  # noqa: E402
from alibabacloud_sts20150401 import models as sts_models  # noqa: E402
from alibabacloud_tea_openapi.utils_models import Config  # noqa: E402
from darabonba.runtime import RuntimeOptions  # noqa: E402


class CheckFailed(Exception):
    pass


def expect(condition, what):
    if not condition:
        raise CheckFailed(what)


def report(check, **fields):
    print(json.dumps({"check": check, **fields}), flush=True)


def instance_role_credentials():
    """The instance role's credentials, read from the metadata emulator in hardened mode."""
    token_req = urllib.request.Request(
        f"{METADATA}/latest/api/token", method="PUT",
        headers={"X-aliyun-ecs-metadata-token-ttl-seconds": "60"})
    token = urllib.request.urlopen(token_req, timeout=30).read().decode()
    base = f"{METADATA}/latest/meta-data/ram/security-credentials/"

    def get(url):
        req = urllib.request.Request(url, headers={"X-aliyun-ecs-metadata-token": token})
        return urllib.request.urlopen(req, timeout=30).read().decode()

    role = get(base)
    return role, json.loads(get(base + role))


def check_expiration(expiration, what):
    at = datetime.datetime.strptime(expiration, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)
    left = (at - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    # The requested duration, less the time since the answer (generous for a loaded machine).
    expect(DURATION - 300 < left <= DURATION + 5, f"{what}: Expiration {expiration} is {left:.0f} s away, not ~{DURATION}")


def sts_client(creds):
    return StsClient(Config(
        access_key_id=creds["AccessKeyId"],
        access_key_secret=creds["AccessKeySecret"],
        security_token=creds["SecurityToken"],
        endpoint=STS_ENDPOINT,
        protocol="https",
        region_id="cn-hangzhou",
    ))


def assume_role_v3(creds, session_name):
    request = sts_models.AssumeRoleRequest(
        role_arn=ROLE_ARN, role_session_name=session_name, duration_seconds=DURATION)
    runtime = RuntimeOptions(ca=CA_FILE, autoretry=False, max_attempts=1)
    return sts_client(creds).assume_role_with_options(request, runtime).body


def check_v3(creds):
    body = assume_role_v3(creds, "sdk-v3")
    got = body.credentials
    expect(got.access_key_id.startswith("STS."), f"v3: AccessKeyId {got.access_key_id}")
    expect(got.access_key_secret and got.security_token, "v3: empty secret or token")
    check_expiration(got.expiration, "v3")
    expect(body.assumed_role_user.arn.endswith(":assumed-role/" + ROLE_ARN.split("role/", 1)[1] + "/sdk-v3"),
           f"v3: AssumedRoleUser.Arn {body.assumed_role_user.arn}")
    report("v3-sts20150401", access_key_id=got.access_key_id, expiration=got.expiration,
           request_id=body.request_id, arn=body.assumed_role_user.arn)


def check_v2(check, **provider_args):
    provider = RamRoleArnCredentialsProvider(
        role_arn=ROLE_ARN, role_session_name=check, duration_seconds=DURATION,
        sts_endpoint=STS_ENDPOINT, **provider_args)
    got = provider.get_credentials()
    expect(got.get_access_key_id().startswith("STS."), f"{check}: AccessKeyId {got.get_access_key_id()}")
    expect(got.get_security_token(), f"{check}: empty SecurityToken")
    left = got.get_expiration() - datetime.datetime.now(datetime.timezone.utc).timestamp()
    expect(DURATION - 300 < left <= DURATION + 5, f"{check}: Expiration {left:.0f} s away")
    report(check, access_key_id=got.get_access_key_id(), provider=got.get_provider_name())


class Tamper:
    """While active, changes `old` to `new` (same length) in the URL of every request sent."""

    def __init__(self, old, new):
        assert len(old) == len(new)
        self.old, self.new = old, new

    def __enter__(self):
        self.send = requests.Session.send
        outer = self

        def send(session, prepared, **kwargs):
            expect(outer.old in prepared.url, f"tamper: {outer.old!r} not in the URL")
            prepared.url = prepared.url.replace(outer.old, outer.new, 1)
            return outer.send(session, prepared, **kwargs)

        requests.Session.send = send

    def __exit__(self, *exc):
        requests.Session.send = self.send


def check_v3_tampered(creds):
    with Tamper("RoleSessionName=sdk-v3-tampered", "RoleSessionName=sdk-v3-tamperee"):
        try:
            assume_role_v3(creds, "sdk-v3-tampered")
        except Exception as e:  # the SDK's ClientException
            code = getattr(e, "code", None)
            expect(code == "SignatureDoesNotMatch", f"v3-tampered: {type(e).__name__} {code}: {e}")
            report("v3-tampered", code=code, status=getattr(e, "status_code", None))
            return
    raise CheckFailed("v3-tampered: the tampered request was accepted")


def signed_v2_query(session_name):
    """An AssumeRole query signed (GET) by alibabacloud-credentials' own V2 helpers."""
    query = {
        "Action": "AssumeRole", "Format": "JSON", "Version": "2015-04-01",
        "DurationSeconds": str(DURATION), "RoleArn": ROLE_ARN, "RoleSessionName": session_name,
        "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
        "Timestamp": ph.get_iso_8061_date(), "SignatureNonce": ph.get_uuid(),
        "AccessKeyId": USER_AK_ID,
    }
    query["Signature"] = ph.sign_string(ph.compose_string_to_sign("GET", query), USER_AK_SECRET + "&")
    return query


def send_v2(query):
    url = f"https://{STS_ENDPOINT}/?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    resp = requests.get(url, verify=CA_FILE, timeout=30)
    return resp.status_code, resp.json()


def flip(text, at):
    """`text` with the character at `at` replaced by another letter or digit."""
    c = text[at]
    other = "B" if c == "A" else "A"
    return text[:at] + other + text[at + 1:]


def check_v2_tampered():
    status, body = send_v2(signed_v2_query("sdk-v2-control"))
    expect(status == 200 and "Credentials" in body, f"v2-tampered-control: {status} {body}")
    report("v2-tampered-control", status=status)

    query = signed_v2_query("sdk-v2-tampered")
    query["Signature"] = flip(query["Signature"], 0)
    status, body = send_v2(query)
    expect(body.get("Code") == "SignatureDoesNotMatch", f"v2-tampered-signature: {status} {body}")
    report("v2-tampered-signature", status=status, code=body["Code"])

    query = signed_v2_query("sdk-v2-tampered")
    query["RoleSessionName"] = "sdk-v2-tamperee"
    status, body = send_v2(query)
    expect(body.get("Code") == "SignatureDoesNotMatch", f"v2-tampered-param: {status} {body}")
    report("v2-tampered-param", status=status, code=body["Code"])


def main():
    role, creds = instance_role_credentials()
    report("instance-role", role=role, access_key_id=creds["AccessKeyId"])
    check_v3(creds)
    check_v2("v2-ram-role-arn", access_key_id=USER_AK_ID, access_key_secret=USER_AK_SECRET)
    check_v2("v2-chained", access_key_id=creds["AccessKeyId"],
             access_key_secret=creds["AccessKeySecret"], security_token=creds["SecurityToken"])
    check_v3_tampered(creds)
    check_v2_tampered()
    report("done")


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        print(f"sts_check: {e}", file=sys.stderr)
        sys.exit(1)
