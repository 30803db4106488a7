"""The Hugging Face Hub: repo ids, the token huggingface_hub would use, and the upload.

An upload that fails leaves the fused directory complete and says how to upload it later; its
message never contains the token.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ..errors import D2OError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # `user/name`


def hub_url(repo: str) -> str:
    from huggingface_hub import constants

    return f"{constants.ENDPOINT.rstrip('/')}/{repo}"


def hub_token() -> Optional[str]:
    """The token huggingface_hub would use (HF_TOKEN or `hf auth login`); never printed."""
    from huggingface_hub import get_token

    return get_token()


def upload(out: Path, repo: str, private: bool = False) -> str:
    """Create REPO if needed, upload OUT, return the repo URL. Errors name no token."""
    from huggingface_hub import HfApi

    token = hub_token()
    try:
        api = HfApi()
        url = api.create_repo(repo, exist_ok=True, private=private, repo_type="model")
        api.upload_folder(
            repo_id=repo,
            folder_path=str(out),
            repo_type="model",
            commit_message="Upload D2O-aligned model fused with mlx-d2o",
        )
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if token:
            msg = msg.replace(token, "***")
        raise D2OError(
            f"upload to {hub_url(repo)} failed ({type(e).__name__}: {msg[:300]}). The fused model "
            f"in {out} is complete; upload it later with: hf upload {repo} {out} ."
        ) from None
    return str(url)
