"""Sign an export folder, and check a signature, with OpenSSF model-signing.

Usage::

    edgeport sign RUN/export --key private.pem                       # your own key
    edgeport sign RUN/export --key leaf-key.pem --certificate leaf.pem --chain ca.pem
    edgeport verify RUN/export --key public.pem                      # or --chain ca.pem
    EDGEPORT_SIGNING_KEY=private.pem edgeport parity RUN             # gate, then sign

    from edgeport.export.signing import sign_export, verify_signature
    sign_export("RUN/export", private_key="private.pem")
    problems = verify_signature("RUN/export", public_key="public.pem")   # [] when intact

The signature (``RUN/export/model.sig``, a Sigstore bundle written by the
``model-signing`` package, ``pip install edgeport[signing]``) covers every file
in the folder as it is at signing time: the models, ``manifest.json``,
``labels.txt``, ``golden.npz``, ``parity.json``. Links are refused.
A file added, removed or changed afterwards, even with a consistently
rewritten manifest, fails the check.

Signing is a decision about a verified folder (docs/contracts.md, "Trust model"):
:func:`sign_export` signs only a folder that passes :func:`export.verify.verify_export`
and holds a passing ``parity.json``, and an existing ``model.sig`` must first verify
against the signer's own key (:func:`check_signable`), so a folder changed after it was
signed is never signed again (re-export it from the run, or delete ``model.sig``
deliberately). Keys: elliptic-curve P-256, P-384 or P-521 in PEM (what model-signing
1.1.1 accepts); ``openssl ecparam -name prime256v1 -genkey -noout -out key.pem`` and
``openssl ec -in key.pem -pubout -out key.pub`` make a pair.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgeport.errors import EdgeportError

from .integrity import PARITY_NAME, SIGNATURE_NAME

__all__ = [
    "SIGNING_KEY_ENV",
    "SignatureError",
    "SigningRefused",
    "check_signable",
    "check_signing_key",
    "sign_export",
    "verify_signature",
]

SIGNING_KEY_ENV = "EDGEPORT_SIGNING_KEY"
"""The private key ``edgeport export`` / ``parity`` / ``run`` sign with when ``--sign-key``
is not given (after a passing gate only)."""

CURVES = ("secp256r1", "secp384r1", "secp521r1")
"""The elliptic curves model-signing 1.1.1 signs and verifies with (P-256, P-384, P-521)."""

MAKE_KEY = ("`openssl ecparam -name prime256v1 -genkey -noout -out key.pem` and "
            "`openssl ec -in key.pem -pubout -out key.pub`")

RESIGN_FIX = ("fix: re-export from the run (`edgeport export RUN --force`, then "
              "`edgeport parity RUN` with the key signs it), or, if these changes are "
              f"yours, delete {SIGNATURE_NAME} deliberately and sign again")


class SignatureError(EdgeportError, ValueError):
    """Signing or checking is not possible: model-signing missing, a key, certificate or
    ``model.sig`` unusable, or the wrong kind for the check (exit 2)."""


class SigningRefused(EdgeportError):
    """A check before signing failed (exit 1): the folder is not what its existing
    signature signed, it fails ``verify``, or its parity gate did not pass."""

    exit_code = 1


def _model_signing():
    try:
        import model_signing
    except ImportError:
        raise SignatureError(
            "the model-signing package is not installed; expected it for signatures; "
            "fix: pip install 'edgeport[signing]' (model-signing==1.1.1)"
        ) from None
    return model_signing


def _existing(path: str | os.PathLike[str], what: str, flag: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise SignatureError(f"{flag} {p}: no such file; expected the {what} (PEM); "
                             "fix: check the path")
    return p


def _key_kind(key: Any) -> str:
    """``"an RSA key"``, ``"an EC key on secp256k1"``...: what a key is, for a message."""
    from cryptography.hazmat.primitives.asymmetric import ec

    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"an EC key on {key.curve.name}"
    name = type(key).__name__.lstrip("_")
    for kind in ("RSA", "DSA", "Ed25519", "Ed448", "X25519", "X448", "DH"):
        if name.startswith(kind):
            return f"an {kind} key" if kind[0] in "AEIOUXR" else f"a {kind} key"
    return f"a {name}"


def _check_curve(key: Any, path: Path, what: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    ok = isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey))
    if not ok or key.curve.name not in CURVES:
        raise SignatureError(
            f"--key {path}: {_key_kind(key)}; expected an elliptic-curve {what} on P-256, "
            f"P-384 or P-521 (what model-signing accepts); fix: make one with {MAKE_KEY}")


def _load_private_key(path: Path, password: str | None) -> Any:
    """The EC private key in ``path``, or one line (exit 2) saying why not."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(
            path.read_bytes(), None if password is None else password.encode())
    except (ValueError, TypeError) as e:
        text = " ".join(str(e).split())[:160]
        hint = (" (it is a public key: sign with the private half)"
                if b"PUBLIC KEY" in path.read_bytes()[:200] else "")
        raise SignatureError(f"--key {path}: not a usable PEM private key{hint} ({text}); "
                             f"expected an elliptic-curve private key; fix: make one with "
                             f"{MAKE_KEY}") from None
    _check_curve(key, path, "private key")
    return key


def _load_public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization

    data = path.read_bytes()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        if b"PRIVATE KEY" in data[:200]:
            raise SignatureError(f"--key {path}: a private key; expected its public half "
                                 f"(PEM); fix: `openssl ec -in {path} -pubout -out key.pub` "
                                 "and verify with key.pub") from None
        raise SignatureError(f"--key {path}: not a PEM public key; expected an "
                             f"elliptic-curve public key; fix: make a pair with "
                             f"{MAKE_KEY}") from None
    _check_curve(key, path, "public key")
    return key


def check_signing_key(private_key: str | os.PathLike[str], password: str | None = None) -> None:
    """Raise :class:`SignatureError` (one line: the key types accepted and how to make one)
    unless ``private_key`` is an EC private key model-signing can sign with."""
    _load_private_key(_existing(private_key, "private key", "--key"), password)


def _public_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _read_bundle(sig: Path) -> dict[str, Any]:
    """``model.sig`` as a dict with the parts model-signing reads, or one line (exit 2)."""
    fix = (f"fix: delete {sig.name} and sign again with `edgeport sign` (after "
           "`edgeport parity RUN`), or restore the signature that came with the export")
    try:
        doc = json.loads(sig.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise SignatureError(f"{sig}: not a Sigstore bundle (not JSON); expected the "
                             f"signature `edgeport sign` writes; {fix}") from None
    if not isinstance(doc, dict):
        doc = {}
    for field in ("verificationMaterial", "dsseEnvelope", "mediaType"):
        if not isinstance(doc.get(field), (dict, str) if field == "mediaType" else dict):
            raise SignatureError(f"{sig}: not a Sigstore bundle: missing {field}; expected "
                                 f"the signature `edgeport sign` writes; {fix}")
    material = doc["verificationMaterial"]
    if not isinstance(material.get("publicKey"), dict) and not isinstance(
            material.get("x509CertificateChain"), dict):
        raise SignatureError(f"{sig}: not a Sigstore bundle: verificationMaterial holds "
                             "neither publicKey nor x509CertificateChain; expected the "
                             f"signature `edgeport sign` writes; {fix}")
    return doc


def _is_certificate(bundle: dict[str, Any]) -> bool:
    return isinstance(bundle["verificationMaterial"].get("x509CertificateChain"), dict)


def _leaf_subject(bundle: dict[str, Any]) -> str | None:
    """The subject of the certificate that made a certificate signature, if readable."""
    from cryptography import x509

    try:
        raw = bundle["verificationMaterial"]["x509CertificateChain"]["certificates"][0]
        return x509.load_der_x509_certificate(
            base64.b64decode(raw["rawBytes"])).subject.rfc4514_string()
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _hashing_config(ms, *extra: str):
    # The signature must not sign itself (nor its temporary name).
    return ms.hashing.Config().set_ignored_paths(paths=[SIGNATURE_NAME, *extra])


def _verify_bundle(ms: Any, root: Path, sig: Path, *, public_pem: bytes | None = None,
                   chain: tuple[Path, ...] | None = None) -> list[str]:
    """model-signing's check of ``sig`` over ``root`` with a public key (PEM bytes) or a
    CA chain; one line per problem, empty when the folder is exactly what was signed."""
    config = ms.verifying.Config()
    with tempfile.TemporaryDirectory(prefix="edgeport-key-") as tmp:
        try:
            if public_pem is not None:
                pub = Path(tmp) / "public.pem"
                pub.write_bytes(public_pem)
                config.use_elliptic_key_verifier(public_key=pub)
            else:
                config.use_certificate_verifier(certificate_chain=list(chain or ()))
        except (ValueError, TypeError) as e:
            raise SignatureError(f"--chain: unusable ({' '.join(str(e).split())[:200]}); "
                                 "expected CA certificates in PEM; fix: check the files") \
                from None
        try:
            config.verify(root, sig)
        except Exception as e:  # a signature that does not verify: a failed check, never a pass
            return [f"{SIGNATURE_NAME}: does not verify ({_why(str(e)) or type(e).__name__})"]
    return []


def check_signable(
    export_dir: str | os.PathLike[str],
    *,
    private_key: str | os.PathLike[str],
    certificate: str | os.PathLike[str] | None = None,
    chain: tuple[str | os.PathLike[str], ...] = (),
    password: str | None = None,
) -> None:
    """Refuse to replace an existing ``model.sig`` that the signer cannot verify.

    No ``model.sig``: nothing to check. A bare-key signature must verify with the public
    half of ``private_key``; a certificate signature must verify against ``chain`` and
    name the same subject as ``certificate``. So a folder changed after it was signed
    (even with a consistently rewritten manifest) is never signed again.

    Raises:
        SigningRefused: the existing signature does not verify (which files changed).
        SignatureError: the key is unusable, ``model.sig`` is not a Sigstore bundle, or
            it is of the other kind (certificate vs bare key).
    """
    ms = _model_signing()
    root = Path(export_dir)
    key_path = _existing(private_key, "private key", "--key")
    key = _load_private_key(key_path, password)
    sig = root / SIGNATURE_NAME
    if sig.is_symlink():
        raise SigningRefused(f"{sig}: is a link; expected the signature itself; "
                             f"{RESIGN_FIX}")
    if not sig.exists():
        return
    bundle = _read_bundle(sig)
    if _is_certificate(bundle):
        if certificate is None:
            raise SignatureError(
                f"{sig}: an existing certificate signature; expected the same identity to "
                "sign again; fix: sign with --certificate CERT --chain CA_CERT, or delete "
                f"{SIGNATURE_NAME} deliberately to sign with a bare key")
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(
            _existing(certificate, "signing certificate", "--certificate").read_bytes())
        old, new = _leaf_subject(bundle), cert.subject.rfc4514_string()
        if old != new:
            raise SigningRefused(
                f"{sig}: signed by {old!r}, not by this certificate's {new!r}; expected the "
                f"same identity to sign again; {RESIGN_FIX}")
        problems = _verify_bundle(ms, root, sig, chain=tuple(
            _existing(c, "CA certificate", "--chain") for c in chain))
    else:
        problems = _verify_bundle(ms, root, sig, public_pem=_public_pem(key))
    if problems:
        text = problems[0].replace(f"{SIGNATURE_NAME}: does not verify (", "", 1).rstrip(")")
        raise SigningRefused(
            f"{root}: not signed: the existing {SIGNATURE_NAME} does not verify with the "
            f"signer's own key ({text}); the folder is not what was signed; {RESIGN_FIX}")


def sign_export(
    export_dir: str | os.PathLike[str],
    *,
    private_key: str | os.PathLike[str],
    certificate: str | os.PathLike[str] | None = None,
    chain: tuple[str | os.PathLike[str], ...] = (),
    password: str | None = None,
    previous_checked: bool = False,
) -> Path:
    """Write ``export_dir/model.sig`` signing every file of a verified, gated folder.

    In order: the key must be an EC key model-signing accepts; an existing ``model.sig``
    must verify for this signer (:func:`check_signable`); the folder must pass
    :func:`export.verify.verify_export` (complete, hashes, golden vectors and probes,
    ``parity.json`` belonging to it); and ``parity.json`` must say the gate passed.

    Args:
        export_dir: ``RUN/export``.
        private_key: an elliptic-curve private key (PEM; P-256, P-384 or P-521).
        certificate: the signing certificate of that key (the certificate form);
            ``None`` signs with the bare key.
        chain: CA certificates: embedded in the signature, and the trust that an
            existing certificate signature is checked against.
        password: the key's password, if it is encrypted.
        previous_checked: the caller ran :func:`check_signable` itself before a step
            that rewrote only ``parity.json`` (``edgeport parity``); skip it here.

    Returns:
        The signature's path.

    Raises:
        SignatureError: model-signing missing, the key or certificate unusable, or
            the folder holds a link (exit 2).
        SigningRefused: the old signature, ``verify`` or the gate fails (exit 1).
    """
    ms = _model_signing()
    root = Path(export_dir)
    if not (root / "manifest.json").is_file():
        raise SignatureError(f"{root}: no manifest.json; expected an export folder "
                             "(RUN/export); fix: run `edgeport export RUN` first")
    key = _existing(private_key, "private key", "--key")
    _load_private_key(key, password)
    if certificate is not None and not chain:
        raise SignatureError("--certificate without --chain; expected the CA certificate(s) "
                             "that issued it; fix: add --chain CA_CERT")
    config = _signing_config(ms, key, certificate=certificate, chain=chain, password=password)
    if not previous_checked:
        check_signable(root, private_key=key, certificate=certificate, chain=chain,
                       password=password)
    _check_verified_and_gated(root)
    from edgeport.fileio import remove_stale_temps

    remove_stale_temps(root, SIGNATURE_NAME)
    tmp = root / f".{SIGNATURE_NAME}.{os.getpid()}.tmp"
    try:
        # Hash the folder with the signature's temporary name ignored too, then rename:
        # a signature appears complete or not at all.
        config.set_hashing_config(_hashing_config(ms, tmp.name))
        config.sign(root, tmp)
        os.replace(tmp, root / SIGNATURE_NAME)
    except ValueError as e:  # e.g. a link inside the folder
        raise SignatureError(f"{root}: cannot sign ({' '.join(str(e).split())[:200]}); "
                             "expected a folder of plain files; fix: re-run "
                             "`edgeport export RUN --force`") from None
    finally:
        tmp.unlink(missing_ok=True)
    return root / SIGNATURE_NAME


def _check_verified_and_gated(root: Path) -> None:
    """Refuse a folder that fails ``verify`` or whose ``parity.json`` is not a pass."""
    from .verify import verify_export

    report = verify_export(root)
    if not report.passed:
        failures = report.failures
        more = f"; {len(failures) - 1} more" if len(failures) > 1 else ""
        raise SigningRefused(
            f"{root}: not signed: `edgeport verify` fails ({failures[0]}{more}); a "
            "signature vouches for a verified folder only; fix: re-export from the run "
            "(`edgeport export RUN --force`) and gate it (`edgeport parity RUN`)")
    parity = root / PARITY_NAME
    if not parity.is_file():
        raise SigningRefused(
            f"{root}: not signed: no {PARITY_NAME} (the parity gate has not run on this "
            "export); a signature vouches for a passing gate only; fix: `edgeport parity "
            f"RUN` with ${SIGNING_KEY_ENV} set (it signs when the gate passes)")
    if json.loads(parity.read_text(encoding="utf-8")).get("passed") is not True:
        raise SigningRefused(
            f"{root}: not signed: {PARITY_NAME} says the parity gate failed; a signature "
            "vouches for a passing gate only; fix: make `edgeport parity RUN` pass "
            "(re-train or re-export), then sign")


def _signing_config(
    ms: Any, key: Path, *, certificate: str | os.PathLike[str] | None,
    chain: tuple[str | os.PathLike[str], ...], password: str | None,
) -> Any:
    """model-signing's ``signing.Config`` for the bare key or the certificate form."""
    config = ms.signing.Config().set_hashing_config(_hashing_config(ms))
    try:
        if certificate is None:
            config.use_elliptic_key_signer(private_key=key, password=password)
        else:
            config.use_certificate_signer(
                private_key=key,
                signing_certificate=_existing(certificate, "signing certificate",
                                              "--certificate"),
                certificate_chain=[_existing(c, "CA certificate", "--chain") for c in chain])
    except (ValueError, TypeError) as e:
        raise SignatureError(f"--key {key}: unusable ({' '.join(str(e).split())[:200]}); "
                             "expected an elliptic-curve private key in PEM and, with "
                             "--certificate, its own certificate; fix: check the files and "
                             "the key's password") from None
    return config


def verify_signature(
    export_dir: str | os.PathLike[str],
    *,
    public_key: str | os.PathLike[str] | None = None,
    certificate_chain: tuple[str | os.PathLike[str], ...] | None = None,
) -> list[str]:
    """Check ``model.sig`` against the folder; one line per problem, empty when intact.

    Exactly one of ``public_key`` (a bare-key signature) and ``certificate_chain`` (a
    certificate signature) is given.

    Raises:
        SignatureError: model-signing missing; both or neither of ``public_key`` and
            ``certificate_chain``; the key or a certificate missing or unusable;
            ``model.sig`` not a Sigstore bundle, or of the other kind (exit 2).
    """
    ms = _model_signing()
    if public_key is not None and certificate_chain is not None:
        raise SignatureError(
            "--key and --chain together; expected one of them: --key PUBLIC_KEY for a "
            "bare-key signature, --chain CA_CERT for a certificate signature; fix: use one "
            "of --key or --chain")
    if public_key is None and certificate_chain is None:
        raise SignatureError("no --key or --chain; expected what to check model.sig "
                             "against; fix: add --key PUBLIC_KEY or --chain CA_CERT")
    root = Path(export_dir)
    sig = root / SIGNATURE_NAME
    if public_key is not None:
        pem = _public_pem_of(_load_public_key(_existing(public_key, "public key", "--key")))
        chain = None
    else:
        pem = None
        chain = tuple(_existing(c, "CA certificate", "--chain") for c in certificate_chain)
    if not sig.is_file() or sig.is_symlink():
        return [f"{SIGNATURE_NAME}: missing; expected a signature (a key was given); fix: "
                f"`edgeport sign {root} --key PRIVATE_KEY`"]
    bundle = _read_bundle(sig)
    if _is_certificate(bundle) and pem is not None:
        raise SignatureError(f"{sig}: this export is signed with a certificate, not a bare "
                             "key; fix: verify with --chain CA_CERT")
    if not _is_certificate(bundle) and chain is not None:
        raise SignatureError(f"{sig}: this export is signed with a bare key, not a "
                             "certificate; fix: verify with --key PUBLIC_KEY")
    return [p + ("; fix: verify with the public half of the key that signed it"
                 if "another key" in p else
                 "; fix: re-export from the run (`edgeport export RUN --force`), then gate "
                 "and sign it again (`edgeport parity RUN` with the key)")
            for p in _verify_bundle(ms, root, sig, public_pem=pem, chain=chain)]


def _public_pem_of(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _why(text: str) -> str:
    """model-signing's mismatch report, shortened to the file names."""
    import re

    if "Key mismatch" in text:
        return "signed by another key, not the one given"
    changed = re.findall(r"Hash mismatch for \W*([\w.\-]+)", text)
    extra = re.search(r"Extra files found in model [^:]*: ([^\"'\]]+)", text)
    missing = re.search(r"Missing files in model [^:]*: ([^\"'\]]+)", text)
    parts = ([f"changed: {', '.join(changed)}"] if changed else []) + \
        ([f"not signed: {extra.group(1).strip()}"] if extra else []) + \
        ([f"missing: {missing.group(1).strip()}"] if missing else [])
    return "; ".join(parts) if parts else " ".join(text.split())[:300]
