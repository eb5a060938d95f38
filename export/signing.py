"""Sign an export folder, and check a signature, with OpenSSF model-signing.

Usage::

    edgeport sign RUN/export --key private.pem                       # your own key
    edgeport sign RUN/export --key leaf-key.pem --certificate leaf.pem [--chain ca.pem]
    edgeport verify RUN/export --key public.pem                      # or --chain ca.pem
    EDGEPORT_SIGNING_KEY=private.pem edgeport export RUN --force     # sign while exporting

    from edgeport.export.signing import sign_export, verify_signature
    sign_export("RUN/export", private_key="private.pem")
    problems = verify_signature("RUN/export", public_key="public.pem")   # [] when intact

The signature (``RUN/export/model.sig``, a Sigstore bundle written by the
``model-signing`` package, ``pip install edgeport[signing]``) covers every file
in the folder as it is at signing time: the models, ``manifest.json``,
``labels.txt``, ``golden.npz``, ``parity.json`` when present. Links are refused.
A file added, removed or changed afterwards, even with a consistently
rewritten manifest, fails the check. Sign after ``edgeport parity`` (``edgeport run``
does) so the verdict is covered too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgeport.errors import EdgeportError

from .integrity import SIGNATURE_NAME

__all__ = ["SIGNING_KEY_ENV", "SignatureError", "sign_export", "verify_signature"]

SIGNING_KEY_ENV = "EDGEPORT_SIGNING_KEY"
"""The private key ``edgeport export`` / ``run`` sign with when ``--sign-key`` is not given."""


class SignatureError(EdgeportError, ValueError):
    """Signing is not possible: model-signing missing, or a key or certificate unusable."""


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


def _hashing_config(ms):
    # The signature must not sign itself; git paths are not part of an export either way.
    return ms.hashing.Config().set_ignored_paths(paths=[SIGNATURE_NAME])


def sign_export(
    export_dir: str | os.PathLike[str],
    *,
    private_key: str | os.PathLike[str],
    certificate: str | os.PathLike[str] | None = None,
    chain: tuple[str | os.PathLike[str], ...] = (),
    password: str | None = None,
) -> Path:
    """Write ``export_dir/model.sig`` signing every file of the folder.

    Args:
        export_dir: ``RUN/export``.
        private_key: an elliptic-curve private key (PEM).
        certificate: the signing certificate of that key (the certificate form);
            ``None`` signs with the bare key.
        chain: intermediate certificates to embed.
        password: the key's password, if it is encrypted.

    Returns:
        The signature's path.

    Raises:
        SignatureError: model-signing missing, the key unusable, or the folder holds a link.
    """
    ms = _model_signing()
    root = Path(export_dir)
    if not (root / "manifest.json").is_file():
        raise SignatureError(f"{root}: no manifest.json; expected an export folder "
                             "(RUN/export); fix: run `edgeport export RUN` first")
    key = _existing(private_key, "private key", "--key")
    if certificate is not None and not chain:
        raise SignatureError("--certificate without --chain; expected the CA certificate(s) "
                             "that issued it; fix: add --chain CA_CERT")
    config = _signing_config(ms, key, certificate=certificate, chain=chain, password=password)
    from edgeport.fileio import remove_stale_temps

    remove_stale_temps(root, SIGNATURE_NAME)
    tmp = root / f".{SIGNATURE_NAME}.{os.getpid()}.tmp"
    try:
        # Hash the folder with the signature's temporary name ignored too, then rename:
        # a signature appears complete or not at all.
        config.set_hashing_config(
            ms.hashing.Config().set_ignored_paths(paths=[SIGNATURE_NAME, tmp.name]))
        config.sign(root, tmp)
        os.replace(tmp, root / SIGNATURE_NAME)
    except ValueError as e:  # e.g. a link inside the folder
        raise SignatureError(f"{root}: cannot sign ({' '.join(str(e).split())[:200]}); "
                             "expected a folder of plain files; fix: re-run "
                             "`edgeport export RUN --force`") from None
    finally:
        tmp.unlink(missing_ok=True)
    return root / SIGNATURE_NAME


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
        raise SignatureError(f"--key {key}: unusable ({' '.join(str(e).split())}); expected "
                             "an elliptic-curve private key in PEM; fix: check the key file "
                             "and its password") from None
    return config


def verify_signature(
    export_dir: str | os.PathLike[str],
    *,
    public_key: str | os.PathLike[str] | None = None,
    certificate_chain: tuple[str | os.PathLike[str], ...] | None = None,
) -> list[str]:
    """Check ``model.sig`` against the folder; one line per problem, empty when intact.

    Raises:
        SignatureError: model-signing missing, or the key file missing or unusable.
    """
    ms = _model_signing()
    root = Path(export_dir)
    sig = root / SIGNATURE_NAME
    if not sig.is_file() or sig.is_symlink():
        return [f"{SIGNATURE_NAME}: missing; expected a signature (a key was given); fix: "
                f"`edgeport sign {root} --key PRIVATE_KEY`"]
    config = ms.verifying.Config()
    try:
        if public_key is not None:
            config.use_elliptic_key_verifier(
                public_key=_existing(public_key, "public key", "--key"))
        else:
            config.use_certificate_verifier(certificate_chain=[
                _existing(c, "CA certificate", "--chain") for c in certificate_chain or ()])
    except (ValueError, TypeError) as e:
        raise SignatureError(f"--key: unusable ({' '.join(str(e).split())}); expected a "
                             "public key or CA certificate in PEM") from None
    try:
        config.verify(root, sig)
    except Exception as e:
        return [f"{SIGNATURE_NAME}: does not verify ({_why(str(e)) or type(e).__name__})"]
    return []


def _why(text: str) -> str:
    """model-signing's mismatch report, shortened to the file names."""
    import re

    changed = re.findall(r"Hash mismatch for \W*([\w.\-]+)", text)
    extra = re.search(r"Extra files found in model [^:]*: ([^\"'\]]+)", text)
    missing = re.search(r"Missing files in model [^:]*: ([^\"'\]]+)", text)
    parts = ([f"changed: {', '.join(changed)}"] if changed else []) + \
        ([f"not signed: {extra.group(1).strip()}"] if extra else []) + \
        ([f"missing: {missing.group(1).strip()}"] if missing else [])
    return "; ".join(parts) if parts else " ".join(text.split())[:300]
