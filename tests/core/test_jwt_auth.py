"""JWT bearer authentication: settings parsing, verification, rejections, grants, admin role."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from gateway.errors import InvalidToken, JwtSettingsError
from gateway.identity.jwt import ALL_PROJECTS, JwtSettings, JwtVerifier, looks_like_jwt

SECRET = secrets.token_urlsafe(40)
OTHER_SECRET = secrets.token_urlsafe(40)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_pem(private_key: Any) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def private_pem(private_key: Any) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_token(header: dict[str, Any], payload: dict[str, Any], hmac_secret: bytes | None) -> str:
    """A compact JWS built without PyJWT, so PyJWT's own guards cannot refuse to make it."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = (b"" if hmac_secret is None else
                 hmac.new(hmac_secret, signing_input.encode(), hashlib.sha256).digest())
    return f"{signing_input}.{b64url(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    base = {"sub": "alice", "org_id": "acct_1", "exp": int(time.time()) + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


HS_KEY = {"algorithm": "HS256", "secret_env": "GATEWAY_JWT_SECRET"}
RS_KEY = {"algorithm": "RS256", "public_key": public_pem(RSA_KEY)}
ES_KEY = {"algorithm": "ES256", "public_key": public_pem(EC_KEY)}
ENV = {"GATEWAY_JWT_SECRET": SECRET}


def verifier(*keys: dict[str, Any], env: dict[str, str] = ENV, **settings: Any) -> JwtVerifier:
    data = {"keys": list(keys or [HS_KEY, RS_KEY, ES_KEY]), **settings}
    return JwtVerifier(JwtSettings.from_mapping(data, env))


def rejected(v: JwtVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        v.verify(token)
    assert caught.value.code == "invalid_token" and caught.value.status == 401
    return caught.value.message


# --- valid tokens ---------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm, signing_key", [
    ("HS256", SECRET), ("RS256", RSA_KEY), ("ES256", EC_KEY),
])
def test_valid_token_of_each_algorithm_verifies(algorithm, signing_key):
    token = jwt.encode(claims(sub="user-7", org_id="acct_9", extra="x"), signing_key,
                       algorithm=algorithm)
    user = verifier().verify(token)
    assert (user.user_id, user.account_id, user.is_admin) == ("user-7", "acct_9", False)
    assert user.granted_projects == frozenset()
    assert user.claims["extra"] == "x"
    with pytest.raises(TypeError):
        user.claims["extra"] = "changed"  # type: ignore[index]


# --- rejections -----------------------------------------------------------------------------

@pytest.mark.parametrize("token", [
    "", "not-a-jwt", "a.b", "a.b.c", "a.b.c.d", "!!!.???.###",
    b64url(b'{"alg":"HS256"}') + ".%%%." + b64url(b"sig"),
    b64url(b"[1,2]") + "." + b64url(b"{}") + "." + b64url(b"sig"),
])
def test_malformed_token_is_rejected(token):
    assert rejected(verifier(), token).startswith("Malformed token")


def test_non_string_kid_is_rejected():
    token = hand_token({"alg": "HS256", "kid": ["a"]}, claims(), hmac_secret=SECRET.encode())
    assert "`kid` header must be a string" in rejected(verifier(), token)


def test_oversized_token_is_rejected_before_parsing():
    token = jwt.encode(claims(pad="x" * 20_000), SECRET, algorithm="HS256")
    assert "size" in rejected(verifier(), token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_unsigned_alg_none_token_is_rejected(alg):
    token = hand_token({"alg": alg, "typ": "JWT"}, claims(), hmac_secret=None)
    assert "'none'" in rejected(verifier(), token)


def test_algorithm_outside_the_supported_set_is_rejected():
    token = jwt.encode(claims(), SECRET * 2, algorithm="HS512")
    assert "'HS512' is not accepted" in rejected(verifier(), token)


def test_algorithm_with_no_configured_key_is_rejected():
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    assert "RS256 is not configured" in rejected(verifier(HS_KEY), token)


@pytest.mark.parametrize("private_key, key_spec", [(RSA_KEY, RS_KEY), (EC_KEY, ES_KEY)])
def test_algorithm_confusion_with_public_key_as_hmac_secret_is_rejected(private_key, key_spec):
    pem = public_pem(private_key).encode()
    attack = hand_token({"alg": "HS256"}, claims(sub="mallory"), hmac_secret=pem)
    # The attack token really is a valid HMAC under the public key: only our key selection
    # stands between it and acceptance.
    head, body, sig = attack.split(".")
    expected = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)) == expected

    assert "HS256 is not configured" in rejected(verifier(key_spec), attack)
    # With an HS256 key also configured, the attack meets that key's real secret and fails.
    assert "signature verification failed" in rejected(verifier(key_spec, HS_KEY), attack)
    # Pointing `kid` at the public key does not make it an HMAC key either.
    with_kid = hand_token({"alg": "HS256", "kid": "idp"}, claims(sub="mallory"), hmac_secret=pem)
    message = rejected(verifier({**key_spec, "kid": "idp"}), with_kid)
    assert f"configured for {key_spec['algorithm']}" in message


def test_public_key_cannot_be_configured_as_hmac_secret():
    with pytest.raises(JwtSettingsError, match="asymmetric") as caught:
        JwtSettings.from_mapping({"keys": [{"algorithm": "HS256",
                                            "secret": public_pem(RSA_KEY)}]}, {})
    assert caught.value.field == "jwt.keys[0].secret"


@pytest.mark.parametrize("algorithm, right_key, wrong_key", [
    ("HS256", SECRET, OTHER_SECRET), ("RS256", RSA_KEY, OTHER_RSA_KEY),
    ("ES256", EC_KEY, ec.generate_private_key(ec.SECP256R1())),
])
def test_bad_signature_is_rejected(algorithm, right_key, wrong_key):
    forged = jwt.encode(claims(), wrong_key, algorithm=algorithm)
    assert "signature verification failed" in rejected(verifier(), forged)
    head, _, sig = jwt.encode(claims(), right_key, algorithm=algorithm).split(".")
    tampered = f"{head}.{b64url(json.dumps(claims(sub='root')).encode())}.{sig}"
    assert "signature verification failed" in rejected(verifier(), tampered)


# The claims are made when the test runs, not when it is collected: a token minted at
# collection would expire (exp = now + 300 s) before the test ran late in a long suite.
@pytest.mark.parametrize("make_claims, settings, expected", [
    (lambda: claims(exp=int(time.time()) - 5), {}, "expired"),
    (lambda: claims(nbf=int(time.time()) + 120), {}, "not yet valid (nbf)"),
    (lambda: claims(iss="https://evil.example/"), {"issuer": "https://idp.example/"}, "issuer"),
    (lambda: claims(), {"issuer": "https://idp.example/"}, "`iss` claim"),
    (lambda: claims(aud="someone-else"), {"audience": "gateway"}, "audience"),
    (lambda: claims(), {"audience": "gateway"}, "`aud` claim"),
    (lambda: claims(exp=None), {}, "`exp` claim"),
    (lambda: claims(sub=None), {}, "`sub` claim"),
    (lambda: claims(sub=""), {}, "`sub` claim"),
    (lambda: claims(sub=42), {}, "Subject must be a string"),
])
def test_claim_checks(make_claims, settings, expected):
    token = jwt.encode(make_claims(), SECRET, algorithm="HS256")
    assert expected in rejected(verifier(HS_KEY, **settings), token)


def test_configured_issuer_and_audience_accept_matching_tokens():
    v = verifier(HS_KEY, issuer=["https://a.example/", "https://b.example/"],
                 audience="gateway")
    token = jwt.encode(claims(iss="https://b.example/", aud=["other", "gateway"]), SECRET,
                       algorithm="HS256")
    assert v.verify(token).user_id == "alice"


def test_exp_is_optional_when_not_required():
    token = jwt.encode(claims(exp=None), SECRET, algorithm="HS256")
    assert verifier(HS_KEY, require_exp=False).verify(token).user_id == "alice"


# --- key selection and leeway ---------------------------------------------------------------

def test_kid_selects_the_key_and_unknown_kid_is_rejected():
    keys = [{"kid": "old", "algorithm": "RS256", "public_key": public_pem(OTHER_RSA_KEY)},
            {"kid": "new", "algorithm": "RS256", "public_key": public_pem(RSA_KEY)}]
    v = verifier(*keys)
    assert v.verify(jwt.encode(claims(), RSA_KEY, algorithm="RS256",
                               headers={"kid": "new"})).user_id == "alice"
    wrong_kid = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "old"})
    assert "signature verification failed" in rejected(v, wrong_kid)
    unknown = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "gone"})
    assert "kid" in rejected(v, unknown) and "'gone'" in rejected(v, unknown)


def test_without_kid_every_key_of_the_token_algorithm_is_tried():
    v = verifier({"algorithm": "HS256", "secret": OTHER_SECRET}, HS_KEY, RS_KEY)
    assert v.verify(jwt.encode(claims(), SECRET, algorithm="HS256")).user_id == "alice"


def test_leeway_tolerates_clock_skew_on_exp_and_nbf():
    now = int(time.time())
    late = jwt.encode(claims(exp=now - 10), SECRET, algorithm="HS256")
    early = jwt.encode(claims(nbf=now + 10), SECRET, algorithm="HS256")
    strict, lenient = verifier(HS_KEY), verifier(HS_KEY, leeway=30)
    assert "expired" in rejected(strict, late)
    assert "not yet valid" in rejected(strict, early)
    assert lenient.verify(late).user_id == lenient.verify(early).user_id == "alice"


# --- key material ---------------------------------------------------------------------------

def test_keys_are_loaded_once_so_verification_reads_no_file_or_environment(tmp_path):
    pem_file = tmp_path / "idp.pem"
    pem_file.write_text(public_pem(RSA_KEY))
    env = dict(ENV)
    v = verifier({"algorithm": "RS256", "public_key_file": str(pem_file)}, HS_KEY, env=env)
    pem_file.unlink()
    env.clear()
    assert v.verify(jwt.encode(claims(), RSA_KEY, algorithm="RS256")).user_id == "alice"
    assert v.verify(jwt.encode(claims(), SECRET, algorithm="HS256")).user_id == "alice"


def test_secret_file_final_newline_is_not_part_of_the_secret(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    v = verifier({"algorithm": "HS256", "secret_file": str(secret_file)})
    assert v.verify(jwt.encode(claims(), SECRET, algorithm="HS256")).user_id == "alice"


def test_certificate_and_private_key_pems_are_accepted_and_only_public_half_kept():
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(EC_KEY.public_key()).serial_number(1)
            .not_valid_before(datetime(2020, 1, 1))
            .not_valid_after(datetime(2040, 1, 1))
            .sign(EC_KEY, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    settings = JwtSettings.from_mapping(
        {"keys": [{"algorithm": "ES256", "public_key": cert_pem},
                  {"algorithm": "RS256", "public_key": private_pem(RSA_KEY)}]}, {})
    assert all(not hasattr(k.key, "private_bytes") for k in settings.keys)
    v = JwtVerifier(settings)
    for algorithm, key in (("ES256", EC_KEY), ("RS256", RSA_KEY)):
        assert v.verify(jwt.encode(claims(), key, algorithm=algorithm)).user_id == "alice"


def test_single_key_may_be_written_directly_in_the_jwt_section():
    settings = JwtSettings.from_mapping({**HS_KEY, "kid": "main", "leeway": 5}, ENV)
    assert [(k.kid, k.algorithm) for k in settings.keys] == [("main", "HS256")]


@pytest.mark.parametrize("data, env, field, message", [
    ({"keys": [{"algorithm": "HS512", "secret": SECRET}]}, {}, "jwt.keys[0].algorithm",
     "must be one of HS256, RS256, ES256"),
    ({"keys": [{"algorithm": "none"}]}, {}, "jwt.keys[0].algorithm", "not 'none'"),
    ({"keys": [HS_KEY]}, {}, "jwt.keys[0].secret_env",
     "environment variable GATEWAY_JWT_SECRET is not set"),
    ({"keys": [HS_KEY]}, {"GATEWAY_JWT_SECRET": ""}, "jwt.keys[0].secret_env", "is empty"),
    ({"keys": [{"algorithm": "RS256", "public_key_file": "/nonexistent/idp.pem"}]}, {},
     "jwt.keys[0].public_key_file", "cannot read key file /nonexistent/idp.pem"),
    ({"keys": [{"algorithm": "HS256", "secret": "short"}]}, {}, "jwt.keys[0].secret",
     "at least 32"),
    ({"keys": [{"algorithm": "RS256", "secret": SECRET}]}, {}, "jwt.keys[0].secret",
     "does not apply to RS256"),
    ({"keys": [{"algorithm": "HS256", "secret": SECRET, "secret_env": "X"}]}, {"X": SECRET},
     "jwt.keys[0]", "exactly one of"),
    ({"keys": [{"algorithm": "ES256"}]}, {}, "jwt.keys[0]", "exactly one of"),
    ({"keys": [{"algorithm": "RS256", "public_key": public_pem(EC_KEY)}]}, {},
     "jwt.keys[0].public_key", "not a usable RS256 public key"),
    ({"keys": [{"algorithm": "ES256",
                "public_key": public_pem(ec.generate_private_key(ec.SECP384R1()))}]}, {},
     "jwt.keys[0].public_key", "curve"),
    ({"keys": [{"algorithm": "RS256",
                "public_key": public_pem(rsa.generate_private_key(65537, 1024))}]}, {},
     "jwt.keys[0].public_key", "1024 bits"),
    ({"keys": [{**RS_KEY, "kid": "a"}, {**ES_KEY, "kid": "a"}]}, {}, "jwt.keys", "duplicate kid"),
    ({"keys": []}, {}, "jwt.keys", "at least one"),
    ({"keys": [{**RS_KEY, "alg": "RS256"}]}, {}, "jwt.keys[0]", "unknown field(s) ['alg']"),
    ({"keys": [RS_KEY], "audiance": "x"}, {}, "jwt", "unknown setting(s) ['audiance']"),
    ({"keys": [RS_KEY], "leeway": -1}, {}, "jwt.leeway", "non-negative"),
    ({"keys": [RS_KEY], "require_exp": "yes"}, {}, "jwt.require_exp", "true or false"),
    ({"keys": [RS_KEY], "audience": []}, {}, "jwt.audience", "list of strings"),
    ({"keys": [RS_KEY], "grants": {"bob": "proj_a"}}, {}, "jwt.grants.bob", "list of project"),
    ({"keys": [RS_KEY], **HS_KEY}, ENV, "jwt.keys", "not both"),
])
def test_bad_settings_name_the_field(data, env, field, message):
    with pytest.raises(JwtSettingsError) as caught:
        JwtSettings.from_mapping(data, env)
    assert isinstance(caught.value, ValueError)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ") and message in str(caught.value)


# --- account, grants and admin role ---------------------------------------------------------

def hs(v: JwtVerifier, **token_claims: Any):
    return v.verify(jwt.encode(claims(**token_claims), SECRET, algorithm="HS256"))


def test_account_comes_from_the_configured_claim_or_the_default():
    assert hs(verifier(HS_KEY, account_claim="tenant"), tenant="acct_t").account_id == "acct_t"
    assert hs(verifier(HS_KEY), org_id=1234).account_id == "1234"
    assert hs(verifier(HS_KEY, default_account="acct_d"), org_id=None).account_id == "acct_d"
    with pytest.raises(InvalidToken, match="`org_id` claim"):
        hs(verifier(HS_KEY), org_id=None)
    with pytest.raises(InvalidToken, match="`org_id` claim"):
        hs(verifier(HS_KEY, default_account="acct_d"), org_id=["acct_1", "acct_2"])


def test_grants_from_token_claim_and_from_config_combine():
    v = verifier(HS_KEY, grants={"alice": ["proj_cfg"], "ops": "*"})
    alice = hs(v, projects=["proj_tok"])
    assert alice.granted_projects == frozenset({"proj_tok", "proj_cfg"})
    assert alice.may_use("proj_tok") and alice.may_use("proj_cfg")
    assert not alice.may_use("proj_other")
    assert hs(v, sub="bob", projects=["proj_b"]).granted_projects == frozenset({"proj_b"})
    nobody = hs(v, sub="carol")
    assert nobody.granted_projects == frozenset() and not nobody.may_use("proj_cfg")
    ops = hs(v, sub="ops")
    assert ops.granted_projects is ALL_PROJECTS and ops.may_use("anything")


@pytest.mark.parametrize("claim", ["*", ["proj_a", "*"]])
def test_star_claim_grants_every_project(claim):
    user = hs(verifier(HS_KEY), projects=claim)
    assert user.granted_projects is ALL_PROJECTS and user.may_use("proj_z")


@pytest.mark.parametrize("claim", ["proj_a", 7, [1, 2], {"proj_a": True}, [""]])
def test_malformed_projects_claim_is_rejected(claim):
    with pytest.raises(InvalidToken, match="`projects` claim"):
        hs(verifier(HS_KEY), projects=claim)


def test_dotted_claim_names_reach_into_nested_claims():
    v = verifier(HS_KEY, projects_claim="gw.projects", admin_claim="realm_access.roles")
    user = hs(v, gw={"projects": ["proj_n"]}, realm_access={"roles": ["admin"]})
    assert user.may_use("proj_n") and user.is_admin
    assert hs(v, **{"gw.projects": ["proj_literal"]}).may_use("proj_literal")


@pytest.mark.parametrize("settings, token_claims, is_admin", [
    ({}, {"roles": ["viewer", "admin"]}, True),
    ({}, {"roles": "viewer admin"}, True),
    ({}, {"roles": ["viewer"]}, False),
    ({}, {"roles": "administrator"}, False),
    ({}, {}, False),
    ({"admin_claim": "groups", "admin_role": "gw-admins"}, {"groups": ["gw-admins"]}, True),
    ({"admin_claim": "groups", "admin_role": "gw-admins"}, {"roles": ["admin"]}, False),
])
def test_admin_role(settings, token_claims, is_admin):
    user = hs(verifier(HS_KEY, **settings), **token_claims)
    assert user.is_admin is is_admin
    assert not user.may_use("proj_a")  # the admin role alone grants no project


# --- looks_like_jwt -------------------------------------------------------------------------

@pytest.mark.parametrize("credential", [
    jwt.encode(claims(), SECRET, algorithm="HS256"),
    jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "k"}),
    jwt.encode(claims(), EC_KEY, algorithm="ES256"),
    hand_token({"alg": "none"}, claims(), hmac_secret=None),
])
def test_looks_like_jwt_for_tokens(credential):
    assert looks_like_jwt(credential)


@pytest.mark.parametrize("credential", [
    "ak_" + secrets.token_urlsafe(32),
    "a.b.c",
    "..",
    b64url(b'{"typ":"JWT"}') + "." + b64url(b"{}") + ".sig",
    b64url(b'["alg"]') + "." + b64url(b"{}") + ".sig",
    b64url(b'{"alg":"HS256"}') + "." + b64url(b"{}"),
    b64url(b'{"alg":"HS256"}') + ".pay load.sig",
    b64url(b'{"alg":"HS256"}') + ".x." + "s" * 20_000,
])
def test_looks_like_jwt_rejects_other_credentials(credential):
    assert not looks_like_jwt(credential)


# --- roles and the quota subject ----------------------------------------------------------------


def test_the_super_admin_role_and_the_subject_claim() -> None:
    settings = JwtSettings.from_mapping({"algorithm": "HS256", "secret": SECRET,
                                         "super_admin_role": "operator",
                                         "subject_claim": "employee.id"}, {})
    verifier = JwtVerifier(settings)
    claims = {"sub": "u1", "org_id": "acct_1", "exp": int(time.time()) + 60,
              "employee": {"id": "e-7"}}
    admin = verifier.verify(jwt.encode({**claims, "roles": ["admin"]}, SECRET, "HS256"))
    assert (admin.is_admin, admin.is_super_admin, admin.subject) == (True, False, "e-7")
    operator = verifier.verify(jwt.encode({**claims, "roles": "operator"}, SECRET, "HS256"))
    assert (operator.is_admin, operator.is_super_admin) == (False, True)
    with pytest.raises(InvalidToken, match=r"employee\.id"):
        verifier.verify(jwt.encode({"sub": "u2", "org_id": "acct_1",
                                    "exp": int(time.time()) + 60}, SECRET, "HS256"))


def test_without_a_super_admin_role_no_token_crosses_accounts() -> None:
    verifier = JwtVerifier(JwtSettings.from_mapping({"algorithm": "HS256", "secret": SECRET}, {}))
    user = verifier.verify(jwt.encode({"sub": "u1", "org_id": "a", "roles": ["admin", "None"],
                                       "exp": int(time.time()) + 60}, SECRET, "HS256"))
    assert (user.is_admin, user.is_super_admin, user.subject) == (True, False, "u1")
