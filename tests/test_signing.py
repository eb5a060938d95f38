"""Signing (issue 12, hardened in issue 18): a signature is a decision about a verified,
gated folder, and signing never launders a tampered export.

Every test works on a copy of one gated export: the session's ``exported_run`` (the real
seed model, five files) with a passing ``parity.json`` of its own (real MNIST).
"""

from __future__ import annotations

import datetime
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from _runs import rehash

from edgeport.export.integrity import manifest_sha256
from edgeport.export.signing import SignatureError, SigningRefused, sign_export
from edgeport.export.verify import verify_export


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def edgeport(capsys, monkeypatch):
    """``edgeport ARGS`` in this process (TensorFlow is already imported by the fixtures),
    with ``env`` set for the call only."""
    from edgeport.export.cli import main

    def call(*args: str, env: dict[str, str] | None = None) -> Result:
        with monkeypatch.context() as m:
            for k, v in (env or {}).items():
                m.setenv(k, v)
            capsys.readouterr()
            code = main([str(a) for a in args])
            out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return call


def one_line(res, code: int) -> str:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("edgeport: error: "), res.stderr
    return lines[-1]


def reparity(export: Path) -> None:
    """Point parity.json at the rewritten manifest: plain verify now passes."""
    doc = json.loads((export / "parity.json").read_text())
    doc["manifest_sha256"] = manifest_sha256(export)
    (export / "parity.json").write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def gated_run(exported_run, tmp_path_factory) -> Path:
    """A copy of ``exported_run`` with its own passing parity.json (never modified)."""
    from edgeport.export.parity import check_parity

    run = tmp_path_factory.mktemp("gated") / "run"
    shutil.copytree(exported_run, run, symlinks=True)
    (run / "export" / "model.sig").unlink(missing_ok=True)
    assert check_parity(run, progress=False).passed
    return run


@pytest.fixture
def run(gated_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(gated_run, copy, symlinks=True)
    return copy


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    d = tmp_path_factory.mktemp("keys")

    def private(key, name):
        (d / name).write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    def public(key, name):
        (d / name).write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    private(key, "private.pem")
    public(key, "public.pem")
    private(other, "other-private.pem")
    public(other, "other.pem")
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private(r, "rsa.pem")
    public(r, "rsa.pub")
    _write_certificates(d)
    return d


def _write_certificates(d: Path) -> None:
    """A CA and a code-signing leaf certificate for it (EC P-256), made at test time."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)

    def usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False,
                             key_encipherment=False, data_encipherment=False,
                             key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                             encipher_only=False, decipher_only=False)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeport test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - day).not_valid_after(now + day)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(usage(sign=False, ca=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - day).not_valid_after(now + day)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(sign=True, ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("ci@example.com")]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (d / "leaf-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def _failures(export: Path, **kw) -> str:
    rep = verify_export(export, **kw)
    assert not rep.passed
    return "\n".join(rep.failures)


# ---- sign and verify -------------------------------------------------------------------------

def test_sign_then_verify_with_key_and_every_tamper_fails(run, keys, edgeport):
    export = run / "export"
    res = edgeport("sign", str(export), "--key", str(keys / "private.pem"))
    assert res.returncode == 0, res.stderr
    rep = verify_export(export, public_key=keys / "public.pem")
    assert rep.passed, rep.failures
    assert rep.guarantee.startswith("signed")
    assert "signed by another key" in _failures(export, public_key=keys / "other.pem")
    # An intact folder may be signed again with the same key (same files, same verdict).
    assert edgeport("sign", str(export), "--key", str(keys / "private.pem")).returncode == 0
    # A consistent rewrite of the whole manifest passes without a key, never with one.
    m = json.loads((export / "manifest.json").read_text())
    m["edgeport_version"] = "9.9.9"
    (export / "manifest.json").write_text(json.dumps(m))
    assert not verify_export(export).passed  # a stale parity.json is noticed
    reparity(export)
    assert verify_export(export).passed
    text = _failures(export, public_key=keys / "public.pem")
    assert "model.sig: does not verify (changed: manifest.json, parity.json)" in text


def test_laundering_a_tampered_signed_export_is_refused(run, keys, edgeport):
    """Issue 18's attack: payload appended to a model, a support file edited, the manifest
    (and parity.json) rewritten consistently; then the verify fix line's own advice."""
    export = run / "export"
    sign_export(export, private_key=keys / "private.pem")
    signature = (export / "model.sig").read_bytes()
    with open(export / "model_float32.tflite", "ab") as f:
        f.write(b"\0" * 64 + b"payload")
    (export / "labels.txt").write_text((export / "labels.txt").read_text() + "\n")
    for name in ("model_float32.tflite", "labels.txt"):
        rehash(export, name)
    reparity(export)
    assert verify_export(export).passed  # the attacker's rewrite fools the unsigned check
    res = edgeport("verify", str(export), "--key", str(keys / "public.pem"))
    assert res.returncode == 1 and "changed: " in res.stdout
    env = {"EDGEPORT_SIGNING_KEY": str(keys / "private.pem")}
    line = one_line(edgeport("parity", str(run), env=env), 1)
    assert "the existing model.sig does not verify with the signer's own key" in line
    assert "changed: labels.txt, manifest.json, model_float32.tflite, parity.json" in line
    assert "edgeport export RUN --force" in line and "delete model.sig deliberately" in line
    line = one_line(edgeport("sign", str(export), "--key", str(keys / "private.pem")), 1)
    assert "does not verify" in line
    assert (export / "model.sig").read_bytes() == signature  # never re-signed
    res = edgeport("verify", str(export), "--key", str(keys / "public.pem"))
    assert res.returncode == 1 and "guarantee: signature check failed" in res.stdout
    # Another key holder cannot take the signature over either.
    line = one_line(edgeport("sign", str(export), "--key", str(keys / "other-private.pem")), 1)
    assert "signed by another key" in line


def test_a_folder_failing_verify_or_without_a_passing_gate_is_never_signed(run, keys, edgeport):
    export = run / "export"
    (export / "parity.json").unlink()
    with pytest.raises(SigningRefused, match=r"no parity\.json"):
        sign_export(export, private_key=keys / "private.pem")
    (export / "evil.sh").write_text("x")  # no model.sig at all: verify still decides
    line = one_line(edgeport("sign", str(export), "--key", str(keys / "private.pem")), 1)
    assert "`edgeport verify` fails (evil.sh: extra file" in line
    assert not (export / "model.sig").exists()
    assert not list(export.glob(".model.sig*"))


def test_a_failing_parity_gate_never_signs(run, keys, tmp_path, edgeport):
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"int8": {"min_agreement": 1.0}}))
    env = {"EDGEPORT_SIGNING_KEY": str(keys / "private.pem")}
    res = edgeport("parity", str(run), "--thresholds", str(strict), env=env)
    assert res.returncode == 1, res.stderr
    assert "not signed: the parity gate failed" in res.stderr
    assert not (run / "export" / "model.sig").exists()
    line = one_line(edgeport("sign", str(run / "export"), "--key", str(keys / "private.pem")), 1)
    assert "parity.json says the parity gate failed" in line
    # A passing gate with the key signs, and the signature covers the verdict.
    res = edgeport("parity", str(run), env=env)
    assert res.returncode == 0, res.stderr
    assert verify_export(run / "export", public_key=keys / "public.pem").passed


def test_export_with_a_key_gates_then_signs(run, keys, tmp_path, edgeport):
    env = {"EDGEPORT_SIGNING_KEY": str(keys / "private.pem")}
    res = edgeport("export", str(run), "--force", "--formats", "float32", env=env)
    assert res.returncode == 0, res.stderr
    assert "PASS" in res.stdout and "signed" in res.stderr
    res = edgeport("verify", str(run / "export"), "--key", str(keys / "public.pem"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "guarantee: signed" in res.stdout
    line = one_line(edgeport("sign", str(run / "export"), "--key", str(tmp_path / "nokey")), 2)
    assert "no such file" in line


# ---- keys, certificates and model.sig that cannot be used: one line, exit 2 ---------------------

def test_rsa_key_is_one_line_naming_the_key_types_and_how_to_make_one(run, keys, edgeport):
    export = run / "export"
    for args in (("sign", str(export), "--key", str(keys / "rsa.pem")),
                 ("verify", str(export), "--key", str(keys / "rsa.pub"))):
        line = one_line(edgeport(*args), 2)
        assert "an RSA key; expected an elliptic-curve" in line and "P-256" in line
        assert "openssl ecparam -name prime256v1 -genkey -noout -out key.pem" in line
    # The RSA key stops `run`/`export` before any work, not after the gate.
    line = one_line(edgeport("export", str(run), "--force", "--sign-key", str(keys / "rsa.pem")), 2)
    assert "an RSA key" in line
    assert not (export / "model.sig").exists()
    out = run.parent / "never-trained"
    line = one_line(edgeport("run", "--recipe", "seed", "--out", str(out), "--quiet",
                             "--sign-key", str(keys / "rsa.pem")), 2)
    assert "an RSA key" in line and not out.exists()
    with pytest.raises(SignatureError, match="a private key; expected its public half"):
        verify_export(export, public_key=keys / "private.pem")


def test_other_key_types_name_what_they_are(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from edgeport.export.signing import check_signing_key

    for key, kind in ((ec.generate_private_key(ec.SECP256K1()), "an EC key on secp256k1"),
                      (ed25519.Ed25519PrivateKey.generate(), "an Ed25519 key")):
        path = tmp_path / "key.pem"
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        with pytest.raises(SignatureError, match=f"{kind}; expected an elliptic-curve"):
            check_signing_key(path)
    path.write_text("not a key")
    with pytest.raises(SignatureError, match="not a usable PEM private key"):
        check_signing_key(path)


def test_key_and_chain_together_is_refused(run, keys, edgeport):
    sign_export(run / "export", private_key=keys / "private.pem")
    line = one_line(edgeport("verify", str(run / "export"), "--key", str(keys / "public.pem"),
                             "--chain", str(keys / "ca.pem")), 2)
    assert "use one of --key or --chain" in line


def test_certificate_form_signs_detects_a_change_and_names_the_right_flag(run, keys, edgeport):
    export = run / "export"
    res = edgeport("sign", str(export), "--key", str(keys / "leaf-key.pem"),
                   "--certificate", str(keys / "leaf.pem"), "--chain", str(keys / "ca.pem"))
    assert res.returncode == 0, res.stderr
    res = edgeport("verify", str(export), "--chain", str(keys / "ca.pem"))
    assert res.returncode == 0, res.stdout + res.stderr
    line = one_line(edgeport("verify", str(export), "--key", str(keys / "public.pem")), 2)
    assert "this export is signed with a certificate" in line
    assert "fix: verify with --chain CA_CERT" in line
    line = one_line(edgeport("sign", str(export), "--key", str(keys / "private.pem")), 2)
    assert "an existing certificate signature" in line
    (export / "golden.npz").write_bytes((export / "golden.npz").read_bytes() + b"\0")
    rehash(export, "golden.npz")  # the manifest follows: only the signature can tell
    res = edgeport("verify", str(export), "--chain", str(keys / "ca.pem"))
    assert res.returncode == 1
    assert "changed: golden.npz" in res.stdout and "manifest.json" in res.stdout
    line = one_line(edgeport("sign", str(export), "--key", str(keys / "leaf-key.pem"),
                             "--certificate", str(keys / "leaf.pem"),
                             "--chain", str(keys / "ca.pem")), 1)
    assert "changed: golden.npz, manifest.json" in line


def test_key_signed_export_checked_with_chain_names_key(run, keys, edgeport):
    sign_export(run / "export", private_key=keys / "private.pem")
    line = one_line(edgeport("verify", str(run / "export"), "--chain", str(keys / "ca.pem")), 2)
    assert "signed with a bare key" in line and "--key PUBLIC_KEY" in line


@pytest.mark.parametrize("content, needle", [
    ('{"not": "a bundle"}', "not a Sigstore bundle: missing verificationMaterial"),
    ("[1, 2]", "not a Sigstore bundle: missing verificationMaterial"),
    ("\x00garbage", "not a Sigstore bundle (not JSON)"),
    ('{"mediaType": "x", "verificationMaterial": {}, "dsseEnvelope": {}}',
     "holds neither publicKey nor x509CertificateChain"),
])
def test_malformed_model_sig_is_one_line(run, keys, content, needle, edgeport):
    export = run / "export"
    (export / "model.sig").write_text(content)
    line = one_line(edgeport("verify", str(export), "--key", str(keys / "public.pem")), 2)
    assert needle in line and "fix: delete model.sig and sign again" in line
    line = one_line(edgeport("sign", str(export), "--key", str(keys / "private.pem")), 2)
    assert needle in line
    assert (export / "model.sig").read_text() == content
